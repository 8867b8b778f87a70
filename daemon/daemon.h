/*
 * daemon.h - devopsDaemon internals shared by main.c, supervise.c, stop.c.
 *
 * See docs/devopsDaemon.md for the behaviour these implement.
 */
#ifndef DAEMON_H
#define DAEMON_H

#include <stddef.h>
#include <stdint.h>

#define DAEMON_LOG		"logs/devopsDaemon.log"
#define AGENT_LOCK		"runtime/agent.lock"
#define AGENT_BIN		"devopsAgent"
#define DAEMON_BIN		"devopsDaemon"
#define DAEMON_EXIT_CODE	88	/* agent deleted on server / fatal error */

/* Crash-loop protection (issue 3): backoff 1 s, 2 s, 4 s ... 60 s. */
#define SUPER_STABLE_MS		10000	/* a run this long resets the backoff */
#define SUPER_BACKOFF_MIN_MS	1000
#define SUPER_BACKOFF_MAX_MS	60000
#define SUPER_RETRY_MS		1000	/* after a local error (open, thread) */
#define SUPER_STABLE_ENV	"DEVOPS_DAEMON_STABLE_MS"

#define STOP_DAEMON_GRACE_MS	5000
#define STOP_AGENT_GRACE_MS	15000
#define STOP_GRACE_ENV		"DEVOPS_STOP_GRACE_SEC"

/**
 * Supervise the agent until a signal or the agent's exit 88 ends it.
 * workdir: absolute install directory (the cwd already), borrowed.
 * debug_arg: the daemon was started with "debug" (kept across a SIGUSR2
 * re-exec; the agent is always started with no argument and reads
 * WORKDIR/.debug itself). stable_ms: a run at least this
 * long resets the crash-loop backoff. Returns the daemon's exit code: 0 after
 * SIGTERM/SIGINT (the agent keeps running), 88 after the agent exited 88.
 */
int super_run(const char *workdir, int debug_arg, int64_t stable_ms);

/**
 * `devopsDaemon stop-all`: stop the daemon of workdir, then its agent.
 * Each pid comes from runtime/<name>.pid and is signalled only when it is
 * alive and runs workdir/<binary> (W3); SIGTERM, a grace period, SIGKILL.
 * Build workers (own sessions) are never signalled. Returns 0 when both are
 * stopped or were not running, 1 when one survived SIGKILL.
 */
int stop_all(const char *workdir);

#endif
