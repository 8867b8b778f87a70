/*
 * lock.h - runtime/ lock and pid files, GoAgent compatible (agent-behaviour §3).
 *
 * Locks are BSD flock(2) on runtime/<name>.lock (created 0600, never written,
 * never deleted), held through an fd opened O_CLOEXEC so children never
 * inherit them. A lock is released when its holder dies; "the agent is alive"
 * exactly when runtime/agent.lock is held (§3.4).
 *
 * All paths are relative to the working directory (WORKDIR), which every
 * binary enters at start.
 */
#ifndef LOCK_H
#define LOCK_H

#define RUNTIME_DIR	"runtime"
#define TOTAL_LOCK	"runtime/total-lock.lock"

/**
 * Try to take the exclusive lock on path without waiting.
 * Returns the held fd (>= 0), or -1 with errno EWOULDBLOCK when another
 * process holds it, or another errno on open failure.
 */
int lock_try(const char *path);

/**
 * Take the exclusive lock on path, waiting at most timeout_ms (-1 = forever).
 * Returns the held fd, or -1 with errno ETIMEDOUT / the open error.
 */
int lock_wait(const char *path, int timeout_ms);

/** Release a lock taken by lock_try()/lock_wait() (closes fd; -1 ignored). */
void lock_release(int fd);

/**
 * 1 when some other process holds the lock on path, 0 when it is free,
 * -1 on error. Probes with a non-blocking lock that is dropped at once.
 */
int lock_is_held(const char *path);

/**
 * GoAgent's CheckProcess(name) (§3.2): ensure runtime/, try-lock
 * runtime/<name>.lock, then under runtime/total-lock.lock (waiting up to
 * total_timeout_ms, -1 = forever) write our pid to runtime/<name>.pid (no
 * trailing newline, atomically). Returns the held <name>.lock fd, to keep
 * for the process lifetime; -1 with errno EWOULDBLOCK when another instance
 * runs, or another errno on failure.
 */
int check_process(const char *name, int total_timeout_ms);

/**
 * Read a pid from runtime/<name>.pid. Returns the pid (> 0), or -1 when the
 * file is missing or does not hold a positive decimal number.
 */
long pidfile_read(const char *name);

#endif
