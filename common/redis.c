/*
 * redis.c - the hiredis async adapter over ev.h, and redis:// addresses.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ev.h"
#include "redis.h"
#include "util.h"

/* What the adapter knows of one async context. */
struct redis_ev {
	redisAsyncContext *ac;
	int		 fd;
	int		 reading, writing;
	int		 watched;
};

/* Re-register the fd with the events hiredis wants now. */
static void ev_update(struct redis_ev *r);

/* The socket is ready: let hiredis read or write (one per turn). */
static void
on_ready(int fd, short revents, void *arg)
{
	struct redis_ev *r = arg;

	(void)fd;
	if ((revents & POLLOUT) && r->writing) {
		redisAsyncHandleWrite(r->ac);	/* may free r */
		return;
	}
	if (revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) {
		if (r->reading)
			redisAsyncHandleRead(r->ac);	/* may free r */
		else
			redisAsyncHandleWrite(r->ac);	/* reports the error */
	}
}

/* Watch the fd for what hiredis asked, or not at all. */
static void
ev_update(struct redis_ev *r)
{
	short events = (short)((r->reading ? POLLIN : 0) | (r->writing ? POLLOUT : 0));

	if (r->watched) {
		ev_fd_del(r->fd);
		r->watched = 0;
	}
	if (events == 0)
		return;
	if (ev_fd_add(r->fd, events, on_ready, r) == 0)
		r->watched = 1;
}

/* hiredis hook: watch for reading. */
static void
hook_add_read(void *p)
{
	struct redis_ev *r = p;

	r->reading = 1;
	ev_update(r);
}

/* hiredis hook: stop watching for reading. */
static void
hook_del_read(void *p)
{
	struct redis_ev *r = p;

	r->reading = 0;
	ev_update(r);
}

/* hiredis hook: watch for writing. */
static void
hook_add_write(void *p)
{
	struct redis_ev *r = p;

	r->writing = 1;
	ev_update(r);
}

/* hiredis hook: stop watching for writing. */
static void
hook_del_write(void *p)
{
	struct redis_ev *r = p;

	r->writing = 0;
	ev_update(r);
}

/* hiredis hook: the context is going away. */
static void
hook_cleanup(void *p)
{
	struct redis_ev *r = p;

	r->reading = r->writing = 0;
	ev_update(r);
	free(r);
}

/* Attach the adapter to ac. */
int
redis_ev_attach(redisAsyncContext *ac)
{
	struct redis_ev *r;

	if (ac->ev.data != NULL) {
		errno = EBUSY;
		return -1;
	}
	r = xcalloc(1, sizeof(*r));
	r->ac = ac;
	r->fd = ac->c.fd;
	ac->ev.addRead = hook_add_read;
	ac->ev.delRead = hook_del_read;
	ac->ev.addWrite = hook_add_write;
	ac->ev.delWrite = hook_del_write;
	ac->ev.cleanup = hook_cleanup;
	ac->ev.data = r;
	/* The connect completes on the first writable event. */
	hook_add_write(r);
	if (!r->watched) {
		ac->ev.data = NULL;
		ac->ev.addRead = ac->ev.delRead = NULL;
		ac->ev.addWrite = ac->ev.delWrite = NULL;
		ac->ev.cleanup = NULL;
		free(r);
		errno = EMFILE;
		return -1;
	}
	return 0;
}

/* Parse a decimal number in [lo, hi] from s[0..n). */
static int
num_parse(const char *s, size_t n, long lo, long hi, long *out)
{
	long v = 0;
	size_t i;

	if (n == 0 || n > 9)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* Parse redis://[:password@]host[:port][/db]. */
int
redis_url_parse(const char *url, struct redis_url *u, char *err, size_t errlen)
{
	const char *p, *at, *hostend, *slash, *colon;
	long v;

	memset(u, 0, sizeof(*u));
	u->port = 6379;
	if (url == NULL || strncmp(url, "redis://", 8) != 0) {
		snprintf(err, errlen, "not a redis:// address");
		return -1;
	}
	p = url + 8;
	slash = strchr(p, '/');
	at = memrchr(p, '@', slash != NULL ? (size_t)(slash - p) : strlen(p));
	if (at != NULL) {
		const char *c = memchr(p, ':', (size_t)(at - p));
		if (c == NULL) {
			snprintf(err, errlen, "redis address: the part before '@' must "
			    "be ':password'");
			return -1;
		}
		u->password = xstrndup(c + 1, (size_t)(at - c - 1));
		p = at + 1;
	}
	hostend = slash != NULL ? slash : p + strlen(p);
	if (*p == '[') {
		const char *rb = memchr(p, ']', (size_t)(hostend - p));
		if (rb == NULL || (size_t)(rb - p - 1) >= sizeof(u->host)) {
			snprintf(err, errlen, "redis address: bad IPv6 host");
			goto fail;
		}
		memcpy(u->host, p + 1, (size_t)(rb - p - 1));
		colon = rb + 1 < hostend && rb[1] == ':' ? rb + 1 : NULL;
		if (colon == NULL && rb + 1 != hostend) {
			snprintf(err, errlen, "redis address: bad IPv6 host");
			goto fail;
		}
	} else {
		colon = memchr(p, ':', (size_t)(hostend - p));
		{
			const char *he = colon != NULL ? colon : hostend;
			if (he == p || (size_t)(he - p) >= sizeof(u->host)) {
				snprintf(err, errlen, "redis address: no host");
				goto fail;
			}
			memcpy(u->host, p, (size_t)(he - p));
		}
	}
	if (colon != NULL) {
		if (num_parse(colon + 1, (size_t)(hostend - colon - 1), 1, 65535, &v) == -1) {
			snprintf(err, errlen, "redis address: bad port");
			goto fail;
		}
		u->port = (int)v;
	}
	if (slash != NULL && slash[1] != '\0') {
		if (num_parse(slash + 1, strlen(slash + 1), 0, 100000, &v) == -1) {
			snprintf(err, errlen, "redis address: bad database number");
			goto fail;
		}
		u->db = (int)v;
	}
	return 0;
fail:
	redis_url_clear(u);
	return -1;
}

/* Forget the password. */
void
redis_url_clear(struct redis_url *u)
{
	if (u->password != NULL) {
		explicit_bzero(u->password, strlen(u->password));
		free(u->password);
		u->password = NULL;
	}
}
