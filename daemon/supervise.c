/*
 * supervise.c - the daemon's one loop: keep exactly one agent alive.
 *
 * A small state machine (s6 habit). "The agent is alive" means "someone
 * holds runtime/agent.lock" (§3.4), whoever started it. The loop sleeps in
 * poll() on the signal self-pipe and, when a lock is being waited for, on a
 * lockwatch pipe; its only timeout is the backoff deadline (monotonic).
 *
 *   START ----- total-lock busy ------> WAIT_TOTAL --- lock got ---+
 *     |  \---- agent.lock held -------> WATCH_AGENT -- lock free --+--> START
 *     |  \---- spawn failed ----------> BACKOFF ------ deadline ---+
 *     '------- spawned ---------------> CHILD -------- SIGCHLD ----> START or
 *                                                     BACKOFF, or exit 88
 *
 * Why each step is ordered as it is:
 *  - START takes total-lock first, so the check and the exec are atomic with
 *    respect to the upgrader (which holds total-lock while it swaps files).
 *  - The agent.lock probe is released before fork(), never after (W14): our
 *    agent cannot find the lock held by us.
 *  - While our own child lives, the daemon never touches agent.lock at all:
 *    SIGCHLD tells it the child is gone.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "daemon.h"
#include "lock.h"
#include "lockwatch.h"
#include "log.h"
#include "sig.h"
#include "util.h"

enum super_state {
	SUPER_START,		/* decide now: total-lock, probe, spawn */
	SUPER_BACKOFF,		/* wait until next, then START */
	SUPER_WAIT_TOTAL,	/* lockwatch on total-lock (upgrade running) */
	SUPER_WATCH_AGENT,	/* lockwatch on agent.lock (agent not ours) */
	SUPER_CHILD		/* our agent runs; SIGCHLD ends it */
};

struct super {
	enum super_state  state;
	const char	 *workdir;
	char		 *agent_path;	/* workdir/devopsAgent */
	char		 *argv[2];	/* agent_path NULL: never an argument (CLI mode) */
	const char	 *self_arg;	/* the daemon's own "debug" argument, or NULL */
	pid_t		  child;	/* our agent, or -1 */
	int64_t		  child_start;	/* mono ms of its spawn */
	int		  fails;	/* fast deaths in a row */
	int64_t		  next;		/* BACKOFF deadline, mono ms */
	int64_t		  stable_ms;
	struct lockwatch *watch;	/* in WAIT_TOTAL / WATCH_AGENT */
	int		  exit_code;	/* -1 while running */
};

static void super_child_died(struct super *, int);

/* Delay before restart number n of a crash loop: 1 s, 2 s, 4 s ... 60 s. */
static int64_t
super_backoff_ms(int n)
{
	int64_t ms = SUPER_BACKOFF_MIN_MS;

	while (--n > 0 && ms < SUPER_BACKOFF_MAX_MS)
		ms *= 2;
	return ms < SUPER_BACKOFF_MAX_MS ? ms : SUPER_BACKOFF_MAX_MS;
}

/* Sleep in BACKOFF for ms, then try START again. */
static void
super_wait(struct super *s, int64_t ms)
{
	s->state = SUPER_BACKOFF;
	s->next = mono_ms() + ms;
}

/* Count a fast death (or a failed start) and schedule the next try. */
static int64_t
super_fail(struct super *s)
{
	int64_t ms;

	s->fails++;
	ms = super_backoff_ms(s->fails);
	super_wait(s, ms);
	return ms;
}

/* Start a lockwatch on path and enter state; on failure retry later. */
static void
super_watch(struct super *s, const char *path, int keep, enum super_state state)
{
	if ((s->watch = lockwatch_start(path, keep)) == NULL) {
		log_warn("cannot watch %s; retrying in %d ms", path, SUPER_RETRY_MS);
		super_wait(s, SUPER_RETRY_MS);
		return;
	}
	s->state = state;
}

/* child_reap() callback: our agent has ended. */
static void
super_on_exit(pid_t pid, int status, void *arg)
{
	struct super *s = arg;

	if (pid == s->child)
		super_child_died(s, status);
}

