/* tree.c - terminate a build's process group (and cgroup) after it ends. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ev.h"
#include "log.h"
#include "tree.h"
#include "util.h"

struct tree {
	pid_t		 pgid;
	char		*cgroup;
	struct timer	 timer;
};

/* Grace period over: SIGKILL what is left, then forget the tree. */
static void
tree_kill(void *arg)
{
	struct tree *t = arg;
	int left = tree_count(t->pgid, t->cgroup);

	if (left > 0) {
		log_warnx("process group %ld: %d process(es) ignored SIGTERM; "
		    "sending SIGKILL", (long)t->pgid, left);
		if (kill(-t->pgid, SIGKILL) == -1 && errno != ESRCH)
			log_warn("kill -KILL -%ld", (long)t->pgid);
	}
	tree_cgroup_remove(t->cgroup);
	free(t->cgroup);
	free(t);
}

void
tree_terminate(pid_t pgid, const char *cgroup, int64_t grace_ms)
{
	struct tree *t;
	int left;

	if (pgid <= 1)
		return;
	left = tree_count(pgid, cgroup);
	if (left == 0) {
		tree_cgroup_remove(cgroup);
		return;
	}
	log_info("process group %ld: %d leftover process(es); sending SIGTERM",
	    (long)pgid, left);
	if (kill(-pgid, SIGTERM) == -1 && errno != ESRCH)
		log_warn("kill -TERM -%ld", (long)pgid);
	t = xcalloc(1, sizeof(*t));
	t->pgid = pgid;
	t->cgroup = cgroup ? xstrdup(cgroup) : NULL;
	timer_init(&t->timer, "tree-kill", tree_kill, t);
	timer_set(&t->timer, grace_ms);
}

char *
tree_cgroup_create(const char *key)
{
	(void)key;
	return NULL;
}

const char *
tree_cgroup_procs(const char *cgroup)
{
	static char buf[4096];

	if (cgroup == NULL)
		return NULL;
	snprintf(buf, sizeof(buf), "%s/cgroup.procs", cgroup);
	return buf;
}

void
tree_cgroup_remove(const char *cgroup)
{
	if (cgroup != NULL)
		(void)rmdir(cgroup);
}

int
tree_count(pid_t pgid, const char *cgroup)
{
	(void)cgroup;
	return kill(-pgid, 0) == 0 ? 1 : 0;
}
