/*
 * probe.h - run a short probe command (`java --version`, `devopsAgent
 * version`, the worker-version class) without blocking the event loop.
 *
 * The probe runs in its own session and process group with stdin on
 * /dev/null and stdout+stderr captured (bounded). Its deadline covers the
 * whole run: a probe that closes its output and keeps running, or that
 * never ends, is killed with its whole process group when the deadline
 * passes. The callback runs from the event loop once the probe was reaped
 * and its output ended (or was abandoned at the deadline).
 */
#ifndef PROBE_H
#define PROBE_H

#include <stddef.h>
#include <stdint.h>

struct probe_result {
	int		 ok;		/* exited by itself within the deadline */
	int		 status;	/* wait status (valid when reaped) */
	int		 timed_out;	/* killed at the deadline */
	const char	*out;		/* captured stdout+stderr, NUL-terminated;
					   borrowed for the callback only */
	size_t		 len;		/* bytes in out */
};

typedef void (*probe_fn)(const struct probe_result *r, void *arg);

/**
 * Start argv (argv[0] is the path; copied as needed) in cwd (NULL: inherit)
 * with a deadline of timeout_ms for the whole run and at most max_out bytes
 * of output kept (the rest is read and dropped). fn(result, arg) is called
 * exactly once from the event loop. Needs child_reap() on SIGCHLD (ev.h).
 * Returns 0, or -1 when the probe cannot start (fn is then not called; the
 * reason is logged).
 */
int probe_run(char *const argv[], const char *cwd, int64_t timeout_ms,
    size_t max_out, probe_fn fn, void *arg);

/**
 * The process is about to exit: SIGKILL the process group of every probe
 * still running, so that none outlives the agent that would have enforced
 * its deadline. Callbacks do not run any more.
 */
void probe_kill_all(void);

/** Probes still running (their callbacks are pending). */
int probe_running(void);

#endif
