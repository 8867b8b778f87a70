/*
 * lockwatch.h - wait for a flock(2) lock in a helper thread.
 *
 * The daemon's loop must never block, yet "the agent died" for an agent the
 * daemon did not start is only visible as "runtime/agent.lock became free",
 * and "the upgrader is done" as "runtime/total-lock.lock became free". A
 * lockwatch is one short-lived thread that sits in a blocking flock(LOCK_EX)
 * on one file and, once it gets the lock, wakes the loop through a pipe.
 *
 * Ownership: the thread writes the result fields, then the pipe byte; the
 * loop reads them only in lockwatch_finish(), after pthread_join(). The
 * thread never logs (the logger is not thread-safe) and blocks all signals.
 */
#ifndef LOCKWATCH_H
#define LOCKWATCH_H

struct lockwatch;

/**
 * Start a thread that waits without limit for the exclusive lock on path
 * (copied). keep = 1: the thread keeps the lock and hands its fd over;
 * keep = 0: it drops the lock the moment it gets it (the caller only wants
 * to learn that the holder is gone, and must not hold another process's
 * lock: W14). Returns the watch, or NULL with errno (pipe, pthread_create).
 */
struct lockwatch *lockwatch_start(const char *path, int keep);

/** Read end of the wake-up pipe: POLLIN once the thread has finished. */
int lockwatch_fd(const struct lockwatch *w);

/** The path being watched (owned by w). */
const char *lockwatch_path(const struct lockwatch *w);

/**
 * Join the finished thread and free w. Returns 0 and stores in *fd the held
 * lock fd (keep = 1; the caller releases it) or -1 (keep = 0); returns -1
 * with errno when the thread could not open or lock the file. Blocks until
 * the thread ends, so call it only after lockwatch_fd() polled readable.
 */
int lockwatch_finish(struct lockwatch *w, int *fd);

#endif
