/*
 * executor.c - the safe script executor's run/kill engine (see executor.h for
 * the contract, executor_int.h for its split into executor.c, taskstore.c
 * and output.c, docs/pipeline.md for the files). One struct task per running
 * task; every step runs from the event loop: the output pipes are fd
 * watchers, the exit a child_watch callback, the timeout and the kill grace
 * are timers.
 *
 * A task ends only when (1) its leader was reaped, (2) its output pipe hit
 * EOF and (3) no process of its session/process group is left: leftovers
 * get SIGTERM, then SIGKILL after the grace period (tmux's "finished only
 * when reaped and EOF", plus STYLE.md §5's whole-tree kill).
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "child.h"
#include "envlist.h"
#include "ev.h"
#include "executor.h"
#include "executor_int.h"
#include "fsutil.h"
#include "json.h"
#include "log.h"
#include "proc.h"
#include "util.h"

/* sha256 through OpenSSL EVP, as lower-case hex. */
void
exec_sha256_hex(const void *data, size_t len, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0, i;

	if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32)
		fatalx("sha256: OpenSSL digest failed");
	for (i = 0; i < 32; i++)
		snprintf(hex + (size_t)i * 2, 3, "%02x", md[i]);
	hex[64] = '\0';
}

/* Integrity check against the allow-list file (fails closed). */
int
exec_allowed(const char *allowlist, const void *data, size_t len,
    char *err, size_t errlen)
{
	char hex[65], *text = NULL, *line, *next;
	int found = 0;

	exec_sha256_hex(data, len, hex);
	if (fs_read_file(allowlist, SCRIPT_MAX, &text, NULL) == -1) {
		snprintf(err, errlen, "script sha256 %s: allow-list %s unreadable "
		    "(%s): refusing to run", hex, allowlist, strerror(errno));
		return 0;
	}
	for (line = text; line != NULL && !found; line = next) {
		size_t k;
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		while (*line == ' ' || *line == '\t')
			line++;
		if (*line == '#')
			continue;
		for (k = 0; k < 64 && isxdigit((unsigned char)line[k]); k++)
			;
		if (k == 64 && (line[64] == '\0' || isspace((unsigned char)line[64])) &&
		    strncasecmp(line, hex, 64) == 0)
			found = 1;
	}
	free(text);
	if (!found)
		snprintf(err, errlen, "script sha256 %s is not in the allow-list %s",
		    hex, allowlist);
	return found;
}

/* The §8 script file around an inline command. */
char *
exec_wrap_script(const char *command, const char *dir)
{
	char *copy = xstrdup(command), *line, *next, *q = shell_quote(dir), *out;
	size_t cap = strlen(command) + strlen(q) + 64, len = 0;
	int first = 1;

	out = xmalloc(cap);
	out[0] = '\0';
#define APPEND(s) do {							\
	size_t k_ = strlen(s);						\
	if (len + k_ + 2 > cap) {					\
		cap = (len + k_ + 2) * 2;				\
		out = xrealloc(out, cap);				\
	}								\
	memcpy(out + len, (s), k_);					\
	len += k_;							\
	out[len++] = '\n';						\
	out[len] = '\0';						\
} while (0)
	for (line = copy; line != NULL; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		if (first) {
			char *t = xstrdup(line), *cd = xasprintf("cd %s", q);
			first = 0;
			if (str_starts(str_trim(t), "#!")) {
				APPEND(t);
				APPEND("set -e");
				APPEND(cd);
			} else {
				APPEND("#!/bin/bash");
				APPEND("");
				APPEND("set -e");
				APPEND(cd);
				APPEND(line);
			}
			free(t);
			free(cd);
			continue;
		}
		APPEND(line);
	}
#undef APPEND
	free(copy);
	free(q);
	return out;
}

/* An executor over a (created, resolved) workspace. */
struct executor *
exec_new(const struct exec_config *c, char *err, size_t errlen)
{
	struct executor *e;
	char real[PATH_MAX];

	if (c->workspace == NULL || *c->workspace == '\0') {
		snprintf(err, errlen, "no workspace given");
		return NULL;
	}
	if (fs_mkdir_p(c->workspace, 0755) == -1 || realpath(c->workspace, real) == NULL) {
		snprintf(err, errlen, "workspace %s: %s", c->workspace, strerror(errno));
		return NULL;
	}
	e = xcalloc(1, sizeof(*e));
	e->ws = xstrdup(real);
	if (c->taskdir != NULL && *c->taskdir != '\0') {
		if (fs_mkdir_p(c->taskdir, 0755) == -1 || realpath(c->taskdir, real) == NULL) {
			snprintf(err, errlen, "task dir %s: %s", c->taskdir, strerror(errno));
			free(e->ws);
			free(e);
			return NULL;
		}
	}
	e->td = xstrdup(real);
	e->allowlist = c->allowlist && *c->allowlist ? xstrdup(c->allowlist) : NULL;
	e->grace_ms = c->kill_grace_ms > 0 ? c->kill_grace_ms : EXEC_DEFAULT_GRACE_MS;
	e->tree = c->tree;
	return e;
}

