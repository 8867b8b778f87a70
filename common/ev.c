/* ev.c - timers, fd watchers, self-pipe signals, curl multi in one poll. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ev.h"
#include "log.h"
#include "util.h"

#define EV_MAX_FDS	64
#define EV_MAX_SIGS	8

static struct timer *timers;
static int sigpipe[2] = { -1, -1 };
static volatile sig_atomic_t stopping;

static struct {
	int		 fd;
	short		 events;
	ev_fd_fn	 fn;
	void		*arg;
} fds[EV_MAX_FDS];
static unsigned int nfds;

static struct {
	int		 signo;
	ev_sig_fn	 fn;
	void		*arg;
} sigs[EV_MAX_SIGS];
static unsigned int nsigs;

/* poll(2) with the poller signature. */
static int
plain_wait(struct pollfd *pfds, unsigned int n, int timeout_ms)
{
	return poll(pfds, n, timeout_ms);
}

static int (*poller_wait)(struct pollfd *, unsigned int, int) = plain_wait;
static void (*poller_dispatch)(void);

/* Let another module (HTTP) do the waiting for the loop. */
void
ev_set_poller(int (*wait)(struct pollfd *, unsigned int, int), void (*dispatch)(void))
{
	poller_wait = wait != NULL ? wait : plain_wait;
	poller_dispatch = dispatch;
}

/* Async-signal-safe: only write the number to the pipe. */
static void
sig_handler(int signo)
{
	int saved = errno;
	unsigned char b = (unsigned char)signo;

	(void)!write(sigpipe[1], &b, 1);
	errno = saved;
}

/* Create the self-pipe that turns signals into loop events. */
int
ev_init(void)
{
	int i;

	if (sigpipe[0] != -1)
		return 0;
	if (pipe(sigpipe) == -1)
		return -1;
	for (i = 0; i < 2; i++) {
		fcntl(sigpipe[i], F_SETFD, FD_CLOEXEC);
		fcntl(sigpipe[i], F_SETFL, O_NONBLOCK);
	}
	return 0;
}

/* Set up a timer, not armed. */
void
timer_init(struct timer *t, const char *name, void (*fn)(void *), void *arg)
{
	memset(t, 0, sizeof(*t));
	t->name = name;
	t->fn = fn;
	t->arg = arg;
}

/* Disarm a timer. */
void
timer_cancel(struct timer *t)
{
	struct timer **pp;

	if (!t->armed)
		return;
	for (pp = &timers; *pp != NULL; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	t->armed = 0;
	t->next = NULL;
}

/* Arm a timer delay_ms from now. */
void
timer_set(struct timer *t, int64_t delay_ms)
{
	timer_cancel(t);
	t->due = mono_ms() + (delay_ms > 0 ? delay_ms : 0);
	t->armed = 1;
	t->next = timers;
	timers = t;
}

/* Allow a timer to run late, to share a wakeup (ev.h). */
void
timer_set_slack(struct timer *t, int64_t slack_ms)
{
	t->slack = slack_ms > 0 ? slack_ms : 0;
}

/* Milliseconds until a timer fires, or -1. */
int64_t
timer_remaining(const struct timer *t)
{
	int64_t left;

	if (!t->armed)
		return -1;
	left = t->due - mono_ms();
	return left > 0 ? left : 0;
}

/* Watch an fd from the loop. */
int
ev_fd_add(int fd, short events, ev_fd_fn fn, void *arg)
{
	if (nfds >= EV_MAX_FDS) {
		errno = EMFILE;
		return -1;
	}
	fds[nfds].fd = fd;
	fds[nfds].events = events;
	fds[nfds].fn = fn;
	fds[nfds].arg = arg;
	nfds++;
	return 0;
}

/* Stop watching an fd. */
void
ev_fd_del(int fd)
{
	unsigned int i;

	for (i = 0; i < nfds; i++)
		if (fds[i].fd == fd) {
			fds[i] = fds[--nfds];
			return;
		}
}

/* Catch a signal; its callback runs from the loop. */
int
ev_signal(int signo, ev_sig_fn fn, void *arg)
{
	struct sigaction sa;

	if (nsigs >= EV_MAX_SIGS) {
		errno = ENOSPC;
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = sig_handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(signo, &sa, NULL) == -1)
		return -1;
	sigs[nsigs].signo = signo;
	sigs[nsigs].fn = fn;
	sigs[nsigs].arg = arg;
	nsigs++;
	return 0;
}

/* Run every signal callback whose number arrived on the pipe. */
static void
drain_signals(void)
{
	unsigned char buf[64];
	ssize_t n, i;
	unsigned int k;

	while ((n = read(sigpipe[0], buf, sizeof(buf))) > 0)
		for (i = 0; i < n; i++)
			for (k = 0; k < nsigs; k++)
				if (sigs[k].signo == buf[i])
					sigs[k].fn(buf[i], sigs[k].arg);
}

/* Fire due timers; a callback may re-arm its own or other timers. */
static void
run_timers(void)
{
	int64_t now = mono_ms();
	struct timer *t;
	int fired;

	do {
		fired = 0;
		for (t = timers; t != NULL; t = t->next) {
			if (t->due <= now) {
				timer_cancel(t);
				t->fn(t->arg);
				fired = 1;
				break;	/* the list may have changed */
			}
		}
	} while (fired && !stopping);
}

/* One loop turn: wait for the earliest deadline or an event. */
void
ev_run_once(int max_wait_ms)
{
	struct pollfd pfd[EV_MAX_FDS + 1];
	int64_t wait = max_wait_ms, now = mono_ms();
	unsigned int i, n;
	struct timer *t;

	for (t = timers; t != NULL; t = t->next) {
		int64_t left = t->due + t->slack - now;
		if (left < wait)
			wait = left < 0 ? 0 : left;
	}
	pfd[0].fd = sigpipe[0];
	pfd[0].events = POLLIN;
	pfd[0].revents = 0;	/* poll() leaves it untouched when interrupted */
	n = nfds;
	for (i = 0; i < n; i++) {
		pfd[i + 1].fd = fds[i].fd;
		pfd[i + 1].events = fds[i].events;
		pfd[i + 1].revents = 0;
	}
	if (poller_wait(pfd, n + 1, (int)wait) == -1 && errno != EINTR)
		log_warnx("event loop: poll failed");
	if (pfd[0].revents)
		drain_signals();
	/* Callbacks may add or remove watchers: match by fd again. */
	for (i = 1; i <= n; i++) {
		unsigned int k;
		if (pfd[i].revents == 0)
			continue;
		for (k = 0; k < nfds; k++)
			if (fds[k].fd == pfd[i].fd) {
				fds[k].fn(fds[k].fd, pfd[i].revents, fds[k].arg);
				break;
			}
	}
	if (poller_dispatch != NULL)
		poller_dispatch();
	run_timers();
}

/* Run loop turns until ev_stop(). */
int
ev_run(void)
{
	stopping = 0;
	while (!stopping)
		ev_run_once(60000);
	return 0;
}

/* Make ev_run() return after this turn. */
void
ev_stop(void)
{
	stopping = 1;
}
