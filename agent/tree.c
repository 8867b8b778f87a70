/*
 * tree.c - end a build's process tree after its leader exits: the build's
 * cgroup v2 where we may create one, else its process group and session.
 * See tree.h and docs/durability.md.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ev.h"
#include "executor.h"
#include "fsutil.h"
#include "log.h"
#include "proc.h"
#include "tree.h"
#include "util.h"

#define TREE_POLL_MS	200	/* how often a dying tree is counted */
#define TREE_STUCK_MS	5000	/* after SIGKILL: give up waiting (D state) */
#define PROCS_MAX	(4 << 20)	/* bytes of cgroup.procs read at most */

static struct {
	int	 inited;
	char	*base;		/* parent of the build cgroups, NULL = off */
	char	 mech[PATH_MAX + 64];
} cg;

struct tree {
	pid_t		 pgid;
	unsigned long long since;	/* start time of the leader */
	unsigned long long until;	/* of a new process under its pid, or 0 */
	char		*cgroup;
	int64_t		 kill_at;	/* mono_ms() of the SIGKILL */
	int64_t		 give_up_at;	/* mono_ms() to stop waiting after it */
	int		 killed;
	int		 signalled;	/* SIGTERM went out: log the end */
	tree_done_fn	 done;
	void		*arg;
	struct timer	 timer;
};

/* ---------------------------------------------------------------- discovery */

/* Undo the octal escapes (\040 for a space) of a mountinfo path in place. */
static void
unescape_mount(char *s)
{
	char *r = s, *w = s;

	while (*r != '\0') {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' &&
		    r[2] >= '0' && r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 4;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
}

/* The agent's own cgroup v2 path ("0::<path>" of /proc/self/cgroup); new string. */
static char *
own_cgroup(void)
{
	char *buf = NULL, *line, *nl, *out = NULL;

	if (fs_read_file("/proc/self/cgroup", 65536, &buf, NULL) == -1)
		return NULL;
	for (line = buf; line != NULL && *line != '\0'; line = nl) {
		if ((nl = strchr(line, '\n')) != NULL)
			*nl++ = '\0';
		if (strncmp(line, "0::", 3) == 0) {
			out = xstrdup(line + 3);
			break;
		}
	}
	free(buf);
	return out;
}

/*
 * Directory of cgroup path own in a cgroup2 mount whose root covers it
 * (/proc/self/mountinfo: root is field 4, mount point field 5, the fs type
 * follows " - "). /sys/fs/cgroup wins over other mounts. New string or NULL.
 */
static char *
cgroup_dir_of(const char *own)
{
	char *buf = NULL, *line, *nl, *best = NULL;

	if (fs_read_file("/proc/self/mountinfo", 1 << 20, &buf, NULL) == -1)
		return NULL;
	for (line = buf; line != NULL && *line != '\0'; line = nl) {
		char *f[5], *p = line, *sep;
		size_t rl;
		int i;

		if ((nl = strchr(line, '\n')) != NULL)
			*nl++ = '\0';
		if ((sep = strstr(line, " - ")) == NULL ||
		    strncmp(sep + 3, "cgroup2 ", 8) != 0)
			continue;
		*sep = '\0';
		for (i = 0; i < 5 && p != NULL; i++) {
			f[i] = p;
			if ((p = strchr(p, ' ')) != NULL)
				*p++ = '\0';
		}
		if (i < 5)
			continue;
		unescape_mount(f[3]);
		unescape_mount(f[4]);
		rl = strcmp(f[3], "/") == 0 ? 0 : strlen(f[3]);
		if (strncmp(own, f[3], rl) != 0 || (own[rl] != '/' && own[rl] != '\0'))
			continue;	/* our cgroup is not visible in this mount */
		if (best != NULL && strcmp(f[4], "/sys/fs/cgroup") != 0)
			continue;
		free(best);
		best = strcmp(own + rl, "/") == 0 || own[rl] == '\0' ?
		    xstrdup(f[4]) : xasprintf("%s%s", f[4], own + rl);
	}
	free(buf);
	return best;
}

void
tree_init(const char *tag)
{
	const char *knob = getenv("DEVOPS_AGENT_CGROUP");
	char *own = NULL, *dir = NULL, *safe, *s, kill_file[PATH_MAX + 16];
	int made;

	if (cg.inited)
		return;
	cg.inited = 1;
	if (knob != NULL && strcmp(knob, "off") == 0) {
		snprintf(cg.mech, sizeof(cg.mech), "process group/session "
		    "(DEVOPS_AGENT_CGROUP=off)");
		goto out;
	}
	if ((own = own_cgroup()) == NULL) {
		snprintf(cg.mech, sizeof(cg.mech), "process group/session "
		    "(no cgroup v2 hierarchy in /proc/self/cgroup)");
		goto out;
	}
	if ((dir = cgroup_dir_of(own)) == NULL) {
		snprintf(cg.mech, sizeof(cg.mech), "process group/session "
		    "(cgroup v2 path %s is not mounted here)", own);
		goto out;
	}
	safe = xstrdup(tag);
	for (s = safe; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '.' || *s == '-' || *s == '_'))
			*s = '_';
	cg.base = xasprintf("%s/%s", dir, safe);
	free(safe);
	/* Probe: may we create it? It only stays while it has build children. */
	if ((made = mkdir(cg.base, 0755)) == -1 && errno != EEXIST) {
		snprintf(cg.mech, sizeof(cg.mech), "process group/session "
		    "(cannot create cgroup %s: %s)", cg.base, strerror(errno));
		free(cg.base);
		cg.base = NULL;
		goto out;
	}
	snprintf(kill_file, sizeof(kill_file), "%s/cgroup.kill", cg.base);
	snprintf(cg.mech, sizeof(cg.mech), "cgroup v2 (%s, %s)", cg.base,
	    access(kill_file, F_OK) == 0 ? "cgroup.kill" :
	    "freeze + SIGKILL per process");
	if (made == 0)
		(void)rmdir(cg.base);
out:
	log_info("process-tree cleanup: %s", cg.mech);
	free(own);
	free(dir);
}