/* Real path of the workspace. */
const char *
exec_workspace(const struct executor *e)
{
	return e->ws;
}

/* Number of running tasks. */
int
exec_running(const struct executor *e)
{
	const struct task *t;
	int n = 0;

	for (t = e->tasks; t != NULL; t = t->next)
		n++;
	return n;
}

/* Is task id running now? */
int
exec_is_running(const struct executor *e, const char *id)
{
	const struct task *t;

	for (t = e->tasks; t != NULL; t = t->next)
		if (strcmp(t->id, id) == 0)
			return 1;
	return 0;
}

/* Forget t: timers, watchers, descriptors, memory. */
static void
task_free(struct task *t)
{
	timer_cancel(&t->timeout_timer);
	timer_cancel(&t->kill_timer);
	timer_cancel(&t->end_timer);
	if (t->out_fd != -1) {
		ev_fd_del(t->out_fd);
		close(t->out_fd);
	}
	if (t->err_fd >= 0) {
		ev_fd_del(t->err_fd);
		close(t->err_fd);
	}
	if (t->log_fd != -1)
		close(t->log_fd);
	if (t->pid > 0 && !t->reaped)
		child_unwatch(t->pid);
	free(t->id);
	free(t->tag);
	free(t->dir);
	free(t->workdir);
	free(t->script);
	free(t->user);
	free(t->start_error);
	free(t->cgroup);
	free(t);
}

/* Free the executor (running tasks are forgotten, not stopped). */
void
exec_free(struct executor *e)
{
	if (e == NULL)
		return;
	while (e->tasks != NULL) {
		struct task *t = e->tasks;
		e->tasks = t->next;
		task_free(t);
	}
	free(e->ws);
	free(e->td);
	free(e->allowlist);
	free(e);
}

/* Live processes of the task's session or process group (not zombies). */
static int
group_count(const struct task *t)
{
	int n;

	if (t->cgroup != NULL && t->ex->tree != NULL &&
	    (n = t->ex->tree->count(t->cgroup)) >= 0)
		return n;	/* the whole tree, escaped processes included */
	n = proc_group_members(t->pid, t->pid, t->proc_start, 0, NULL, 0);

	if (n >= 0)
		return n;
	/* No /proc: a zombie counts too, which only costs a grace period. */
	return kill(-t->pid, 0) == 0 || errno == EPERM;
}

/* Signal the task's process group (the leader too, should it have left it). */
static void
group_signal(const struct task *t, int sig)
{
	if (t->cgroup != NULL && t->ex->tree != NULL)
		t->ex->tree->signal(t->cgroup, sig);
	if (kill(-t->pid, sig) == -1 && errno != ESRCH)
		log_warn("task %s: kill -%d -%ld", t->id, sig, (long)t->pid);
	if (!t->reaped)
		(void)kill(t->pid, sig);
}

static void kill_tick(void *arg);

/* SIGTERM the whole group now, SIGKILL what is left after grace_ms. */
static void
kill_start(struct task *t, int64_t grace_ms, const char *why)
{
	if (t->kill != K_NONE)
		return;
	log_info("task %s: %s: SIGTERM to process group %ld%s (SIGKILL in %lld ms)",
	    t->id, why, (long)t->pid, t->cgroup != NULL ? " and its cgroup" : "",
	    (long long)grace_ms);
	group_signal(t, SIGTERM);
	t->kill = K_TERM;
	t->kill_deadline = mono_ms() + grace_ms;
	timer_set(&t->kill_timer, KILL_POLL_MS);
}

/*
 * Kill state machine tick: while SIGTERM is pending, poll the group until it
 * is empty or the deadline passes (then SIGKILL); afterwards give a pipe
 * held open by a process outside the group a moment, then close it.
 */
