/*
 * redis.h - Redis on the one event loop: hiredis's async API (Debian's
 * libhiredis) driven by an adapter of ours over ev.h, and the
 * redis://[:password@]host:port/db address of the task queue (docs/queue.md).
 * No RESP is parsed here: hiredis does that.
 */
#ifndef REDIS_H
#define REDIS_H

#include <stddef.h>
#include <hiredis/async.h>

/** A parsed redis:// address. */
struct redis_url {
	char	 host[256];	/* host name or IPv4/IPv6 literal (no brackets) */
	int	 port;		/* 1..65535; 6379 when absent */
	int	 db;		/* 0.. ; 0 when absent */
	char	*password;	/* NULL when absent; a secret: never log it */
};

/**
 * Parse url ("redis://[:password@]host[:port][/db]"; a user name before the
 * colon is accepted and ignored) into *u (password allocated, free with
 * redis_url_clear). Returns 0, or -1 with a reason in err (errlen bytes)
 * that never contains the password.
 */
int redis_url_parse(const char *url, struct redis_url *u, char *err, size_t errlen);

/** Wipe and free the password of u. */
void redis_url_clear(struct redis_url *u);

/**
 * Drive ac from the event loop (ev.h): its socket is watched with
 * ev_fd_add and hiredis's read/write handlers run from there. Call right
 * after redisAsyncConnect succeeded. Returns 0, or -1 when ac already has
 * an adapter or the loop has no free fd slot (the caller frees ac).
 */
int redis_ev_attach(redisAsyncContext *ac);

#endif