const char *
tree_mechanism(void)
{
	return cg.inited ? cg.mech : "not initialised";
}

void
tree_cgroup_disable(const char *why)
{
	if (cg.base == NULL)
		return;
	log_warnx("process-tree cleanup: cgroups turned off (%s); using the "
	    "process group/session", why);
	snprintf(cg.mech, sizeof(cg.mech), "process group/session (%s)", why);
	free(cg.base);
	cg.base = NULL;
}

char *
tree_cgroup_create(const char *name)
{
	char *dir;

	if (cg.base == NULL)
		return NULL;
	/* The parent only lives while it has children (tree_cgroup_remove). */
	if (mkdir(cg.base, 0755) == -1 && errno != EEXIST) {
		log_warn("cannot create cgroup %s; this build relies on its "
		    "process group", cg.base);
		return NULL;
	}
	dir = xasprintf("%s/%s", cg.base, name);
	if (mkdir(dir, 0755) == -1 && errno != EEXIST) {
		log_warn("cannot create cgroup %s; this build relies on its "
		    "process group", dir);
		free(dir);
		return NULL;
	}
	return dir;
}

const char *
tree_cgroup_procs(const char *cgroup)
{
	static char buf[PATH_MAX + 16];

	if (cgroup == NULL)
		return NULL;
	snprintf(buf, sizeof(buf), "%s/cgroup.procs", cgroup);
	return buf;
}

static void base_remove_if_empty(void);

/* Retry tick of base_remove_if_empty(). */
static void
base_retry(void *arg)
{
	(void)arg;
	base_remove_if_empty();
}

/*
 * Remove our parent cgroup when no build cgroup is left in it. A child
 * that was just removed is still dying in the kernel for a moment (EBUSY),
 * so that case is retried a few times from the loop.
 */
static void
base_remove_if_empty(void)
{
	static struct timer retry;
	static int tries, inited;

	if (cg.base == NULL)
		return;
	if (!inited) {
		timer_init(&retry, "cgroup-rmdir", base_retry, NULL);
		inited = 1;
	}
	if (rmdir(cg.base) == 0 || errno == ENOENT || errno == ENOTEMPTY) {
		tries = 0;
		return;
	}
	if (errno == EBUSY && tries++ < 25) {
		timer_set(&retry, 200);
		return;
	}
	if (errno != EBUSY)
		log_warn("cannot remove cgroup %s", cg.base);
	tries = 0;
}

