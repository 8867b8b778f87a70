/* lock.c - flock-based instance locks and pid files (CheckProcess). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "lock.h"
#include "util.h"

/* Open (create) a lock file; never inherited by children. */
static int
lock_open(const char *path)
{
	return open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
}

/* Take the flock without waiting. */
int
lock_try(const char *path)
{
	int fd, saved;

	if ((fd = lock_open(path)) == -1)
		return -1;
	while (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno == EINTR)
			continue;
		saved = errno == EAGAIN ? EWOULDBLOCK : errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* Take the flock, waiting at most timeout_ms. */
int
lock_wait(const char *path, int timeout_ms)
{
	int64_t deadline = mono_ms() + timeout_ms;
	struct timespec ts = { 0, 10L * 1000 * 1000 };
	int fd;

	if (timeout_ms < 0) {
		if ((fd = lock_open(path)) == -1)
			return -1;
		while (flock(fd, LOCK_EX) == -1) {
			if (errno != EINTR) {
				int saved = errno;
				close(fd);
				errno = saved;
				return -1;
			}
		}
		return fd;
	}
	/* Bounded wait: poll with a non-blocking lock every 10 ms. */
	for (;;) {
		fd = lock_try(path);
		if (fd != -1 || errno != EWOULDBLOCK)
			return fd;
		if (mono_ms() >= deadline) {
			errno = ETIMEDOUT;
			return -1;
		}
		nanosleep(&ts, NULL);
	}
}

/* Drop a lock (close its fd). */
void
lock_release(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* Probe whether another process holds the lock. */
int
lock_is_held(const char *path)
{
	int fd = lock_try(path);

	if (fd != -1) {
		lock_release(fd);
		return 0;
	}
	return errno == EWOULDBLOCK ? 1 : -1;
}

/* GoAgent's CheckProcess: instance lock, then the pid file. */
int
check_process(const char *name, int total_timeout_ms)
{
	char path[256], pid[32];
	int fd, total, n, saved;

	if (fs_mkdir_p(RUNTIME_DIR, 0755) == -1)
		return -1;
	snprintf(path, sizeof(path), RUNTIME_DIR "/%s.lock", name);
	if ((fd = lock_try(path)) == -1)
		return -1;
	if ((total = lock_wait(TOTAL_LOCK, total_timeout_ms)) == -1)
		goto fail;
	snprintf(path, sizeof(path), RUNTIME_DIR "/%s.pid", name);
	n = snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	if (fs_write_atomic(path, pid, (size_t)n, 0644) == -1) {
		saved = errno;
		lock_release(total);
		errno = saved;
		goto fail;
	}
	lock_release(total);
	return fd;
fail:
	saved = errno;
	lock_release(fd);
	errno = saved;
	return -1;
}

/* The pid in runtime/<name>.pid, or -1. */
long
pidfile_read(const char *name)
{
	char path[256], *buf;
	long long v;

	snprintf(path, sizeof(path), RUNTIME_DIR "/%s.pid", name);
	if (fs_read_file(path, 64, &buf, NULL) == -1)
		return -1;
	if (str_to_ll(buf, &v) == -1 || v <= 0) {
		free(buf);
		return -1;
	}
	free(buf);
	return (long)v;
}
