/*
 * enospc_shim.c - LD_PRELOAD shim for tests/integration/test_faults.py:
 * "the disk is full" for chosen files only.
 *
 *   ENOSPC_MATCH  '|'-separated substrings of a file's path
 *                 (/proc/self/fd/<fd>), e.g. ".agent.properties|runtime/builds/"
 *   ENOSPC_FLAG   a path; the fault is active only while that file exists,
 *                 so a test can switch it on and off at run time
 *
 * While active, write, writev, pwrite, fsync and fdatasync on a matching fd
 * fail with ENOSPC and write nothing, as on a full file system. Everything
 * else goes to the next definition (libc, or the sanitizer runtime).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* 1 when the fault is on and fd names a matching path. */
static int
fault_on(int fd)
{
	const char *match = getenv("ENOSPC_MATCH"), *flag = getenv("ENOSPC_FLAG");
	char link[64], path[4096];
	const char *p;
	ssize_t n;
	int saved = errno;

	if (match == NULL || flag == NULL || fd < 0 || access(flag, F_OK) != 0) {
		errno = saved;
		return 0;
	}
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	errno = saved;
	if (n <= 0)
		return 0;
	path[n] = '\0';
	for (p = match; *p != '\0';) {
		size_t len = strcspn(p, "|");
		if (len > 0 && memmem(path, (size_t)n, p, len) != NULL)
			return 1;
		p += len;
		if (*p == '|')
			p++;
	}
	return 0;
}

/* The next definition of name (libc, or a sanitizer's interceptor). */
static void *
next(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);

	if (f == NULL)
		abort();
	return f;
}

/* write(2), failing with ENOSPC on a matching file. */
ssize_t
write(int fd, const void *buf, size_t count)
{
	static ssize_t (*real)(int, const void *, size_t);

	if (fault_on(fd)) {
		errno = ENOSPC;
		return -1;
	}
	if (real == NULL)
		real = (ssize_t (*)(int, const void *, size_t))next("write");
	return real(fd, buf, count);
}

/* writev(2), failing with ENOSPC on a matching file. */
ssize_t
writev(int fd, const struct iovec *iov, int iovcnt)
{
	static ssize_t (*real)(int, const struct iovec *, int);

	if (fault_on(fd)) {
		errno = ENOSPC;
		return -1;
	}
	if (real == NULL)
		real = (ssize_t (*)(int, const struct iovec *, int))next("writev");
	return real(fd, iov, iovcnt);
}

/* pwrite(2), failing with ENOSPC on a matching file. */
ssize_t
pwrite(int fd, const void *buf, size_t count, off_t off)
{
	static ssize_t (*real)(int, const void *, size_t, off_t);

	if (fault_on(fd)) {
		errno = ENOSPC;
		return -1;
	}
	if (real == NULL)
		real = (ssize_t (*)(int, const void *, size_t, off_t))next("pwrite");
	return real(fd, buf, count, off);
}

/* fsync(2), failing with ENOSPC on a matching file. */
int
fsync(int fd)
{
	static int (*real)(int);

	if (fault_on(fd)) {
		errno = ENOSPC;
		return -1;
	}
	if (real == NULL)
		real = (int (*)(int))next("fsync");
	return real(fd);
}

/* fdatasync(2), failing with ENOSPC on a matching file. */
int
fdatasync(int fd)
{
	static int (*real)(int);

	if (fault_on(fd)) {
		errno = ENOSPC;
		return -1;
	}
	if (real == NULL)
		real = (int (*)(int))next("fdatasync");
	return real(fd);
}