void
tree_cgroup_remove(const char *cgroup)
{
	const char *slash;

	if (cgroup == NULL)
		return;
	if (rmdir(cgroup) == -1 && errno != ENOENT) {
		log_warn("cannot remove cgroup %s", cgroup);
		return;
	}
	slash = strrchr(cgroup, '/');
	if (cg.base != NULL && slash != NULL &&
	    strlen(cg.base) == (size_t)(slash - cgroup) &&
	    strncmp(cg.base, cgroup, (size_t)(slash - cgroup)) == 0)
		base_remove_if_empty();
}

void
tree_cgroup_sweep(void)
{
	DIR *d;
	struct dirent *e;

	if (cg.base == NULL || (d = opendir(cg.base)) == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		char *dir;
		if (e->d_name[0] == '.' || e->d_type != DT_DIR)
			continue;
		dir = xasprintf("%s/%s", cg.base, e->d_name);
		if (rmdir(dir) == 0)
			log_info("removed stale empty cgroup %s", dir);
		else if (errno == EBUSY)
			log_debug("cgroup %s still holds processes", dir);
		free(dir);
	}
	closedir(d);
	base_remove_if_empty();
}

/* ---------------------------------------------------------------- signals */

/*
 * Pids listed in <cgroup>/cgroup.procs: stored up to max in pids, count
 * returned; 0 when the cgroup is gone, -1 when it cannot be read.
 */
static int
cgroup_pids(const char *cgroup, pid_t *pids, int max)
{
	char *buf = NULL, *p, *end;
	int n = 0;

	if (fs_read_file(tree_cgroup_procs(cgroup), PROCS_MAX, &buf, NULL) == -1)
		return errno == ENOENT ? 0 : -1;
	for (p = buf; *p != '\0'; p = end) {
		long v = strtol(p, &end, 10);
		if (end == p)
			break;
		if (v > 0) {
			if (n < max)
				pids[n] = (pid_t)v;
			n++;
		}
	}
	free(buf);
	return n;
}

/* Write the short text val to <cgroup>/<file>. 0 or -1/errno. */
static int
cgroup_write(const char *cgroup, const char *file, const char *val)
{
	char path[PATH_MAX + 32];
	int fd, rc = 0;

	snprintf(path, sizeof(path), "%s/%s", cgroup, file);
	if ((fd = open(path, O_WRONLY | O_CLOEXEC)) == -1)
		return -1;
	if (write(fd, val, strlen(val)) != (ssize_t)strlen(val))
		rc = -1;
	close(fd);
	return rc;
}

/*
 * Upper start-time bound for members of the tree of leader pgid (started at
 * since): when the pid now names a different process, members must be
 * older than it, or they belong to that process's new group or session.
 */
static unsigned long long
reuse_bound(pid_t pgid, unsigned long long since)
{
	unsigned long long now = pgid > 1 ? proc_start_time(pgid) : 0;

	return now != 0 && now != since ? now : 0;
}

/* Processes left in the tree: cgroup.procs, else the group/session window. */
static int
count_left(pid_t pgid, unsigned long long since, unsigned long long until,
    const char *cgroup)
{
	int n;

	if (cgroup != NULL)
		return cgroup_pids(cgroup, NULL, 0);
	if (pgid <= 1)
		return 0;
	if ((n = proc_group_members(pgid, pgid, since, until, NULL, 0)) >= 0)
		return n;
	return kill(-pgid, 0) == 0 ? 1 : 0;
}

int
tree_count(pid_t pgid, unsigned long long since, const char *cgroup)
{
	return count_left(pgid, since, reuse_bound(pgid, since), cgroup);
}

/* Send sig to every process of the tree; SIGKILL uses cgroup.kill if it can. */
static void
tree_signal(const struct tree *t, int sig)
{
	pid_t pids[4096];
	int n, i, frozen = 0;

	if (t->cgroup != NULL) {
		if (sig == SIGKILL && cgroup_write(t->cgroup, "cgroup.kill", "1") == 0)
			return;
		/* Older kernels: freeze so nothing forks between read and kill. */
		if (sig == SIGKILL)
			frozen = cgroup_write(t->cgroup, "cgroup.freeze", "1") == 0;
		n = cgroup_pids(t->cgroup, pids, (int)nitems(pids));
		for (i = 0; i < n && i < (int)nitems(pids); i++)
			if (kill(pids[i], sig) == -1 && errno != ESRCH)
				log_warn("kill -%d %ld", sig, (long)pids[i]);
		if (frozen)
			(void)cgroup_write(t->cgroup, "cgroup.freeze", "0");
		return;
	}
	n = proc_group_members(t->pgid, t->pgid, t->since, t->until, pids,
	    (int)nitems(pids));
	if (n < 0) {
		/* No process table to read: the group is all we can name. */
		if (kill(-t->pgid, sig) == -1 && errno != ESRCH)
			log_warn("kill -%d -%ld", sig, (long)t->pgid);
		return;
	}
	for (i = 0; i < n && i < (int)nitems(pids); i++)
		if (kill(pids[i], sig) == -1 && errno != ESRCH)
			log_warn("kill -%d %ld", sig, (long)pids[i]);
}