static void
kill_tick(void *arg)
{
	struct task *t = arg;

	switch (t->kill) {
	case K_TERM:
		if (group_count(t) > 0) {
			if (mono_ms() < t->kill_deadline) {
				timer_set(&t->kill_timer, KILL_POLL_MS);
				return;
			}
			log_warnx("task %s: process group %ld outlived SIGTERM; "
			    "sending SIGKILL", t->id, (long)t->pid);
			group_signal(t, SIGKILL);
			t->kill = K_KILL;
			timer_set(&t->kill_timer, KILL_SETTLE_MS);
			return;
		}
		t->kill = K_DONE;
		break;
	case K_KILL:
		t->kill = K_DONE;
		break;
	default:
		break;
	}
	if (t->reaped && (t->out_fd != -1 || t->err_fd >= 0)) {
		if (!t->drain_armed) {
			t->drain_armed = 1;
			timer_set(&t->kill_timer, DRAIN_MS);
			return;
		}
		log_warnx("task %s: its output stays open after the process group "
		    "ended (a process left the session); closing it", t->id);
		if (t->out_fd != -1)
			output_on_stdout(t->out_fd, POLLIN, t);
		if (t->err_fd >= 0)
			output_on_stderr(t->err_fd, POLLIN, t);
		output_pipe_close(t);
	}
	exec_task_maybe_end(t);
}

/* The timeout expired: end the whole group. */
static void
on_timeout(void *arg)
{
	struct task *t = arg;

	if (t->reaped)
		return;
	t->timed_out = 1;
	log_warnx("task %s: timed out after %lld s", t->id,
	    (long long)(t->timeout_ms / 1000));
	kill_start(t, t->ex->grace_ms, "timeout");
}

/* Reaper callback: the leader ended; leftovers of its group are ended too. */
static void
on_exit_cb(pid_t pid, int status, void *arg)
{
	struct task *t = arg;

	(void)pid;
	t->reaped = 1;
	t->wstatus = status;
	timer_cancel(&t->timeout_timer);
	log_info("task %s: process %ld ended (%s)", t->id, (long)t->pid,
	    child_status_str(status));
	if (t->kill == K_NONE && group_count(t) > 0) {
		kill_start(t, t->ex->grace_ms, "leftover processes after the "
		    "script ended");
	} else if (t->kill == K_NONE && (t->out_fd != -1 || t->err_fd >= 0)) {
		/* Normally EOF follows at once; a process outside the group may
		   hold the pipe: kill_tick closes it after DRAIN_MS. */
		t->kill = K_DONE;
		t->drain_armed = 1;
		timer_set(&t->kill_timer, DRAIN_MS);
	}
	exec_task_maybe_end(t);
}

/* Go's text for a wait status: "exit status N" / "signal: killed". */
static char *
status_error(int status)
{
	char *s;

	if (WIFEXITED(status))
		return xasprintf("exit status %d", WEXITSTATUS(status));
	if (WIFSIGNALED(status)) {
		s = xasprintf("signal: %s", strsignal(WTERMSIG(status)));
		if (s[8] != '\0')
			s[8] = (char)tolower((unsigned char)s[8]);
		return s;
	}
	return xasprintf("wait status 0x%x", status);
}

/*
 * The task is over: decide the outcome, persist result.json with the done
 * flag, then hand the result to the owner.
 */
