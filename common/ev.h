/*
 * ev.h - the one event loop of a process (STYLE.md §4).
 *
 * Timers run on CLOCK_MONOTONIC; the loop sleeps until the earliest deadline
 * or until a watched fd, a signal or (through ev_set_poller) an HTTP
 * transfer needs attention, so requests never block the loop. Signal handlers only write the signal number to a
 * self-pipe; registered signal callbacks run from the loop.
 */
#ifndef EV_H
#define EV_H

#include <stdint.h>

struct timer {
	const char	*name;		/* for logs */
	void		(*fn)(void *arg);
	void		*arg;
	int64_t		 due;		/* mono_ms() deadline */
	int		 armed;
	struct timer	*next;
	int64_t		 slack;		/* ms it may run late (idle cost) */
};

typedef void (*ev_fd_fn)(int fd, short revents, void *arg);
typedef void (*ev_sig_fn)(int signo, void *arg);

#include <poll.h>

/** Set up the self-pipe. Call once before anything else. 0 or -1/errno. */
int ev_init(void);

/** Initialise t to call fn(arg); not armed. */
void timer_init(struct timer *t, const char *name, void (*fn)(void *), void *arg);
/** Arm (or re-arm) t to fire once, delay_ms from now (<= 0: next turn). */
void timer_set(struct timer *t, int64_t delay_ms);
/** Disarm t (no-op when not armed). */
void timer_cancel(struct timer *t);
/** Milliseconds until t fires; -1 when not armed. */
int64_t timer_remaining(const struct timer *t);

/* --- timer slack (idle cost) --- */
/**
 * Let t run up to slack_ms (>= 0) after its deadline, so that it shares a
 * wakeup the loop has anyway (an HTTP answer, another timer) instead of
 * waking the process for itself: once due it runs at the next loop turn,
 * and the loop sleeps at most until deadline + slack for it. For periodic
 * housekeeping whose exact moment does not matter. Kept across timer_set;
 * 0 (the default of timer_init) runs t on time.
 */
void timer_set_slack(struct timer *t, int64_t slack_ms);

/** Watch fd for poll(2) events; fn runs from the loop. Max 64 fds. 0 or -1. */
int ev_fd_add(int fd, short events, ev_fd_fn fn, void *arg);
/** Stop watching fd. */
void ev_fd_del(int fd);

/**
 * Catch signo (SA_RESTART); fn(signo, arg) runs from the loop, not from the
 * handler. Returns 0 or -1/errno.
 */
int ev_signal(int signo, ev_sig_fn fn, void *arg);

/**
 * Multiplex more work into the loop's wait: wait() must behave like poll(2)
 * on the given fds (the agent passes http_wait, which also waits on curl's
 * sockets) and dispatch() runs after every wake-up (http_dispatch). Without
 * a poller the loop uses plain poll(2), so processes without HTTP (the
 * daemon) do not link libcurl.
 */
void ev_set_poller(int (*wait)(struct pollfd *fds, unsigned int n, int timeout_ms),
    void (*dispatch)(void));

/** Run until ev_stop(). Returns 0. */
int ev_run(void);
/** Make ev_run() return after the current turn. */
void ev_stop(void);
/** Run one turn waiting at most max_wait_ms; for tests and drains. */
void ev_run_once(int max_wait_ms);

#endif