/* ---------------------------------------------------------------- life cycle */

/* The tree is gone (or given up on): remove the cgroup, tell the owner. */
static void
tree_end(struct tree *t)
{
	tree_cgroup_remove(t->cgroup);
	if (t->done != NULL)
		t->done(t->arg);
	free(t->cgroup);
	free(t);
}

/* Poll tick: done when empty; SIGKILL after the grace; give up when stuck. */
static void
tree_tick(void *arg)
{
	struct tree *t = arg;
	int64_t now = mono_ms();
	int left = count_left(t->pgid, t->since, t->until, t->cgroup);

	if (left == 0) {
		if (t->signalled)
			log_info("process tree of %ld%s%s is gone", (long)t->pgid,
			    t->cgroup ? " / cgroup " : "",
			    t->cgroup ? t->cgroup : "");
		tree_end(t);
		return;
	}
	if (!t->killed && now >= t->kill_at) {
		log_warnx("process tree of %ld: %d process(es) outlived SIGTERM; "
		    "sending SIGKILL%s", (long)t->pgid, left,
		    t->cgroup ? " (cgroup)" : "");
		tree_signal(t, SIGKILL);
		t->killed = 1;
		t->give_up_at = now + TREE_STUCK_MS;
	} else if (t->killed && now >= t->give_up_at) {
		log_warnx("process tree of %ld: %d process(es) survive SIGKILL "
		    "(uninterruptible sleep?); giving up", (long)t->pgid, left);
		tree_end(t);
		return;
	}
	timer_set(&t->timer, TREE_POLL_MS);
}

void
tree_terminate(pid_t pgid, unsigned long long since, const char *cgroup,
    int64_t grace_ms, tree_done_fn done, void *arg)
{
	struct tree *t = xcalloc(1, sizeof(*t));
	int left;

	t->pgid = pgid;
	t->since = since;
	t->cgroup = cgroup ? xstrdup(cgroup) : NULL;
	t->done = done;
	t->arg = arg;
	t->kill_at = mono_ms() + grace_ms;
	timer_init(&t->timer, "tree-kill", tree_tick, t);
	t->until = reuse_bound(pgid, since);
	left = count_left(pgid, since, t->until, cgroup);
	if (left != 0) {
		log_info("process tree of %ld: %d leftover process(es); sending "
		    "SIGTERM (%s)", (long)pgid, left,
		    cgroup ? "cgroup" : "process group/session");
		tree_signal(t, SIGTERM);
		t->signalled = 1;
	}
	/* Always through the loop, so done never runs inside this call. */
	timer_set(&t->timer, left != 0 ? TREE_POLL_MS / 4 : 0);
}

/* Signal a whole cgroup (tree.h). */
void
tree_cgroup_signal(const char *cgroup, int sig)
{
	struct tree t;

	memset(&t, 0, sizeof(t));
	t.cgroup = (char *)(uintptr_t)cgroup;
	tree_signal(&t, sig);
}

/* Live processes of a cgroup, for the executor. */
static int
hook_count(const char *cgroup)
{
	return cgroup_pids(cgroup, NULL, 0);
}

/* Remove an empty task cgroup, for the executor. */
static void
hook_remove(const char *cgroup)
{
	tree_cgroup_remove(cgroup);
}

/* The executor's cgroup hooks (tree.h). */
const struct exec_tree *
tree_exec_hooks(void)
{
	static const struct exec_tree hooks = {
		.create = tree_cgroup_create,
		.procs = tree_cgroup_procs,
		.count = hook_count,
		.signal = tree_cgroup_signal,
		.remove = hook_remove,
	};

	return cg.base != NULL ? &hooks : NULL;
}
