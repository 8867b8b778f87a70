/*
 * cleanup.c - the cleanup loop (agent-behaviour §9) and build_tmp upkeep
 * (§6.9.1), with GoAgent's gaps closed (W21): an error on one entry is
 * logged and the scan goes on, build_tmp is cleaned recursively, and
 * finished pipeline task dirs are removed after the keep time too.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "ev.h"
#include "fsutil.h"
#include "log.h"
#include "queue.h"	/* Redis task queue */
#include "ops.h"
#include "util.h"

#define WEEK_SEC	(7LL * 24 * 3600)	/* a job runs at most 7 days (§6.9.1) */
#define TREE_DEPTH_MAX	64

static struct timer cleanup_timer;

/* 1 for "." and "..". */
static int
dot_entry(const char *name)
{
	return name[0] == '.' && (name[1] == '\0' ||
	    (name[1] == '.' && name[2] == '\0'));
}

/* Seconds since st's mtime. */
static long long
age_of(const struct stat *st)
{
	return (long long)(time(NULL) - st->st_mtime);
}

/*
 * Remove the entries of dir older than max_age_sec whose names pass match
 * (NULL = all): regular files, or with dirs set whole sub-directories. An
 * error on one entry is logged and the scan goes on (W21). Returns the
 * number removed. Only for directories build users cannot write (build_tmp
 * has prune_tree).
 */
static int
remove_old(const char *dir, long long max_age_sec, int (*match)(const char *),
    int dirs)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (d == NULL) {
		if (errno != ENOENT)
			log_warn("cleanup: cannot scan %s", dir);
		return 0;
	}
	while ((e = readdir(d)) != NULL) {
		struct stat st;
		char *path;
		if (dot_entry(e->d_name) || (match != NULL && !match(e->d_name)))
			continue;
		path = xasprintf("%s/%s", dir, e->d_name);
		if (lstat(path, &st) == -1) {
			if (errno != ENOENT)
				log_warn("cleanup: stat %s", path);
		} else if ((dirs ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode)) &&
		    age_of(&st) > max_age_sec) {
			if ((dirs ? fs_rm_rf(path) : unlink(path)) == -1)
				log_warn("cleanup: cannot remove %s", path);
			else
				n++;
		}
		free(path);
	}
	closedir(d);
	return n;
}

/*
 * build_tmp, recursively (W21: GoAgent never cleaned its sub-directories):
 * every non-directory entry older than max_age_sec is removed (symlinks
 * themselves, never their targets); a sub-directory is removed when it is
 * empty afterwards and was itself older than max_age_sec before the scan
 * (removing entries refreshes a directory's mtime). The directory itself is
 * kept. Errors are logged per entry; the scan goes on. Returns entries
 * removed.
 *
 * Why directory fds: build_tmp is writable by build users while the agent
 * often runs as root. Walking by path, a build user could swap a checked
 * sub-directory for a symlink and steer the deletions anywhere. Every step
 * here is relative to an open directory (openat with O_NOFOLLOW, identity
 * re-checked with fstat, unlinkat), so a swap only makes that entry fail.
 */
static int
prune_fd(int dfd, const char *label, long long max_age_sec, int depth)
{
	DIR *d;
	struct dirent *e;
	int n = 0, fd;

	if (depth > TREE_DEPTH_MAX) {
		log_warnx("cleanup: %s: deeper than %d levels; not descending", label,
		    TREE_DEPTH_MAX);
		return 0;
	}
	if ((fd = dup(dfd)) == -1 || (d = fdopendir(fd)) == NULL) {
		log_warn("cleanup: cannot scan %s", label);
		if (fd != -1)
			close(fd);
		return 0;
	}
	while ((e = readdir(d)) != NULL) {
		struct stat st, again;
		int sub;
		if (dot_entry(e->d_name))
			continue;
		if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1) {
			if (errno != ENOENT)
				log_warn("cleanup: stat %s/%s", label, e->d_name);
			continue;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (age_of(&st) <= max_age_sec)
				continue;
			if (unlinkat(dfd, e->d_name, 0) == 0)
				n++;
			else if (errno != ENOENT)
				log_warn("cleanup: unlink %s/%s", label, e->d_name);
			continue;
		}
		sub = openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
		if (sub == -1 || fstat(sub, &again) == -1 ||
		    again.st_dev != st.st_dev || again.st_ino != st.st_ino) {
			log_warnx("cleanup: %s/%s changed while scanned; skipped",
			    label, e->d_name);
			if (sub != -1)
				close(sub);
			continue;
		}
		char *sublabel = xasprintf("%s/%s", label, e->d_name);
		n += prune_fd(sub, sublabel, max_age_sec, depth + 1);
		free(sublabel);
		close(sub);
		if (age_of(&st) > max_age_sec) {
			if (unlinkat(dfd, e->d_name, AT_REMOVEDIR) == 0)
				n++;
			else if (errno != ENOTEMPTY && errno != EEXIST && errno != ENOENT)
				log_warn("cleanup: rmdir %s/%s", label, e->d_name);
		}
	}
	closedir(d);
	return n;
}

