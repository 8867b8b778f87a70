/*
 * sig.h - the daemon's signals as loop events through a self-pipe (s6 habit).
 *
 * common/ev.c has a self-pipe too, but its loop waits in curl_multi_poll()
 * and needs http_init(); the daemon talks to no server, so it runs its own
 * two-fd poll() loop and this small module (kept here, not in common/).
 *
 * sig_init() installs, for each listed signal, a handler that only records
 * the signal in a sig_atomic_t flag and writes one byte to a non-blocking,
 * close-on-exec pipe. The loop polls sig_fd() for POLLIN and then calls
 * sig_next() until it returns 0. Nothing else runs in signal context.
 *
 * Portable (Linux, macOS): no signalfd. exec() resets caught signals in
 * children; child_spawn() blocks signals across fork().
 */
#ifndef SIG_H
#define SIG_H

/**
 * Catch every signal in the 0-terminated list sigs (e.g. SIGCHLD, SIGTERM,
 * SIGINT, SIGHUP). SIGCHLD is installed with SA_NOCLDSTOP. Call once per
 * process, before any thread is started. Returns 0, or -1 with errno from
 * pipe(2)/sigaction(2).
 */
int sig_init(const int *sigs);

/** Read end of the self-pipe, to poll for POLLIN; -1 before sig_init(). */
int sig_fd(void);

/**
 * Drain the self-pipe and return one pending signal number (lowest first),
 * clearing it; 0 when none is pending. Several deliveries of one signal
 * before this call collapse into one event (like real signals do).
 */
int sig_next(void);

#endif
