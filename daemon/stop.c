/*
 * stop.c - `devopsDaemon stop-all`: stop the daemon, then the agent.
 *
 * A pid file may be stale and name an unrelated process (W3), so a pid is
 * signalled only when it is alive and runs this install's binary. On Linux
 * the pid is pinned with a pidfd first: the identity check and the signals
 * then apply to the same process even if the pid is reused in between, and
 * the wait for its end is a poll() on the pidfd.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

#include "daemon.h"
#include "lock.h"
#include "log.h"
#include "proc.h"
#include "util.h"

/* Open a pidfd for pid, or -1 when the kernel has none (then kill(2) is used). */
static int
stop_pidfd(pid_t pid)
{
#if defined(__linux__) && defined(SYS_pidfd_open)
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

/* Send signo to pid, through pidfd when there is one. */
static int
stop_signal(pid_t pid, int pidfd, int signo)
{
#if defined(__linux__) && defined(SYS_pidfd_send_signal)
	if (pidfd != -1)
		return (int)syscall(SYS_pidfd_send_signal, pidfd, signo, NULL, 0);
#else
	(void)pidfd;
#endif
	return kill(pid, signo);
}

/* Wait up to ms for pid to end. Returns 1 when it ended, 0 on timeout. */
static int
stop_wait(pid_t pid, int pidfd, int ms)
{
	int64_t deadline = mono_ms() + ms, left;
	struct pollfd pfd;

	for (;;) {
		if (!proc_alive(pid))
			return 1;
		left = deadline - mono_ms();
		if (left <= 0)
			return 0;
		if (pidfd != -1) {
			pfd.fd = pidfd;
			pfd.events = POLLIN;
			if (poll(&pfd, 1, (int)left) == 1)
				return 1;
		} else {
			(void)poll(NULL, 0, left < 20 ? (int)left : 20);
		}
	}
}

/* Stop the process named by runtime/<name>.pid if it runs workdir/bin. */
static int
stop_one(const char *workdir, const char *name, const char *bin, int grace_ms)
{
	char *exe = xasprintf("%s/%s", workdir, bin);
	long pid = pidfile_read(name);
	int pidfd = -1, rc = 0;

	if (pid <= 0 || pid == (long)getpid()) {
		log_info("%s: no valid runtime/%s.pid: nothing to stop", name, name);
		goto out;
	}
	pidfd = stop_pidfd((pid_t)pid);
	if (!proc_exe_is((pid_t)pid, exe)) {
		log_info("%s: pid %ld from runtime/%s.pid is not %s: not signalled",
		    name, pid, name, exe);
		goto out;
	}
	log_info("%s: sending SIGTERM to pid %ld", name, pid);
	if (stop_signal((pid_t)pid, pidfd, SIGTERM) == -1) {
		if (errno != ESRCH) {
			log_warn("%s: kill %ld", name, pid);
			rc = -1;
		}
		goto out;
	}
	if (stop_wait((pid_t)pid, pidfd, grace_ms)) {
		log_info("%s: pid %ld stopped", name, pid);
		goto out;
	}
	log_warnx("%s: pid %ld still runs after %d ms: sending SIGKILL", name, pid,
	    grace_ms);
	if (stop_signal((pid_t)pid, pidfd, SIGKILL) == -1 && errno != ESRCH)
		log_warn("%s: kill -9 %ld", name, pid);
	if (!stop_wait((pid_t)pid, pidfd, 2000)) {
		log_error("%s: pid %ld survived SIGKILL", name, pid);
		rc = -1;
	}
out:
	if (pidfd != -1)
		close(pidfd);
	free(exe);
	return rc;
}

/* Grace period for the agent: $DEVOPS_STOP_GRACE_SEC or the default. */
static int
stop_agent_grace_ms(void)
{
	const char *v = getenv(STOP_GRACE_ENV);
	long long sec;

	if (v == NULL || *v == '\0')
		return STOP_AGENT_GRACE_MS;
	if (str_to_ll(v, &sec) == -1 || sec < 0 || sec > 3600) {
		log_warnx("ignoring %s=%s (want 0..3600 seconds)", STOP_GRACE_ENV, v);
		return STOP_AGENT_GRACE_MS;
	}
	return (int)sec * 1000;
}

/* Stop the daemon, then the agent; 1 when either survived. */
int
stop_all(const char *workdir)
{
	int rc = 0;

	/* The daemon first, or it would restart the agent we stop. */
	if (stop_one(workdir, "daemon", DAEMON_BIN, STOP_DAEMON_GRACE_MS) == -1)
		rc = 1;
	if (stop_one(workdir, "agent", AGENT_BIN, stop_agent_grace_ms()) == -1)
		rc = 1;
	return rc;
}