/* Fork+exec the agent (it is not running). Returns 0 or -1 (logged). */
static int
super_spawn(struct super *s)
{
	struct spawn_opts o;
	struct stat st;
	char err[256];
	pid_t pid;

	if (stat(s->agent_path, &st) == -1) {
		log_warn("cannot start the agent: %s", s->agent_path);
		return -1;
	}
	/* An upgrade may leave the binary 0644 (GoAgent adds +x too). */
	if ((st.st_mode & 0111) != 0111 &&
	    chmod(s->agent_path, (st.st_mode & 07777) | 0111) == -1)
		log_warn("chmod +x %s", s->agent_path);
	/* Own session, stdio on /dev/null, cwd WORKDIR, our environment. */
	memset(&o, 0, sizeof(o));
	o.path = s->agent_path;
	o.argv = s->argv;
	o.cwd = s->workdir;
	o.new_session = 1;
	o.stdin_fd = o.stdout_fd = o.stderr_fd = -1;
	if ((pid = child_spawn(&o, err, sizeof(err))) == -1) {
		log_warnx("cannot start %s: %s", s->agent_path, err);
		return -1;
	}
	child_watch(pid, super_on_exit, s);
	s->child = pid;
	s->child_start = mono_ms();
	s->state = SUPER_CHILD;
	log_info("started agent pid %ld", (long)pid);
	return 0;
}

/*
 * Holding total-lock (fd total, released here): start the agent unless one
 * already holds agent.lock, in which case watch that lock instead.
 */
static void
super_launch(struct super *s, int total)
{
	int64_t ms;
	long pid;
	int fd;

	if ((fd = lock_try(AGENT_LOCK)) == -1) {
		if (errno == EWOULDBLOCK) {
			pid = pidfile_read("agent");
			log_info("an agent is already running (%s held, agent.pid %ld);"
			    " waiting for it to release the lock", AGENT_LOCK, pid);
			super_watch(s, AGENT_LOCK, 0, SUPER_WATCH_AGENT);
		} else {
			log_warn("cannot probe %s; retrying in %d ms", AGENT_LOCK,
			    SUPER_RETRY_MS);
			super_wait(s, SUPER_RETRY_MS);
		}
		lock_release(total);
		return;
	}
	/* W14: the probe is dropped before the agent exists, never after. */
	lock_release(fd);
	if (super_spawn(s) == -1) {
		ms = super_fail(s);
		log_warnx("agent start failed (%d in a row); retrying in %lld ms",
		    s->fails, (long long)ms);
	}
	lock_release(total);
}

/* START: take total-lock at once, or wait for it in a lockwatch. */
static void
super_start(struct super *s)
{
	int total;

	if ((total = lock_try(TOTAL_LOCK)) != -1) {
		super_launch(s, total);
		return;
	}
	if (errno != EWOULDBLOCK) {
		log_warn("cannot open %s; retrying in %d ms", TOTAL_LOCK, SUPER_RETRY_MS);
		super_wait(s, SUPER_RETRY_MS);
		return;
	}
	log_info("%s is held (an upgrade is running): the agent starts when it"
	    " is released", TOTAL_LOCK);
	super_watch(s, TOTAL_LOCK, 1, SUPER_WAIT_TOTAL);
}

/* Our agent ended with status: exit 88, restart now, or back off. */
static void
super_child_died(struct super *s, int status)
{
	int64_t ran = mono_ms() - s->child_start, ms;
	long pid = (long)s->child;
	const char *how = child_status_str(status);

	s->child = -1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == DAEMON_EXIT_CODE) {
		log_error("agent pid %ld ended (%s) after %lld ms (deleted on the server or"
		    " a fatal error): the daemon exits %d", pid, how,
		    (long long)ran, DAEMON_EXIT_CODE);
		s->exit_code = DAEMON_EXIT_CODE;
		return;
	}
	if (ran < s->stable_ms) {
		ms = super_fail(s);
		log_warnx("agent pid %ld ended (%s) after %lld ms (fast death %d in a row,"
		    " stable is %lld ms); restarting in %lld ms", pid, how,
		    (long long)ran, s->fails, (long long)s->stable_ms,
		    (long long)ms);
		return;
	}
	if (s->fails > 0)
		log_info("backoff reset after a stable run");
	s->fails = 0;
	log_warnx("agent pid %ld ended (%s) after %lld ms; restarting now", pid, how,
	    (long long)ran);
	s->state = SUPER_START;
}

