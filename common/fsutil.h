/*
 * fsutil.h - file-system helpers: atomic replace, bounded reads, paths.
 *
 * System-call style: functions return 0 on success and -1 with errno set.
 */
#ifndef FSUTIL_H
#define FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

/**
 * Replace path with len bytes of data so that readers see either the old or
 * the new file, never a torn one (STYLE.md §6): write a temp file in the same
 * directory, fsync it, rename it over path, fsync the directory.
 * mode: permission bits of the new file (the umask does not apply).
 * On failure (ENOSPC, EACCES, ...) the temp file is removed, path is untouched,
 * and -1 is returned with errno of the failing call.
 */
int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* --- files a power loss may take (idle cost, build pickup) --- */
/**
 * Replace path with len bytes of data like fs_write_atomic (temp file in the
 * same directory, rename over path: readers never see a torn file) but
 * without the two fsync calls. Only for files whose loss in a power cut is
 * harmless (the file may then be the older version or empty): live
 * snapshots rewritten every few seconds (runtime/status.json), and the
 * scripts of one worker launch. Each fsync puts the process to sleep on the
 * disk several times. mode: permission bits of the new file.
 * Returns 0, or -1 with errno of the failing call (the temp file removed).
 */
int fs_write_replace(const char *path, const void *data, size_t len, mode_t mode);

/**
 * Write all len bytes of buf to fd, retrying short writes and EINTR.
 * Returns 0, or -1 with errno of the failing write (ENOSPC, EIO, ...).
 */
int fs_write_all(int fd, const void *buf, size_t len);

/**
 * Read a whole file into a new NUL-terminated buffer (*out, caller frees;
 * *len excludes the NUL). Files larger than max_bytes fail with EFBIG. Only
 * a regular file is read (symlinks to one are followed): a FIFO, device or
 * directory in its place fails at once with EINVAL, never blocks. Returns 0,
 * or -1 with errno.
 */
int fs_read_file(const char *path, size_t max_bytes, char **out, size_t *len);

/**
 * Open path read-only (O_CLOEXEC, plus flags such as O_NOFOLLOW) when it is
 * a regular file: a FIFO, device or directory fails at once with EINVAL
 * instead of blocking the caller. Returns the fd (blocking mode), or -1
 * with errno.
 */
int fs_open_regular(const char *path, int flags);

/**
 * fs_read_file for a file in a directory other users can write (build_tmp,
 * task dirs): fails with ELOOP when path is a symlink and EINVAL when it is
 * not a regular file (a FIFO would block, a device never end), so a build
 * user cannot make the agent read, and pass on, a file only root can read.
 */
int fs_read_regular(const char *path, size_t max_bytes, char **out, size_t *len);

/** mkdir -p with mode for each created directory (umask applies). */
int fs_mkdir_p(const char *path, mode_t mode);

/**
 * Recursively remove path (file or directory tree). Links are never
 * followed, also not when another user swaps a directory for a symlink
 * during the walk (it goes through directory fds, openat + O_NOFOLLOW).
 * At most 256 levels deep (deeper levels are left, and -1 is returned).
 * Returns 0 (also when path does not exist), or -1 with errno.
 */
int fs_rm_rf(const char *path);

/**
 * Copy src to dst through fs_write_atomic-like temp+rename, keeping mode.
 * max 2 GiB. Returns 0 or -1/errno; dst untouched on failure.
 */
int fs_copy_file(const char *src, const char *dst, mode_t mode);

/**
 * Directory holding the running executable, from /proc/self/exe (Linux) or
 * _NSGetExecutablePath (macOS); never from argv[0] (W22).
 * Writes into buf (size bytes). Returns 0 or -1/errno.
 */
int fs_exe_dir(char *buf, size_t size);

/** 1 if path exists (any type, links not followed), else 0. */
int fs_exists(const char *path);
/** 1 if path is a regular file (links followed), else 0. */
int fs_is_file(const char *path);
/** 1 if path is a directory (links followed), else 0. */
int fs_is_dir(const char *path);

/** Seconds since path's mtime (wall clock); -1 with errno when stat fails. */
long long fs_age_sec(const char *path);

#endif
