/* sig.c - self-pipe signal delivery for the daemon loop. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "sig.h"

#define SIG_MAX	65	/* above every signal number we ever catch */

static int			sig_pipe[2] = { -1, -1 };
static volatile sig_atomic_t	sig_pending[SIG_MAX];

/* The handler: mark the signal, wake the loop. Async-signal-safe only. */
static void
sig_handler(int signo)
{
	int saved = errno;
	char c = 0;

	if (signo > 0 && signo < SIG_MAX)
		sig_pending[signo] = 1;
	/* A full pipe already guarantees a wake-up: ignore EAGAIN. */
	(void)!write(sig_pipe[1], &c, 1);
	errno = saved;
}

/* Make fd non-blocking and close-on-exec. */
static int
sig_fd_setup(int fd)
{
	int fl;

	if ((fl = fcntl(fd, F_GETFL)) == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
		return -1;
	if ((fl = fcntl(fd, F_GETFD)) == -1 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) == -1)
		return -1;
	return 0;
}

/* Create the self-pipe once, then install the handler for each signal. */
int
sig_init(const int *sigs)
{
	struct sigaction sa;

	if (sig_pipe[0] == -1) {
		if (pipe(sig_pipe) == -1)
			return -1;
		if (sig_fd_setup(sig_pipe[0]) == -1 || sig_fd_setup(sig_pipe[1]) == -1)
			return -1;
	}
	for (; *sigs != 0; sigs++) {
		if (*sigs <= 0 || *sigs >= SIG_MAX) {
			errno = EINVAL;
			return -1;
		}
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = sig_handler;
		sigfillset(&sa.sa_mask);
		sa.sa_flags = SA_RESTART | (*sigs == SIGCHLD ? SA_NOCLDSTOP : 0);
		if (sigaction(*sigs, &sa, NULL) == -1)
			return -1;
	}
	return 0;
}

/* The self-pipe's read end. */
int
sig_fd(void)
{
	return sig_pipe[0];
}

/* Drain the pipe; return and clear the lowest pending signal. */
int
sig_next(void)
{
	char buf[64];
	int i;

	if (sig_pipe[0] != -1)
		while (read(sig_pipe[0], buf, sizeof(buf)) > 0)
			;
	for (i = 1; i < SIG_MAX; i++) {
		if (sig_pending[i]) {
			sig_pending[i] = 0;
			return i;
		}
	}
	return 0;
}