static void
task_end(struct task *t)
{
	struct executor *e = t->ex;
	struct exec_result *r = xcalloc(1, sizeof(*r));
	struct task **pp;
	char when[64], *footer;

	t->ended = 1;
	r->id = xstrdup(t->id);
	r->tag = xstrdup(t->tag);
	r->start_ms = t->start_ms;
	r->end_ms = wall_ms();
	r->duration_ms = r->end_ms - r->start_ms;
	r->output_bytes = t->total;
	r->output = output_ring_text(t);
	r->exit_code = -1;
	if (t->start_error != NULL) {
		r->status = EXEC_FAILURE;
		r->error = xstrdup(t->start_error);
	} else if (t->killed) {
		r->status = EXEC_KILLED;
		r->error = xstrdup("killed on request");
	} else if (t->timed_out) {
		r->status = EXEC_TIMEOUT;
		r->error = xasprintf("timed out after %lld s",
		    (long long)(t->timeout_ms / 1000));
	} else if (t->stopping && !(WIFEXITED(t->wstatus) && WEXITSTATUS(t->wstatus) == 0)) {
		r->status = EXEC_FAILURE;
		r->error = xstrdup("stopped: the agent is shutting down");
	} else if (WIFEXITED(t->wstatus) && WEXITSTATUS(t->wstatus) == 0) {
		r->status = EXEC_SUCCESS;
		r->error = xstrdup("");
	} else {
		r->status = EXEC_FAILURE;
		r->error = status_error(t->wstatus);
	}
	if (t->start_error == NULL) {
		if (WIFEXITED(t->wstatus))
			r->exit_code = WEXITSTATUS(t->wstatus);
		else if (WIFSIGNALED(t->wstatus))
			r->term_signal = WTERMSIG(t->wstatus);
	}
	r->params = taskstore_read_params(t->id, t->workdir);
	r->done = 1;

	output_fmt_time(r->end_ms, when, sizeof(when));
	footer = xasprintf("\n=== Execution Finished ===\nTime: %s\nDuration: %lld ms\n"
	    "Status: %s\nExitCode: %d\nError: %s\nOutputBytes: %lld\n", when,
	    (long long)r->duration_ms, exec_status_name(r->status), r->exit_code,
	    r->error, t->total);
	output_log_put(t, footer, strlen(footer));
	free(footer);
	(void)taskstore_result_write(t->dir, r, 0, 0);
	log_info("task %s: %s (%s) after %lld ms, %lld output bytes, %d param(s)",
	    t->id, exec_status_name(r->status), *r->error ? r->error : "exit 0",
	    (long long)r->duration_ms, t->total, cJSON_GetArraySize(r->params));

	for (pp = &e->tasks; *pp != NULL; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	if (t->cgroup != NULL && e->tree != NULL)
		e->tree->remove(t->cgroup);
	{
		exec_done_fn fn = t->fn;
		void *arg = t->arg;
		task_free(t);
		fn(r, arg);
	}
}

/* End t when the leader is reaped, the pipe closed and the group gone. */
void
exec_task_maybe_end(struct task *t)
{
	if (t->ended || !t->reaped || t->out_fd != -1 || t->err_fd >= 0 ||
	    t->kill == K_TERM || t->kill == K_KILL)
		return;
	task_end(t);
}

/* Timer: deliver a task that failed to start (never from inside exec_start). */
static void
end_now(void *arg)
{
	task_end(arg);
}

/* Does the environment variable name look like it holds a secret? */
static int
secret_name(const char *kv)
{
	static const char *marks[] = { "SECRET", "TOKEN", "PASSWORD", "PASSWD",
	    "CREDENTIAL", "_KEY", "PRIVATE" };
	const char *eq = strchr(kv, '=');
	char name[256];
	size_t i;

	snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - kv) : (int)strlen(kv), kv);
	for (i = 0; i < nitems(marks); i++)
		if (strcasestr(name, marks[i]) != NULL)
			return 1;
	return 0;
}

/* debug.sh: cd, the task's environment, exec the script (seed 002). */
static char *
debug_script_text(const struct task *t, char *const *argv, const struct envlist *env)
{
	char *q = shell_quote(t->workdir), *out, *tmp;
	size_t i;

	out = xasprintf("#!/bin/sh\n# debug.sh - re-run task %s by hand with the "
	    "environment it ran with\n# (written by the executor; variables whose "
	    "names look secret are left out).\n%s%s%scd %s || exit 1\n", t->id,
	    *t->user ? "# It ran as user " : "", *t->user ? t->user : "",
	    *t->user ? ": su -s /bin/sh -c ./debug.sh <user>\n" : "", q);
	free(q);
	for (i = 0; i < env->n; i++) {
		if (secret_name(env->v[i]) || strchr(env->v[i], '=') == NULL)
			continue;
		q = shell_quote(env->v[i]);
		tmp = xasprintf("%sexport %s\n", out, q);
		free(q);
		free(out);
		out = tmp;
	}
	tmp = xasprintf("%sexec", out);
	free(out);
	out = tmp;
	for (i = 0; argv[i] != NULL; i++) {
		q = shell_quote(argv[i]);
		tmp = xasprintf("%s %s", out, q);
		free(q);
		free(out);
		out = tmp;
	}
	tmp = xasprintf("%s\n", out);
	free(out);
	return tmp;
}