/* A lockwatch finished: total-lock is ours, or the foreign agent is gone. */
static void
super_watch_done(struct super *s)
{
	enum super_state was = s->state;
	int fd;

	if (lockwatch_finish(s->watch, &fd) == -1) {
		s->watch = NULL;
		log_warn("waiting for %s failed; retrying in %d ms",
		    was == SUPER_WAIT_TOTAL ? TOTAL_LOCK : AGENT_LOCK, SUPER_RETRY_MS);
		super_wait(s, SUPER_RETRY_MS);
		return;
	}
	s->watch = NULL;
	if (was == SUPER_WAIT_TOTAL) {
		log_info("%s released: starting the agent", TOTAL_LOCK);
		super_launch(s, fd);
		return;
	}
	log_warnx("the agent this daemon did not start has released %s (it"
	    " ended); starting a new agent now", AGENT_LOCK);
	s->state = SUPER_START;
}

/*
 * SIGUSR2, sent by the upgrader after it swapped devopsDaemon: become the
 * new binary in place. The pid stays, so a service manager (systemd,
 * launchd) keeps supervising the daemon across an upgrade; every fd is
 * close-on-exec, so the locks and the lock-watch pipe go with the old
 * image, and the new one re-adopts the running agent through
 * runtime/agent.lock. When exec fails, this daemon simply goes on.
 */
static void
super_reexec(struct super *s)
{
	char *path = xasprintf("%s/%s", s->workdir, DAEMON_BIN);
	char *argv[] = { path, (char *)s->self_arg, NULL };

	log_info("SIGUSR2: re-executing %s in place (pid %ld)", path,
	    (long)getpid());
	execv(path, argv);
	log_warn("SIGUSR2: cannot re-execute %s; this daemon goes on", path);
	free(path);
}

/* Handle one signal taken from the self-pipe. */
static void
super_signal(struct super *s, int signo)
{
	switch (signo) {
	case SIGCHLD:
		child_reap();
		break;
	case SIGTERM:
	case SIGINT:
		if (s->child > 0)
			log_info("%s: the daemon exits; agent pid %ld keeps running",
			    strsignal(signo), (long)s->child);
		else
			log_info("%s: the daemon exits", strsignal(signo));
		s->exit_code = 0;
		break;
	case SIGUSR2:
		super_reexec(s);
		break;
	case SIGHUP:
		if (log_reopen() == -1)
			log_warn("SIGHUP: cannot reopen %s", DAEMON_LOG);
		else
			log_info("SIGHUP: log file reopened");
		break;
	default:
		break;
	}
}

/* Milliseconds until the loop must act without an event (-1 = never). */
static int
super_timeout(const struct super *s)
{
	int64_t left;

	if (s->state != SUPER_BACKOFF)
		return -1;
	left = s->next - mono_ms();
	if (left < 0)
		return 0;
	return left > 3600000 ? 3600000 : (int)left;
}

/* Set up the state and signals, then run the loop until it has an exit code. */
int
super_run(const char *workdir, int debug_arg, int64_t stable_ms)
{
	static const int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR2, 0 };
	struct super s;
	struct pollfd pfd[2];
	int signo, n;

	memset(&s, 0, sizeof(s));
	s.state = SUPER_START;
	s.workdir = workdir;
	s.agent_path = xasprintf("%s/%s", workdir, AGENT_BIN);
	/* A HEAD agent treats any argument as a subcommand and exits at once;
	 * the agent reads its debug switch from WORKDIR/.debug itself. */
	s.argv[0] = s.agent_path;
	s.argv[1] = NULL;
	s.self_arg = debug_arg ? "debug" : NULL;
	s.child = -1;
	s.stable_ms = stable_ms;
	s.exit_code = -1;
	if (sig_init(sigs) == -1)
		fatal("cannot install signal handlers");

	for (;;) {
		while ((signo = sig_next()) != 0)
			super_signal(&s, signo);
		if (s.exit_code >= 0)
			break;
		if (s.state == SUPER_BACKOFF && mono_ms() >= s.next)
			s.state = SUPER_START;
		if (s.state == SUPER_START)
			super_start(&s);

		pfd[0].fd = sig_fd();
		pfd[0].events = POLLIN;
		pfd[1].fd = s.watch != NULL ? lockwatch_fd(s.watch) : -1;
		pfd[1].events = POLLIN;
		pfd[0].revents = pfd[1].revents = 0;
		n = poll(pfd, 2, super_timeout(&s));
		if (n == -1 && errno != EINTR)
			fatal("poll");
		if (n > 0 && s.watch != NULL && (pfd[1].revents & (POLLIN | POLLHUP)))
			super_watch_done(&s);
	}
	free(s.agent_path);
	return s.exit_code;
}
