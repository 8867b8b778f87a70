/*
 * hooks.c - job hooks: hooks/pre-build runs before a build's worker starts
 * and can refuse the build; hooks/post-build runs after the worker and its
 * leftovers are gone, before the finish report. Each runs as the build
 * user with the worker's environment, in a new session and in the build's
 * cgroup when there is one, for at most devops.agent.hooks.timeout.sec;
 * once it ends, whatever it left running is ended too (tree.h). Its output
 * (stdout and stderr) goes to build_tmp/<buildId>_<vmSeqId>_<hook>.log.
 * See docs/hooks.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "build.h"
#include "child.h"
#include "envlist.h"
#include "fsutil.h"
#include "log.h"
#include "ops.h"
#include "proc.h"
#include "tree.h"
#include "util.h"

#define HOOK_OUTPUT_MAX	((size_t)64 * 1024)	/* bytes read back */
#define HOOK_MSG_MAX	2000			/* bytes of output in a message */

struct hook {
	enum hook_kind	 kind;
	struct build	*b;
	hook_done_fn	 done;
	pid_t		 pid;
	unsigned long long start_time;
	char		*cgroup;	/* copy, or NULL */
	char		*output;	/* build_tmp/<key>_<name>.log */
	int		 status;
	int		 timed_out;
	struct timer	 timer;
};

static const char *hook_names[] = { "pre-build", "post-build" };

/* Free h. */
static void
hook_free(struct hook *h)
{
	timer_cancel(&h->timer);
	free(h->cgroup);
	free(h->output);
	free(h);
}

/* The hook and what it left are gone: report its result. */
static void
hook_gone(void *arg)
{
	struct hook *h = arg;
	const char *name = hook_names[h->kind];
	char *out = NULL, *msg;
	size_t len = 0;
	int ok = !h->timed_out && WIFEXITED(h->status) &&
	    WEXITSTATUS(h->status) == 0;

	if (fs_read_regular(h->output, HOOK_OUTPUT_MAX, &out, &len) == -1)
		out = xstrdup("");
	str_trim(out);
	len = strlen(out);
	if (h->timed_out)
		msg = xasprintf("hooks/%s did not end within %lld s (killed)%s%s",
		    name, A.cfg.hooks_timeout_sec, *out ? ": " : "",
		    len > HOOK_MSG_MAX ? out + len - HOOK_MSG_MAX : out);
	else
		msg = xasprintf("hooks/%s %s%s%s", name,
		    ok ? "succeeded" : child_status_str(h->status), *out ? ": " : "",
		    len > HOOK_MSG_MAX ? out + len - HOOK_MSG_MAX : out);
	if (ok)
		log_info("build %s: %s", h->b->key, msg);
	else
		log_warnx("build %s: %s", h->b->key, msg);
	free(out);
	(void)unlink(h->output);
	h->b->hook_busy = 0;
	h->done(h->b, ok, msg);
	free(msg);
	hook_free(h);
}

/* The hook's leader exited: end whatever it left, then report. */
static void
hook_exited(pid_t pid, int status, void *arg)
{
	struct hook *h = arg;

	(void)pid;
	timer_cancel(&h->timer);
	h->status = status;
	/* The leader is gone: end the rest without a grace period. */
	tree_terminate(h->pid, h->start_time, h->cgroup,
	    h->timed_out ? 0 : 1000, hook_gone, h);
}

/* The timeout passed: kill the hook's whole tree. */
static void
hook_timeout(void *arg)
{
	struct hook *h = arg;

	log_warnx("build %s: hooks/%s still runs after %lld s; killing it",
	    h->b->key, hook_names[h->kind], A.cfg.hooks_timeout_sec);
	h->timed_out = 1;
	/* Its session and process group; the rest of its cgroup follows
	 * from hook_exited(). */
	(void)kill(-h->pid, SIGKILL);
}

/* Run a hook (ops.h). */
int
hook_run(enum hook_kind kind, struct build *b, const char *cgroup,
    hook_done_fn done, char *err, size_t errlen)
{
	const char *name = hook_names[kind];
	char *path = xasprintf("%s/hooks/%s", A.workdir, name);
	char *argv[] = { path, NULL };
	struct spawn_opts o;
	struct envlist env;
	struct stat st;
	struct hook *h;
	int fd;
	pid_t pid;

	if (stat(path, &st) == -1 || !S_ISREG(st.st_mode)) {
		free(path);
		return 0;
	}
	if (access(path, X_OK) == -1) {
		snprintf(err, errlen, "hooks/%s is not executable", name);
		free(path);
		return -1;
	}
	memset(&o, 0, sizeof(o));
	o.stdin_fd = -1;
	build_env(b, &env);
	if (worker_user(&env, &o, err, errlen) == -1) {
		envlist_free(&env);
		free(path);
		return -1;
	}
	envlist_set(&env, "WORKSPACE", b->workspace);
	envlist_set(&env, "DEVOPS_AGENT_HOOK", name);
	if (kind == HOOK_POST_BUILD) {
		envlist_set(&env, "BUILD_OUTCOME", b->success ? "success" : "failure");
		envlist_set(&env, "BUILD_MESSAGE", b->message ? b->message : "");
	}
	h = xcalloc(1, sizeof(*h));
	h->kind = kind;
	h->b = b;
	h->done = done;
	h->cgroup = cgroup != NULL ? xstrdup(cgroup) : NULL;
	h->output = xasprintf("%s/" BUILD_TMP "/%s_%s.log", A.workdir, b->key, name);
	(void)unlink(h->output);
	fd = open(h->output, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd == -1 || (o.switch_user && fchown(fd, o.uid, o.gid) == -1)) {
		snprintf(err, errlen, "cannot create %s: %s", h->output,
		    strerror(errno));
		if (fd != -1)
			(void)close(fd);
		envlist_free(&env);
		free(path);
		hook_free(h);
		return -1;
	}
	o.stdout_fd = fd;
	o.stderr_fd = -2;
	o.path = path;
	o.argv = argv;
	o.envp = env.v;
	o.cwd = A.workdir;
	o.new_session = 1;
	o.cgroup_procs = tree_cgroup_procs(cgroup);
	pid = child_spawn(&o, err, errlen);
	(void)close(fd);
	envlist_free(&env);
	free(path);
	if (pid == -1) {
		(void)unlink(h->output);
		hook_free(h);
		return -1;
	}
	h->pid = pid;
	h->start_time = proc_start_time(pid);
	b->hook_busy = 1;
	timer_init(&h->timer, "hook-timeout", hook_timeout, h);
	timer_set(&h->timer, A.cfg.hooks_timeout_sec * 1000);
	child_watch(pid, hook_exited, h);
	log_info("build %s: hooks/%s started, pid %ld", b->key, name, (long)pid);
	return 1;
}