/* task.json: the request as understood (for people and exec_prune). */
static char *
task_json(const struct task *t, char *const *argv, const struct exec_request *r)
{
	cJSON *o = cJSON_CreateObject(), *a;
	char *s;
	size_t i;

	json_add_str(o, "id", t->id);
	json_add_str(o, "tag", t->tag);
	json_add_str(o, "workdir", t->workdir);
	json_add_str(o, "user", t->user);
	cJSON_AddNumberToObject(o, "timeoutMs", (double)t->timeout_ms);
	cJSON_AddNumberToObject(o, "created", (double)wall_ms());
	a = cJSON_AddArrayToObject(o, "argv");
	for (i = 0; argv[i] != NULL; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(argv[i]));
	a = cJSON_AddArrayToObject(o, "env");
	for (i = 0; r->env != NULL && r->env[i] != NULL; i++)
		if (!secret_name(r->env[i]))
			cJSON_AddItemToArray(a, cJSON_CreateString(r->env[i]));
	s = cJSON_Print(o);
	if (s == NULL)
		fatalx("executor: out of memory");
	cJSON_Delete(o);
	return s;
}

/* Write dir/name with mode, owned by the task's user when switching. */
static int
task_file(const char *path, const char *text, mode_t mode, const struct spawn_opts *o)
{
	if (fs_write_atomic(path, text, strlen(text), mode) == -1)
		return -1;
	/* lchown: the task dir is the user's; never follow a swapped-in link. */
	if (o->switch_user && lchown(path, o->uid, o->gid) == -1)
		return -1;
	return 0;
}

/* Resolve the run-as user into o and env. 0, or -1 with err. */
static int
user_setup(const char *user, struct spawn_opts *o, struct envlist *env,
    char *err, size_t errlen)
{
	struct passwd *pw;

	if (user == NULL || *user == '\0')
		return 0;
	if ((pw = getpwnam(user)) == NULL) {
		snprintf(err, errlen, "user '%s' not found (devops.slave.user)", user);
		return -1;
	}
	if (pw->pw_uid == geteuid())
		return 0;
	o->switch_user = 1;
	o->uid = pw->pw_uid;
	o->gid = pw->pw_gid;
	envlist_set(env, "HOME", pw->pw_dir);
	envlist_set(env, "USER", pw->pw_name);
	envlist_set(env, "LOGNAME", pw->pw_name);
	return 0;
}

/* Make a directory inside the workspace (checked again after creation). */
static int
dir_make_inside(const char *root, const char *rel, const struct spawn_opts *o,
    char *out, size_t outlen, char *err, size_t errlen)
{
	char again[PATH_MAX];

	if (exec_resolve(root, rel, out, outlen, err, errlen) == -1)
		return -1;
	if (fs_mkdir_p(out, 0755) == -1) {
		snprintf(err, errlen, "create %s: %s", out, strerror(errno));
		return -2;
	}
	/* A symlink planted between the check and mkdir would show here. */
	if (realpath(out, again) == NULL || !taskstore_path_under(root, again) ||
	    !fs_is_dir(again)) {
		snprintf(err, errlen, "path '%s' leaves the workspace", rel);
		return -1;
	}
	snprintf(out, outlen, "%s", again);
	if (o->switch_user && lchown(out, o->uid, o->gid) == -1) {
		snprintf(err, errlen, "chown %s: %s", out, strerror(errno));
		return -2;
	}
	return 0;
}

/* Build argv for the task: the script itself, or /bin/sh for a non-executable one. */
static char **
task_argv(const char *script, int direct, char *const *args)
{
	size_t n = 0, i, k = 0;
	char **argv;

	while (args != NULL && args[n] != NULL)
		n++;
	argv = xcalloc(n + 3, sizeof(*argv));
	if (!direct)
		argv[k++] = xstrdup("/bin/sh");
	argv[k++] = xstrdup(script);
	for (i = 0; i < n; i++)
		argv[k++] = xstrdup(args[i]);
	return argv;
}

/* Free a NULL-terminated vector of strings. */
static void
argv_free(char **v)
{
	size_t i;

	for (i = 0; v != NULL && v[i] != NULL; i++)
		free(v[i]);
	free(v);
}

