/*
 * proc.h - facts about other processes: identity (start time), executable,
 * liveness. Linux reads /proc; macOS uses sysctl/proc_pidpath.
 */
#ifndef PROC_H
#define PROC_H

#include <sys/types.h>

/**
 * Start time of pid in clock ticks since boot (field 22 of /proc/<pid>/stat
 * on Linux; microseconds since the epoch on macOS). Together with the pid it
 * identifies a process across pid reuse. Returns 0 when pid does not exist.
 */
unsigned long long proc_start_time(pid_t pid);

/**
 * 1 when pid is alive and was started at start_time (as returned by
 * proc_start_time), 0 otherwise. A zombie counts as dead.
 */
int proc_same(pid_t pid, unsigned long long start_time);

/**
 * 1 when pid is alive and its executable is the file at path (compared by
 * resolved path; a binary replaced by rename after the process started, whose
 * link reads "<path> (deleted)", also matches). 0 otherwise (W3: never signal
 * a pid from a stale pid file without this check).
 */
int proc_exe_is(pid_t pid, const char *path);

/**
 * 1 when pid is alive and executes the very file now at path (same device
 * and inode, through /proc/<pid>/exe), else 0. Unlike proc_exe_is it tells
 * a process that re-executed a swapped binary from one still running the
 * old file that was renamed away.
 */
int proc_exe_same_file(pid_t pid, const char *path);

/** 1 when pid exists and is not a zombie, else 0. */
int proc_alive(pid_t pid);

/**
 * Live (non-zombie) processes whose process group is pgid or whose session
 * is sid (either may be 0 to skip it) and whose start time t satisfies
 * since <= t and, when until is not 0, t < until (proc_start_time units).
 * The window keeps a reused pgid/sid from naming processes that do not
 * belong to the tree being looked for: pass the start time of the tree's
 * leader as since and, when that pid now names another process, that
 * process's start time as until.
 * Stores up to max pids in pids (may be NULL when max is 0) and returns how
 * many matched (which may exceed max), or -1 with errno when the process
 * table cannot be read (always on systems without /proc).
 */
int proc_group_members(pid_t pgid, pid_t sid, unsigned long long since,
    unsigned long long until, pid_t *pids, int max);

#endif
