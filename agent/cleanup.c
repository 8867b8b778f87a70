/* cleanup.c - the cleanup loop (agent-behaviour §9) and build_tmp upkeep (§6.9.1). */
#include <dirent.h>
#include <errno.h>
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
#include "util.h"

#define WEEK_SEC (7LL * 24 * 3600)

static struct timer cleanup_timer;

/*
 * Remove regular files in dir older than max_age_sec whose names pass
 * match (NULL = all). An error on one entry is logged and the scan goes on
 * (W21). Returns the number removed.
 */
static int
remove_old(const char *dir, long long max_age_sec, int (*match)(const char *))
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		struct stat st;
		char *path;
		if (e->d_name[0] == '.' && (e->d_name[1] == '\0' ||
		    (e->d_name[1] == '.' && e->d_name[2] == '\0')))
			continue;
		if (match != NULL && !match(e->d_name))
			continue;
		path = xasprintf("%s/%s", dir, e->d_name);
		if (lstat(path, &st) == -1) {
			log_warn("cleanup: stat %s", path);
		} else if (S_ISREG(st.st_mode) &&
		    (long long)(time(NULL) - st.st_mtime) > max_age_sec) {
			if (unlink(path) == -1)
				log_warn("cleanup: unlink %s", path);
			else
				n++;
		}
		free(path);
	}
	closedir(d);
	return n;
}

/* Start and prepare scripts of builds (§6.9.1). */
static int
is_build_script(const char *name)
{
	return (str_starts(name, "devops_agent_start") ||
	    str_starts(name, "devops_agent_prepare_start")) && str_ends(name, ".sh");
}

void
cleanup_build_tmp(void)
{
	int n = remove_old("build_tmp", WEEK_SEC, NULL);

	n += remove_old(".", WEEK_SEC, is_build_script);
	if (n > 0)
		log_info("cleanup: removed %d file(s) older than 7 days", n);
}

static int
is_hs_err(const char *name)
{
	return str_starts(name, "hs_err_pid");
}

static int
is_log(const char *name)
{
	return str_ends(name, ".log");
}

/* One cleanup round (§9), then again after P_CLEANUP. */
static void
cleanup_run(void *arg)
{
	long long keep = (long long)A.cfg.logs_keep_hours * 3600;
	int n;

	(void)arg;
	n = remove_old(".", keep, is_hs_err);
	n += remove_old("logs", keep, is_log);
	if (n > 0)
		log_info("cleanup: removed %d dump/log file(s) older than %d h", n,
		    A.cfg.logs_keep_hours);
	cleanup_build_tmp();
	timer_set(&cleanup_timer, agent_period(P_CLEANUP));
}

void
cleanup_start(void)
{
	timer_init(&cleanup_timer, "cleanup", cleanup_run, NULL);
	timer_set(&cleanup_timer, 0);
}