/* Fork and exec t with argv/env; on failure t->start_error is set. */
static void
task_spawn(struct task *t, char **argv, struct envlist *env, struct spawn_opts *o)
{
	int pfd[2], efd[2] = { -1, -1 };
	char err[512];

	if (pipe2(pfd, O_CLOEXEC) == -1) {
		t->start_error = xasprintf("start: pipe: %s", strerror(errno));
		return;
	}
	if (t->err_fd == -2 && pipe2(efd, O_CLOEXEC) == -1) {
		t->start_error = xasprintf("start: pipe: %s", strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
		return;
	}
	t->err_fd = -1;
	(void)fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	if (efd[0] != -1)
		(void)fcntl(efd[0], F_SETFL, O_NONBLOCK);
	o->path = argv[0];
	o->argv = argv;
	o->envp = env->v;
	o->cwd = t->workdir;
	o->new_session = 1;	/* its own process group: the unit we kill */
	o->stdin_fd = -1;
	o->stdout_fd = pfd[1];
	o->stderr_fd = efd[1] != -1 ? efd[1] : -2;
	o->user = t->user;
	o->cgroup_procs = NULL;
	if (t->ex->tree != NULL) {
		char *name = xasprintf("task-%s-%s", *t->tag ? t->tag : "x", t->id);
		t->cgroup = t->ex->tree->create(name);
		free(name);
		if (t->cgroup != NULL)
			o->cgroup_procs = t->ex->tree->procs(t->cgroup);
	}
	t->pid = child_spawn(o, err, sizeof(err));
	if (t->pid == -1 && t->ex->tree != NULL && t->cgroup != NULL &&
	    strncmp(err, "cgroup", 6) == 0) {
		/* Not delegated to us after all: the process group must do. */
		log_warnx("task %s: cannot join its cgroup (%s); process group only",
		    t->id, err);
		t->ex->tree->remove(t->cgroup);
		free(t->cgroup);
		t->cgroup = NULL;
		o->cgroup_procs = NULL;
		t->pid = child_spawn(o, err, sizeof(err));
	}
	close(pfd[1]);
	if (efd[1] != -1)
		close(efd[1]);
	if (t->pid == -1) {
		close(pfd[0]);
		if (efd[0] != -1)
			close(efd[0]);
		t->pid = 0;
		t->start_error = xasprintf("start: %s", err);
		return;
	}
	t->proc_start = proc_start_time(t->pid);
	child_watch(t->pid, on_exit_cb, t);
	t->out_fd = pfd[0];
	t->err_fd = efd[0];
	if (ev_fd_add(t->out_fd, POLLIN, output_on_stdout, t) == -1 ||
	    (t->err_fd != -1 && ev_fd_add(t->err_fd, POLLIN, output_on_stderr, t) == -1)) {
		log_warn("task %s: cannot watch its output", t->id);
		output_pipe_close(t);
		t->start_error = xstrdup("start: no free event-loop slot for the "
		    "task's output");
		/* The reaper still delivers the exit; the task ends then. */
		group_signal(t, SIGKILL);
		return;
	}
	if (t->timeout_ms > 0)
		timer_set(&t->timeout_timer, t->timeout_ms);
}

/* Kill a running task on request: its whole group, then EXEC_KILLED. */
int
exec_kill(struct executor *e, const char *id)
{
	struct task *t;

	for (t = e->tasks; t != NULL; t = t->next)
		if (!t->ended && strcmp(t->id, id) == 0)
			break;
	if (t == NULL || t->pid <= 0)
		return 0;
	if (t->reaped)
		return 1;
	t->killed = 1;
	timer_cancel(&t->timeout_timer);
	kill_start(t, t->ex->grace_ms, "kill requested");
	return 1;
}

/* Validate, prepare the task dir and files, persist, then spawn. */
enum exec_error
exec_start(struct executor *e, const struct exec_request *r, exec_done_fn fn,
    void *arg, char *err, size_t errlen)
{
	char dir[PATH_MAX], wd[PATH_MAX], script[PATH_MAX], when[64];
	struct spawn_opts o;
	struct envlist env;
	struct exec_result *res;
	struct task *t = NULL;
	char **argv = NULL, *text = NULL, *header, *path = NULL;
	const char *sname = r->script_name ? r->script_name : "script.sh";
	int direct = 1, rc;
	size_t i;
	enum exec_error ret = EXEC_E_REQUEST;

	memset(&o, 0, sizeof(o));
	envlist_init(&env, 1);
	if (!exec_id_valid(r->id)) {
		snprintf(err, errlen, "task id '%.*s' is not a safe name "
		    "([A-Za-z0-9._-], at most %d characters)", 64, r->id ? r->id : "",
		    EXEC_ID_MAX);
		goto fail;
	}
	if ((r->script == NULL) == (r->script_path == NULL) ||
	    (r->script != NULL && !exec_id_valid(sname))) {
		snprintf(err, errlen, "task %s: give either an inline script (with a "
		    "safe file name) or a script path", r->id);
		goto fail;
	}
	if (exec_is_running(e, r->id)) {
		snprintf(err, errlen, "task %s is running already", r->id);
		ret = EXEC_E_EXISTS;
		goto fail;
	}
	if (exec_resolve(e->td, r->id, dir, sizeof(dir), err, errlen) == -1)
		goto fail;
	path = xasprintf("%s/" RESULT_FILE, dir);
	if (fs_exists(path)) {
		snprintf(err, errlen, "task %s has run already (%s exists); it is "
		    "never run again", r->id, path);
		ret = EXEC_E_EXISTS;
		goto fail;
	}
	if (user_setup(r->user, &o, &env, err, errlen) == -1)
		goto fail;

	/* Integrity: the script as the requester sent it, or the file's bytes. */
	if (r->script_path != NULL) {
		size_t len = 0;
		struct stat st;
		if (exec_resolve(e->ws, r->script_path, script, sizeof(script),
		    err, errlen) == -1)
			goto fail;
		if (stat(script, &st) == -1 || !S_ISREG(st.st_mode)) {
			snprintf(err, errlen, "script %s is not a regular file",
			    r->script_path);
			goto fail;
		}
		direct = (st.st_mode & 0111) != 0;
		if (e->allowlist != NULL) {
			if (fs_read_file(script, SCRIPT_MAX, &text, &len) == -1) {
				snprintf(err, errlen, "read script %s: %s", script,
				    strerror(errno));
				ret = EXEC_E_PREPARE;
				goto fail;
			}
			if (!exec_allowed(e->allowlist, text, len, err, errlen)) {
				ret = EXEC_E_DENIED;
				goto fail;
			}
			free(text);
			text = NULL;
		}
	} else if (e->allowlist != NULL &&
	    !exec_allowed(e->allowlist, r->script, strlen(r->script), err, errlen)) {
		ret = EXEC_E_DENIED;
		goto fail;
	}

	/* The task dir and the working dir, both inside the workspace. */
	if ((rc = dir_make_inside(e->td, r->id, &o, dir, sizeof(dir), err, errlen)) != 0) {
		ret = rc == -1 ? EXEC_E_REQUEST : EXEC_E_PREPARE;
		goto fail;
	}
	if (r->workdir != NULL) {
		if ((rc = dir_make_inside(e->ws, r->workdir, &o, wd, sizeof(wd), err,
		    errlen)) != 0) {
			ret = rc == -1 ? EXEC_E_REQUEST : EXEC_E_PREPARE;
			goto fail;
		}
	} else {
		snprintf(wd, sizeof(wd), "%s", dir);
	}

	t = xcalloc(1, sizeof(*t));
	t->ex = e;
	t->id = xstrdup(r->id);
	t->tag = xstrdup(r->tag ? r->tag : "");
	t->dir = xstrdup(dir);
	t->workdir = xstrdup(wd);
	t->user = xstrdup(r->user ? r->user : "");
	t->timeout_ms = r->timeout_ms > 0 ? r->timeout_ms : 0;
	t->fn = fn;
	t->arg = arg;
	t->out_fd = t->log_fd = -1;
	t->err_fd = r->split_stderr ? -2 : -1;	/* -2: task_spawn makes the pipe */
	t->out_fn = r->on_output;
	t->out_arg = r->output_arg;
	timer_init(&t->timeout_timer, "task-timeout", on_timeout, t);
	timer_init(&t->kill_timer, "task-kill", kill_tick, t);
	timer_init(&t->end_timer, "task-end", end_now, t);

	if (r->script != NULL) {
		if ((size_t)snprintf(script, sizeof(script), "%s/%s", dir, sname) >=
		    sizeof(script)) {
			snprintf(err, errlen, "task %s: script path too long", r->id);
			ret = EXEC_E_PREPARE;
			goto fail;
		}
		text = exec_wrap_script(r->script, wd);
		if (task_file(script, text, 0700, &o) == -1) {
			snprintf(err, errlen, "write script file %s: %s", script,
			    strerror(errno));
			ret = EXEC_E_PREPARE;
			goto fail;
		}
		free(text);
		text = NULL;
	}
	t->script = xstrdup(script);
	argv = task_argv(script, direct, r->args);

	/* The task's environment: the agent's, the caller's, the task's own. */
	for (i = 0; r->env != NULL && r->env[i] != NULL; i++) {
		const char *eq = strchr(r->env[i], '=');
		if (eq == NULL) {
			envlist_unset(&env, r->env[i]);
		} else {
			char *k = xstrndup(r->env[i], (size_t)(eq - r->env[i]));
			envlist_set(&env, k, eq + 1);
			free(k);
		}
	}
	envlist_set(&env, "DEVOPS_TASK_ID", t->id);
	envlist_set(&env, "DEVOPS_TASK_DIR", t->dir);
	envlist_set(&env, "DEVOPS_TASK_WORKDIR", t->workdir);
	free(path);
	path = xasprintf("%s/" ENV_FILE, t->workdir);
	envlist_set(&env, "DEVOPS_TASK_OUTPUT_ENV", path);

	free(path);
	path = xasprintf("%s/" TASK_FILE, dir);
	text = task_json(t, argv, r);
	if (task_file(path, text, 0644, &o) == -1) {
		snprintf(err, errlen, "write %s: %s", path, strerror(errno));
		ret = EXEC_E_PREPARE;
		goto fail;
	}
	free(text);
	text = NULL;
	free(path);
	path = xasprintf("%s/" DEBUG_FILE, dir);
	text = debug_script_text(t, argv, &env);
	if (task_file(path, text, 0700, &o) == -1)
		log_warn("task %s: cannot write %s", t->id, path);
	free(text);
	text = NULL;
	free(path);
	path = xasprintf("%s/" LOG_FILE, dir);
	t->log_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_NOFOLLOW |
	    O_CLOEXEC, 0640);
	if (t->log_fd == -1) {
		snprintf(err, errlen, "open %s: %s", path, strerror(errno));
		ret = EXEC_E_PREPARE;
		goto fail;
	}

	/* From here on the task exists: result.json marks it (never re-run). */
	t->start_ms = wall_ms();
	res = xcalloc(1, sizeof(*res));
	res->id = t->id;
	res->tag = t->tag;
	res->status = EXEC_RUNNING;
	res->exit_code = -1;
	res->start_ms = t->start_ms;
	if (taskstore_result_write(dir, res, 0, 0) == -1) {
		snprintf(err, errlen, "write %s/" RESULT_FILE ": %s", dir, strerror(errno));
		free(res);
		ret = EXEC_E_PREPARE;
		goto fail;
	}
	output_fmt_time(t->start_ms, when, sizeof(when));
	header = xasprintf("=== Execution Started ===\nTime: %s\nTask: %s\nWorkDir: %s\n"
	    "Script: %s\nUser: %s\nTimeout: %lld s\n\n", when, t->id, t->workdir,
	    t->script, *t->user ? t->user : "(the agent's)",
	    (long long)(t->timeout_ms / 1000));
	output_log_put(t, header, strlen(header));
	free(header);

	t->next = e->tasks;
	e->tasks = t;
	task_spawn(t, argv, &env, &o);
	if (t->start_error != NULL && t->pid == 0) {
		log_warnx("task %s: %s", t->id, t->start_error);
		t->reaped = 1;
		timer_set(&t->end_timer, 0);
	} else if (t->pid > 0) {
		(void)taskstore_result_write(dir, res, t->pid, t->proc_start);
		log_info("task %s: started %s as pid %ld in %s%s%s", t->id, t->script,
		    (long)t->pid, t->workdir, *t->user ? " as " : "", t->user);
	}
	free(res);
	argv_free(argv);
	envlist_free(&env);
	free(path);
	return EXEC_OK;
fail:
	if (t != NULL)
		task_free(t);
	argv_free(argv);
	envlist_free(&env);
	free(text);
	free(path);
	return ret;
}