/* prune_fd over the directory dir (not followed when it is a symlink). */
static int
prune_tree(const char *dir, long long max_age_sec)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), n;

	if (fd == -1) {
		if (errno != ENOENT)
			log_warn("cleanup: cannot scan %s", dir);
		return 0;
	}
	n = prune_fd(fd, dir, max_age_sec, 0);
	close(fd);
	return n;
}

/* Start and prepare scripts of builds (§6.9.1). */
static int
is_build_script(const char *name)
{
	return (str_starts(name, "devops_agent_start") ||
	    str_starts(name, "devops_agent_prepare_start")) && str_ends(name, ".sh");
}

/* build_tmp and build scripts older than 7 days (§6.9.1, W21). */
void
cleanup_build_tmp(void)
{
	int n = prune_tree("build_tmp", WEEK_SEC);

	n += remove_old(".", WEEK_SEC, is_build_script, 0);
	if (n > 0)
		log_info("cleanup: removed %d build_tmp entr%s and build script(s) "
		    "older than 7 days", n, n == 1 ? "y" : "ies");
}

/* JVM crash dumps (§9 item 1). */
static int
is_hs_err(const char *name)
{
	return str_starts(name, "hs_err_pid");
}

/* Log files and their rotated backups (§9 item 2). */
static int
is_log(const char *name)
{
	return str_ends(name, ".log");
}

/* ---- download and upgrader leftovers (a crash mid-download or mid-swap) */

#define SWAP_TMP_AGE	600	/* s: an upgrader temp file lives seconds */

/* A download's temp file, "<dest>.part.XXXXXX" (http.h). */
static int
is_part(const char *name)
{
	return strstr(name, ".part.") != NULL;
}

/* A temp file of fs_write_atomic/fs_copy_file: ".<name>.tmp.XXXXXX". */
static int
is_atomic_tmp(const char *name)
{
	return name[0] == '.' && strstr(name, ".tmp.") != NULL;
}

/* The upgrader's temp files beside the binaries (upgrader/upgrade.c). */
static int
is_swap_tmp(const char *name)
{
	return strcmp(name, "devopsAgent.bak.new") == 0 ||
	    strcmp(name, "devopsDaemon.bak.new") == 0 ||
	    str_starts(name, ".devopsAgent.tmp.") ||
	    str_starts(name, ".devopsDaemon.tmp.");
}

/*
 * Remove what a crash left of downloads and swaps: tmp/<name>.part.<x>
 * whenever no upgrade attempt runs (so at start-up, before any download),
 * temp files of atomic writes in tmp/ and the upgrader's beside the
 * binaries once they are older than SWAP_TMP_AGE (an upgrader may still
 * be rolling back while the new agent starts). Returns the number removed.
 */
static int
cleanup_download_leftovers(void)
{
	int n = 0;

	if (!upgrade_running())
		n += remove_old("tmp", LLONG_MIN, is_part, 0);
	n += remove_old("tmp", SWAP_TMP_AGE, is_atomic_tmp, 0);
	n += remove_old(".", SWAP_TMP_AGE, is_swap_tmp, 0);
	if (n > 0)
		log_info("cleanup: removed %d temp file(s) of interrupted "
		    "downloads or upgrades", n);
	return n;
}

/* One cleanup round (§9), then again after P_CLEANUP. */
static void
cleanup_run(void *arg)
{
	int keep_h = A.cfg.logs_keep_hours > 0 ? A.cfg.logs_keep_hours : 96;
	long long keep = (long long)keep_h * 3600;
	int logs, dirs, tasks;

	(void)arg;
	logs = remove_old(".", keep, is_hs_err, 0);
	logs += remove_old("logs", keep, is_log, 0);
	dirs = remove_old("docker_workspace/logs", keep, NULL, 1) /* §9 item 3 */;
	cleanup_build_tmp();
	(void)cleanup_download_leftovers();	/* download limits */
	tasks = pipeline_prune(keep);
	tasks += queue_prune(keep);	/* Redis task queue */
	log_info("cleanup: round done: %d dump/log file(s), %d docker log dir(s) "
	    "and %d pipeline/queue task dir(s) older than %d h removed", logs, dirs,
	    tasks, keep_h);
	timer_set(&cleanup_timer, agent_period(P_CLEANUP));
}

/* A round now (the disk guard), then again after P_CLEANUP (ops.h). */
void
cleanup_now(void)
{
	timer_set(&cleanup_timer, 0);
}

/* First round at start-up, then every P_CLEANUP. */
void
cleanup_start(void)
{
	timer_init(&cleanup_timer, "cleanup", cleanup_run, NULL);
	timer_set(&cleanup_timer, 0);
}
