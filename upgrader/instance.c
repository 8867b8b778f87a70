/*
 * instance.c - the upgrader's view of the daemon and agent processes:
 * running (lock held), verified stop, detached start, health watch.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "lock.h"
#include "log.h"
#include "proc.h"
#include "upgrader.h"
#include "util.h"

const struct instance INST_AGENT = { "agent", AGENT_BIN, AGENT_GRACE_MS };
const struct instance INST_DAEMON = { "daemon", DAEMON_BIN, DAEMON_GRACE_MS };

#define POLL_MS		100	/* health-check poll interval */

/* Sleep ms, resuming after signals (the upgrader has no event loop). */
void
msleep(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* runtime/<name>.lock into buf. */
static const char *
lock_path(const struct instance *in, char *buf, size_t size)
{
	snprintf(buf, size, RUNTIME_DIR "/%s.lock", in->name);
	return buf;
}

/* Held lock = running (§3.4). */
int
instance_running(const struct instance *in)
{
	char path[128];

	return lock_is_held(lock_path(in, path, sizeof(path)));
}

/* Wait up to ms for the instance's lock to be free (it exited). */
static int
wait_gone(const struct instance *in, int ms)
{
	char path[128];
	int fd;

	/* Taking the lock proves the holder is gone; dropped at once. */
	fd = lock_wait(lock_path(in, path, sizeof(path)), ms);
	if (fd == -1)
		return -1;
	lock_release(fd);
	return 0;
}

/* The pid of runtime/<name>.pid when it runs our binary, else -1. */
static pid_t
verified_pid(const struct instance *in)
{
	long pid = pidfile_read(in->name);

	if (pid <= 0 || !proc_exe_is((pid_t)pid, in->bin))
		return -1;
	return (pid_t)pid;
}

/* Verified SIGTERM, wait for the lock, SIGKILL as a last resort (W3). */
int
instance_stop(const struct instance *in, int *stopped)
{
	pid_t pid;

	if (stopped != NULL)
		*stopped = 0;
	if (instance_running(in) != 1)
		return 0;
	if ((pid = verified_pid(in)) == -1) {
		/* Maybe it is exiting right now (the agent after the hand-off). */
		if (wait_gone(in, 2000) == 0)
			return 0;
		log_error("runtime/%s.lock is held, but runtime/%s.pid (%ld) is not"
		    " a running %s: not signalling it (W3)", in->name, in->name,
		    pidfile_read(in->name), in->bin);
		return -1;
	}
	log_info("stopping the %s, pid %ld (SIGTERM)", in->name, (long)pid);
	if (kill(pid, SIGTERM) == -1 && errno != ESRCH) {
		log_warn("kill %ld", (long)pid);
		return -1;
	}
	if (stopped != NULL)
		*stopped = 1;
	if (wait_gone(in, in->grace_ms) == 0) {
		log_info("the %s (pid %ld) has exited", in->name, (long)pid);
		return 0;
	}
	/* Re-check the identity before the harder signal: pids get reused. */
	if (proc_exe_is(pid, in->bin)) {
		log_warnx("the %s (pid %ld) ignored SIGTERM for %d ms: SIGKILL",
		    in->name, (long)pid, in->grace_ms);
		(void)kill(pid, SIGKILL);
	}
	if (wait_gone(in, KILL_WAIT_MS) == 0)
		return 0;
	log_error("runtime/%s.lock is still held after SIGKILL of pid %ld",
	    in->name, (long)pid);
	return -1;
}

/* The verified pid of the running daemon (before the swap). */
pid_t
daemon_pid(unsigned long long *start)
{
	pid_t pid = instance_running(&INST_DAEMON) == 1 ? verified_pid(&INST_DAEMON) : -1;

	*start = pid > 0 ? proc_start_time(pid) : 0;
	return *start != 0 ? pid : -1;
}

/* SIGUSR2: the daemon execs the file now at DAEMON_BIN; wait until it does. */
int
daemon_reexec(pid_t pid, unsigned long long start, int timeout_ms)
{
	int64_t deadline = mono_ms() + timeout_ms;

	/*
	 * No probe of runtime/daemon.lock here: the new image takes it right
	 * after exec, and a probe at that instant would make it exit (W14).
	 */
	if (!proc_same(pid, start) || kill(pid, SIGUSR2) == -1) {
		log_warnx("the daemon (pid %ld) is gone; cannot re-execute it",
		    (long)pid);
		return -1;
	}
	log_info("asked the daemon (pid %ld) to re-execute %s in place",
	    (long)pid, DAEMON_BIN);
	while (!proc_exe_same_file(pid, DAEMON_BIN)) {
		if (!proc_same(pid, start) || mono_ms() >= deadline) {
			log_error("the daemon (pid %ld) did not re-execute %s",
			    (long)pid, DAEMON_BIN);
			return -1;
		}
		msleep(POLL_MS);
	}
	log_info("the daemon (pid %ld) now runs the new %s", (long)pid, DAEMON_BIN);
	return 0;
}

/* Start the daemon detached; it waits for total-lock in CheckProcess. */
int
daemon_start(const char *workdir)
{
	char *path = xasprintf("%s/%s", workdir, DAEMON_BIN), err[256];
	char *argv[] = { path, NULL };
	pid_t pid;

	pid = child_spawn_detached(path, argv, workdir, err, sizeof(err));
	if (pid == -1)
		log_error("cannot start %s: %s", path, err);
	else
		log_info("started %s, pid %ld", path, (long)pid);
	free(path);
	return pid == -1 ? -1 : 0;
}

/* Poll until a new agent holds agent.lock and its pid file names it. */
pid_t
agent_wait_up(pid_t old_pid, unsigned long long old_start, int timeout_ms,
    unsigned long long *start)
{
	int64_t deadline = mono_ms() + timeout_ms;
	unsigned long long st;
	pid_t pid;

	for (;;) {
		/*
		 * The probe takes agent.lock for an instant when it is free; an
		 * agent starting in that instant exits and is restarted by the
		 * daemon, which only delays this wait (never a false "healthy").
		 */
		if (instance_running(&INST_AGENT) == 1 &&
		    (pid = verified_pid(&INST_AGENT)) != -1) {
			st = proc_start_time(pid);
			if (st != 0 && (pid != old_pid || st != old_start)) {
				*start = st;
				return pid;
			}
		}
		if (mono_ms() >= deadline)
			return -1;
		msleep(POLL_MS);
	}
}

/* Poll that one agent process keeps agent.lock for ms. */
int
agent_stays_up(pid_t pid, unsigned long long start, int64_t ms)
{
	int64_t deadline = mono_ms() + ms;

	for (;;) {
		/* Held by someone: while our pid lives it can only be ours. */
		if (!proc_same(pid, start) || instance_running(&INST_AGENT) != 1)
			return 0;
		if (mono_ms() >= deadline)
			return 1;
		msleep(POLL_MS);
	}
}