/* Agent exit: stop every running task within the budget. */
void
exec_shutdown(struct executor *e, int64_t budget_ms)
{
	int64_t end = mono_ms() + (budget_ms > 0 ? budget_ms : 0);
	struct task *t;

	for (t = e->tasks; t != NULL; t = t->next) {
		t->stopping = 1;
		timer_cancel(&t->timeout_timer);
		if (!t->reaped)
			kill_start(t, budget_ms / 2, "agent shutdown");
	}
	while (e->tasks != NULL && mono_ms() < end)
		ev_run_once(50);
	/* Out of budget: SIGKILL, then give the reaper a last moment. */
	for (t = e->tasks; t != NULL; t = t->next)
		if (t->pid > 0)
			group_signal(t, SIGKILL);
	end = mono_ms() + 1000;
	while (e->tasks != NULL && mono_ms() < end) {
		child_reap();
		ev_run_once(20);
	}
	while ((t = e->tasks) != NULL) {
		/* Unreaped after SIGKILL: give up waiting, record it anyway. */
		log_warnx("task %s: still not reaped after SIGKILL", t->id);
		if (!t->reaped) {
			child_unwatch(t->pid);
			t->reaped = 1;
			t->wstatus = SIGKILL;	/* WIFSIGNALED */
		}
		output_pipe_close(t);
		t->kill = K_DONE;
		e->tasks = t->next;	/* task_end finds it gone: fine */
		task_end(t);
	}
}
