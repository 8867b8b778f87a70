/* lockwatch.c - one helper thread blocked in flock(2), woken through a pipe. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "lock.h"
#include "lockwatch.h"
#include "util.h"

struct lockwatch {
	pthread_t	 thread;
	char		*path;
	int		 keep;
	int		 pipe[2];
	int		 fd;	/* result: held lock (keep) or -1; set by the thread */
	int		 err;	/* result: errno of a failed wait, else 0 */
};

/* A close-on-exec pipe (pipe2 is not portable to macOS). */
static int
lockwatch_pipe(int fds[2])
{
	if (pipe(fds) == -1)
		return -1;
	if (fcntl(fds[0], F_SETFD, FD_CLOEXEC) == -1 ||
	    fcntl(fds[1], F_SETFD, FD_CLOEXEC) == -1) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	return 0;
}

/* Thread body: block on the lock, keep or drop it, then wake the loop. */
static void *
lockwatch_main(void *arg)
{
	struct lockwatch *w = arg;
	char c = 1;
	int fd;

	fd = lock_wait(w->path, -1);
	if (fd == -1) {
		w->err = errno;
	} else if (!w->keep) {
		/* Drop it before anything else: an agent starting right now
		 * must find the lock free (W14). */
		lock_release(fd);
		fd = -1;
	}
	w->fd = fd;
	while (write(w->pipe[1], &c, 1) == -1 && errno == EINTR)
		;
	return NULL;
}

/* Allocate the watch and start its thread with every signal blocked. */
struct lockwatch *
lockwatch_start(const char *path, int keep)
{
	struct lockwatch *w;
	sigset_t all, old;
	int rc;

	w = xcalloc(1, sizeof(*w));
	w->path = xstrdup(path);
	w->keep = keep;
	w->fd = -1;
	if (lockwatch_pipe(w->pipe) == -1)
		goto fail;
	/* The thread inherits a full mask: signals go to the loop thread. */
	sigfillset(&all);
	(void)pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&w->thread, NULL, lockwatch_main, w);
	(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		close(w->pipe[0]);
		close(w->pipe[1]);
		errno = rc;
		goto fail;
	}
	return w;
fail:
	rc = errno;
	free(w->path);
	free(w);
	errno = rc;
	return NULL;
}

/* The pipe the loop polls. */
int
lockwatch_fd(const struct lockwatch *w)
{
	return w->pipe[0];
}

/* The watched path. */
const char *
lockwatch_path(const struct lockwatch *w)
{
	return w->path;
}

/* Join the thread, hand its result over, free the watch. */
int
lockwatch_finish(struct lockwatch *w, int *fd)
{
	int err;

	(void)pthread_join(w->thread, NULL);
	close(w->pipe[0]);
	close(w->pipe[1]);
	*fd = w->fd;
	err = w->err;
	free(w->path);
	free(w);
	if (err != 0) {
		errno = err;
		return -1;
	}
	return 0;
}
