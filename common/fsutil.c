/* fsutil.c - atomic writes, bounded reads, recursive mkdir/rm, exe dir. */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef __APPLE__
#include <mach-o/dyld.h>
#endif

#include "fsutil.h"
#include "util.h"

/* Deepest directory level fs_rm_rf descends to (one fd per level). */
#define FS_RM_DEPTH_MAX	256

/* Write all of buf, retrying short writes and EINTR. */
int
fs_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* fsync the directory that holds path, so a rename survives a crash. */
static void
fsync_parent(const char *path)
{
	char *copy = xstrdup(path);
	int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd != -1) {
		(void)fsync(fd);
		close(fd);
	}
	free(copy);
}

/* Create a temp file next to path; fills tmp (size bytes). */
static int
temp_beside(const char *path, char *tmp, size_t size)
{
	char *copy = xstrdup(path);
	const char *base = basename(copy);
	char *dcopy = xstrdup(path);
	const char *dir = dirname(dcopy);
	int fd;

	snprintf(tmp, size, "%s/.%s.tmp.XXXXXX", dir, base);
	free(copy);
	free(dcopy);
	fd = mkstemp(tmp);
	if (fd != -1)
		(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
	return fd;
}

/* Temp file beside path, rename over path; with durable, fsync the file
   before the rename and the directory after it. */
static int
write_via_temp(const char *path, const void *data, size_t len, mode_t mode,
    int durable)
{
	char tmp[PATH_MAX];
	int fd, saved;

	if ((fd = temp_beside(path, tmp, sizeof(tmp))) == -1)
		return -1;
	if (fs_write_all(fd, data, len) == -1 || fchmod(fd, mode) == -1 ||
	    (durable && fsync(fd) == -1))
		goto fail;
	if (close(fd) == -1) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) == -1)
		goto fail;
	if (durable)
		fsync_parent(path);
	return 0;
fail:
	saved = errno;
	if (fd != -1)
		close(fd);
	unlink(tmp);
	errno = saved;
	return -1;
}

/* Temp file beside path, fsync, rename, fsync the directory (fsutil.h). */
int
fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	return write_via_temp(path, data, len, mode, 1);
}

/* Temp file + rename without fsync, for files a power loss may take (fsutil.h). */
int
fs_write_replace(const char *path, const void *data, size_t len, mode_t mode)
{
	return write_via_temp(path, data, len, mode, 0);
}

/* Read all of fd (at most max_bytes) into a new NUL-terminated buffer. */
static int
read_fd(int fd, size_t max_bytes, char **out, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf;
	int saved;

	buf = xmalloc(cap + 1);
	for (;;) {
		ssize_t r;
		if (n == cap) {
			if (cap >= max_bytes) {
				errno = EFBIG;
				goto fail;
			}
			cap = cap * 2 > max_bytes ? max_bytes : cap * 2;
			buf = xrealloc(buf, cap + 1);
		}
		r = read(fd, buf + n, cap - n);
		if (r == -1) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > max_bytes) {
		errno = EFBIG;
		goto fail;
	}
	buf[n] = '\0';
	*out = buf;
	if (len != NULL)
		*len = n;
	return 0;
fail:
	saved = errno;
	free(buf);
	errno = saved;
	return -1;
}

/*
 * Open a regular file for reading (fsutil.h). Why O_NONBLOCK: opening a
 * FIFO planted in place of a file would block until a writer comes (and a
 * device might never end), which would hang the one event loop; with
 * O_NONBLOCK the open returns at once and fstat tells. Reads of a regular
 * file never block anyway; the flag is cleared for the caller.
 */
int
fs_open_regular(const char *path, int flags)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | flags);
	struct stat st;
	int saved;

	if (fd == -1)
		return -1;
	if (fstat(fd, &st) == -1)
		goto fail;
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		goto fail;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == -1)
		goto fail;
	return fd;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

/* Read a regular file whole (fs_open_regular flags). */
static int
read_regular(const char *path, int flags, size_t max_bytes, char **out,
    size_t *len)
{
	int fd = fs_open_regular(path, flags), rc, saved;

	if (fd == -1)
		return -1;
	rc = read_fd(fd, max_bytes, out, len);
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

/* Read a whole regular file (symlinks followed), at most max_bytes. */
int
fs_read_file(const char *path, size_t max_bytes, char **out, size_t *len)
{
	return read_regular(path, 0, max_bytes, out, len);
}

/* Read a whole regular file; no symlink, FIFO or device. */
int
fs_read_regular(const char *path, size_t max_bytes, char **out, size_t *len)
{
	return read_regular(path, O_NOFOLLOW, max_bytes, out, len);
}

/* mkdir -p. */
int
fs_mkdir_p(const char *path, mode_t mode)
{
	char *p = xstrdup(path), *s;
	int rc = 0;

	for (s = p + 1; ; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;
			*s = '\0';
			if (mkdir(p, mode) == -1 && errno != EEXIST) {
				rc = -1;
				break;
			}
			*s = c;
			if (c == '\0')
				break;
		}
	}
	if (rc == 0 && !fs_is_dir(path)) {
		errno = ENOTDIR;
		rc = -1;
	}
	free(p);
	return rc;
}

/*
 * Empty the directory open as dfd (taken over, closed here), descending
 * through file descriptors: every sub-directory is opened relative to its
 * parent with O_NOFOLLOW, so a symlink swapped in by another user between
 * two steps is removed as a link and never entered (a path-based walk run
 * as root in a user-writable tree could be steered into /). Returns 0, or
 * -1 with errno of the first failure; the walk goes on after a failure.
 */
static int
rm_tree_at(int dfd, int depth)
{
	DIR *d = fdopendir(dfd);
	struct dirent *e;
	int rc = 0, err = 0;

	if (d == NULL) {
		err = errno;
		close(dfd);
		errno = err;
		return -1;
	}
	while ((e = readdir(d)) != NULL) {
		int cfd;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		cfd = depth < FS_RM_DEPTH_MAX ? openat(dirfd(d), e->d_name,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
		if (cfd != -1) {
			if (rm_tree_at(cfd, depth + 1) == -1 && err == 0)
				err = errno;
			if (unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR) == -1 &&
			    errno != ENOENT && err == 0)
				err = errno;
		} else if (unlinkat(dirfd(d), e->d_name, 0) == -1 &&
		    errno != ENOENT && err == 0) {
			err = errno;
		}
	}
	closedir(d);
	if (err != 0) {
		errno = err;
		rc = -1;
	}
	return rc;
}

/* rm -rf through directory fds, never following links. */
int
fs_rm_rf(const char *path)
{
	struct stat st;
	int fd;

	if (lstat(path, &st) == -1)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISDIR(st.st_mode))
		return unlink(path);
	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) == -1)
		return errno == ELOOP || errno == ENOTDIR ? unlink(path) : -1;
	if (rm_tree_at(fd, 1) == -1)
		return -1;
	return rmdir(path) == -1 && errno != ENOENT ? -1 : 0;
}

/* Copy src to dst through a temp file and rename. */
int
fs_copy_file(const char *src, const char *dst, mode_t mode)
{
	char tmp[PATH_MAX], buf[65536];
	int in, out = -1, saved;
	ssize_t n;

	if ((in = fs_open_regular(src, 0)) == -1)
		return -1;
	if ((out = temp_beside(dst, tmp, sizeof(tmp))) == -1)
		goto fail_in;
	while ((n = read(in, buf, sizeof(buf))) != 0) {
		if (n == -1) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		if (fs_write_all(out, buf, (size_t)n) == -1)
			goto fail;
	}
	if (fchmod(out, mode) == -1 || fsync(out) == -1)
		goto fail;
	if (close(out) == -1) {
		out = -1;
		goto fail;
	}
	out = -1;
	if (rename(tmp, dst) == -1)
		goto fail;
	close(in);
	fsync_parent(dst);
	return 0;
fail:
	saved = errno;
	if (out != -1)
		close(out);
	unlink(tmp);
	errno = saved;
fail_in:
	saved = errno;
	close(in);
	errno = saved;
	return -1;
}

/* The directory of the running executable (not argv[0]). */
int
fs_exe_dir(char *buf, size_t size)
{
	char path[PATH_MAX];
	char *slash;
#ifdef __APPLE__
	uint32_t n = sizeof(path);
	char real[PATH_MAX];

	if (_NSGetExecutablePath(path, &n) != 0 || realpath(path, real) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s", real);
#else
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);

	if (n == -1)
		return -1;
	path[n] = '\0';
#endif
	slash = strrchr(path, '/');
	if (slash == NULL) {
		errno = ENOENT;
		return -1;
	}
	*slash = '\0';
	if (slash == path)
		snprintf(path, sizeof(path), "/");
	if (strlcpy_(buf, path, size) >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* True when path exists (links not followed). */
int
fs_exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* True when path is a regular file. */
int
fs_is_file(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* True when path is a directory. */
int
fs_is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Seconds since path's mtime. */
long long
fs_age_sec(const char *path)
{
	struct stat st;

	if (lstat(path, &st) == -1)
		return -1;
	return (long long)(time(NULL) - st.st_mtime);
}
