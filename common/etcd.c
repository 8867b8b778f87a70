/* etcd.c - etcd v3 JSON gateway calls on the event loop (see etcd.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "etcd.h"
#include "http.h"
#include "log.h"
#include "util.h"

/* The client: endpoints, TLS files, the unary timeout. */
static struct {
	char	*ep[ETCD_MAX_ENDPOINTS];
	int	 n, cur;
	char	*ca, *cert, *key;
	long	 timeout_ms;
} E;

/* One unary call in flight. */
struct call {
	etcd_cb		 cb;
	void		*arg;
	int		 ep;		/* endpoint index it went to */
	long		 id;		/* http_url_request id */
	struct call	*next;
};

static struct call *calls;	/* in flight, for etcd_shutdown */

/* One watch stream. */
struct watch {
	long		 id;
	etcd_watch_fn	 fn;
	etcd_cb		 done;
	void		*arg;
	int		 ep;
	char		*buf;		/* bytes of the current message */
	size_t		 len, cap;
	char		 error[256];
	struct watch	*next;
};

static struct watch *watches;

/* Copy one trimmed endpoint without a trailing '/'. */
static char *
ep_copy(const char *s, size_t n)
{
	while (n > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '/'))
		n--;
	if (n == 0)
		return NULL;
	return xstrndup(s, n);
}

/* Set up the client (see etcd.h). */
int
etcd_init(const struct etcd_config *c, char *err, size_t errlen)
{
	const char *p = c->endpoints != NULL ? c->endpoints : "";

	etcd_shutdown();
	while (*p != '\0' && E.n < ETCD_MAX_ENDPOINTS) {
		size_t n = strcspn(p, ",");
		char *ep = ep_copy(p, n);

		if (ep != NULL) {
			if (strncmp(ep, "http://", 7) != 0 &&
			    strncmp(ep, "https://", 8) != 0) {
				char *u = xasprintf("http://%s", ep);
				free(ep);
				ep = u;
			}
			E.ep[E.n++] = ep;
		}
		p += n;
		if (*p == ',')
			p++;
	}
	if (E.n == 0) {
		snprintf(err, errlen, "no etcd endpoint in '%.60s'",
		    c->endpoints != NULL ? c->endpoints : "");
		return -1;
	}
	E.ca = c->ca_file != NULL ? xstrdup(c->ca_file) : NULL;
	E.cert = c->cert_file != NULL ? xstrdup(c->cert_file) : NULL;
	E.key = c->key_file != NULL ? xstrdup(c->key_file) : NULL;
	E.timeout_ms = c->timeout_ms > 0 ? c->timeout_ms : 5000;
	return 0;
}

/* Forget the configuration. */
void
etcd_shutdown(void)
{
	int i;

	while (watches != NULL)
		etcd_watch_cancel(watches->id);
	while (calls != NULL) {
		struct call *c = calls;

		calls = c->next;
		http_cancel(c->id);
		free(c);
	}
	for (i = 0; i < E.n; i++)
		free(E.ep[i]);
	free(E.ca);
	free(E.cert);
	free(E.key);
	memset(&E, 0, sizeof(E));
}

/* Current endpoint. */
const char *
etcd_endpoint(void)
{
	return E.n > 0 ? E.ep[E.cur] : "";
}

/* A transport failure on endpoint ep: the next call tries another. */
static void
ep_failed(int ep)
{
	if (E.n > 1 && ep == E.cur)
		E.cur = (E.cur + 1) % E.n;
}

/* Options shared by every request. */
static void
opts_fill(struct http_url_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->ca_file = E.ca;
	o->cert_file = E.cert;
	o->key_file = E.key;
	o->timeout_ms = E.timeout_ms;
	o->max_body = ETCD_BODY_MAX;
	o->connect_timeout_ms = E.timeout_ms < 3000 ? E.timeout_ms : 3000;
}

/* The message of an error object of the gateway, or "". */
static const char *
gw_message(const cJSON *j)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "message");

	if (!cJSON_IsString(m))
		m = cJSON_GetObjectItemCaseSensitive(j, "error");
	if (cJSON_IsObject(m))
		m = cJSON_GetObjectItemCaseSensitive(m, "message");
	return cJSON_IsString(m) ? m->valuestring : "";
}

/* A unary answer: decode, judge, hand to the caller. */
static void
call_done(struct http_result *res, void *arg)
{
	struct call *c = arg;
	struct etcd_reply r;
	char err[512];
	cJSON *j = NULL;
	struct call **pp;

	for (pp = &calls; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	memset(&r, 0, sizeof(r));
	if (!res->ok) {
		snprintf(err, sizeof(err), "etcd %s: %s", E.n > 0 ?
		    E.ep[c->ep % E.n] : "?", res->error);
		ep_failed(c->ep);
	} else if ((j = cJSON_ParseWithLength(res->body ? res->body : "",
	    res->len)) == NULL || !cJSON_IsObject(j)) {
		snprintf(err, sizeof(err), "etcd: HTTP %ld: not a JSON object",
		    res->code);
	} else if (res->code < 200 || res->code >= 300) {
		snprintf(err, sizeof(err), "etcd: HTTP %ld: %.300s", res->code,
		    gw_message(j));
		r.json = j;
	} else {
		r.ok = 1;
		r.json = j;
	}
	r.error = r.ok ? "" : err;
	c->cb(&r, c->arg);
	cJSON_Delete(j);
	free(c);
}

/* POST a JSON body to the current endpoint (see etcd.h). */
int
etcd_call(const char *path, cJSON *body, etcd_cb cb, void *arg)
{
	struct http_url_opts o;
	struct call *c;
	char *text, *url;
	long id;

	if (E.n == 0) {
		cJSON_Delete(body);
		return -1;
	}
	text = cJSON_PrintUnformatted(body);
	cJSON_Delete(body);
	if (text == NULL)
		fatalx("etcd: out of memory");
	c = xcalloc(1, sizeof(*c));
	c->cb = cb;
	c->arg = arg;
	c->ep = E.cur;
	url = xasprintf("%s%s", E.ep[E.cur], path);
	opts_fill(&o);
	id = http_url_request("POST", url, text, &o, call_done, c);
	free(url);
	free(text);
	if (id == -1) {
		free(c);
		return -1;
	}
	c->id = id;
	c->next = calls;
	calls = c;
	return 0;
}

/* Base64 of a string. */
char *
etcd_b64(const char *s)
{
	return base64_encode(s, strlen(s));
}

/* Decode a base64 member. */
char *
etcd_b64_member(const cJSON *o, const char *name, size_t *len)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, name);
	unsigned char *out = NULL;
	size_t n = 0;

	if (len != NULL)
		*len = 0;
	if (m == NULL)
		return xstrdup("");
	if (!cJSON_IsString(m))
		return NULL;
	if (m->valuestring[0] == '\0')
		return xstrdup("");
	if (base64_decode(m->valuestring, &out, &n) == -1)
		return NULL;
	if (len != NULL)
		*len = n;
	return (char *)out;
}

/* An int64 member sent as a string or a number. */
int64_t
etcd_int(const cJSON *o, const char *name, int64_t def)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, name);
	char *end;
	long long v;

	if (cJSON_IsNumber(m))
		return (int64_t)m->valuedouble;
	if (!cJSON_IsString(m) || m->valuestring[0] == '\0')
		return def;
	errno = 0;
	v = strtoll(m->valuestring, &end, 10);
	if (errno != 0 || *end != '\0')
		return def;
	return v;
}

/* The key after every key that starts with prefix. */
char *
etcd_prefix_end(const char *prefix)
{
	char *e = xstrdup(prefix);
	size_t n = strlen(e);

	while (n > 0) {
		if ((unsigned char)e[n - 1] < 0xff) {
			e[n - 1]++;
			e[n] = '\0';
			return e;
		}
		n--;
	}
	/* All 0xff (or empty): "\0", i.e. every key; not used by callers. */
	e[0] = '\0';
	return e;
}

/* Add base64 members key and range_end for prefix to o. */
static void
add_prefix(cJSON *o, const char *prefix)
{
	char *k = etcd_b64(prefix), *end = etcd_prefix_end(prefix);
	char *e = etcd_b64(end);

	cJSON_AddStringToObject(o, "key", k);
	cJSON_AddStringToObject(o, "range_end", e);
	free(k);
	free(end);
	free(e);
}

/* A 64-bit number as the gateway wants it: a decimal string. */
static void
add_int(cJSON *o, const char *name, int64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%" PRId64, v);
	cJSON_AddStringToObject(o, name, buf);
}

/* One page of a range read (see etcd.h). */
int
etcd_range_page(const char *prefix, const char *after, size_t after_len,
    int64_t rev, etcd_cb cb, void *arg)
{
	cJSON *o = cJSON_CreateObject();

	add_prefix(o, prefix);
	if (after != NULL) {
		/* The first key after "after" is "after" plus a NUL byte. */
		char *k = xmalloc(after_len + 1), *b;

		memcpy(k, after, after_len);
		k[after_len] = '\0';
		b = base64_encode(k, after_len + 1);
		cJSON_DeleteItemFromObjectCaseSensitive(o, "key");
		cJSON_AddStringToObject(o, "key", b);
		free(b);
		free(k);
	}
	add_int(o, "limit", ETCD_PAGE_KEYS);
	if (rev > 0)
		add_int(o, "revision", rev);
	return etcd_call("/v3/kv/range", o, cb, arg);
}

/* Range read of a prefix. */
int
etcd_range_prefix(const char *prefix, etcd_cb cb, void *arg)
{
	cJSON *o = cJSON_CreateObject();

	add_prefix(o, prefix);
	return etcd_call("/v3/kv/range", o, cb, arg);
}


/* Put key=value. */
int
etcd_put(const char *key, const char *value, int64_t lease, etcd_cb cb,
    void *arg)
{
	cJSON *o = cJSON_CreateObject();
	char *k = etcd_b64(key), *v = etcd_b64(value);

	cJSON_AddStringToObject(o, "key", k);
	cJSON_AddStringToObject(o, "value", v);
	if (lease != 0)
		add_int(o, "lease", lease);
	free(k);
	free(v);
	return etcd_call("/v3/kv/put", o, cb, arg);
}

/* Grant a lease. */
int
etcd_lease_grant(long ttl_sec, etcd_cb cb, void *arg)
{
	cJSON *o = cJSON_CreateObject();

	add_int(o, "TTL", ttl_sec);
	return etcd_call("/v3/lease/grant", o, cb, arg);
}

/* Keep a lease alive once. */
int
etcd_lease_keepalive(int64_t id, etcd_cb cb, void *arg)
{
	cJSON *o = cJSON_CreateObject();

	add_int(o, "ID", id);
	return etcd_call("/v3/lease/keepalive", o, cb, arg);
}

/* Revoke a lease. */
int
etcd_lease_revoke(int64_t id, etcd_cb cb, void *arg)
{
	cJSON *o = cJSON_CreateObject();

	add_int(o, "ID", id);
	return etcd_call("/v3/lease/revoke", o, cb, arg);
}

/* Unlink w from the watch list. */
static void
watch_unlink(struct watch *w)
{
	struct watch **pp;

	for (pp = &watches; *pp != NULL; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			return;
		}
}

/* Handle one complete message of a watch stream; -1 ends the stream. */
static int
watch_message(struct watch *w, const char *text, size_t len)
{
	cJSON *j = cJSON_ParseWithLength(text, len), *res;

	if (j == NULL || !cJSON_IsObject(j)) {
		snprintf(w->error, sizeof(w->error), "etcd watch: not JSON: %.60s",
		    text);
		cJSON_Delete(j);
		return -1;
	}
	res = cJSON_GetObjectItemCaseSensitive(j, "result");
	if (!cJSON_IsObject(res)) {
		snprintf(w->error, sizeof(w->error), "etcd watch: %.200s",
		    gw_message(j)[0] ? gw_message(j) : "message without result");
		cJSON_Delete(j);
		return -1;
	}
	w->fn(res, w->arg);
	cJSON_Delete(j);
	return 0;
}

/*
 * Stream sink: the gateway writes one JSON message per line. Complete
 * lines are handled at once; a partial one waits for the rest.
 */
static int
watch_stream(const char *data, size_t len, void *arg)
{
	struct watch *w = arg;
	size_t start = 0, i;

	if (w->len + len > ETCD_WATCH_MSG_MAX) {
		snprintf(w->error, sizeof(w->error),
		    "etcd watch: message larger than %zu bytes", ETCD_WATCH_MSG_MAX);
		return -1;
	}
	if (w->len + len + 1 > w->cap) {
		w->cap = (w->len + len + 1) * 2;
		w->buf = xrealloc(w->buf, w->cap);
	}
	memcpy(w->buf + w->len, data, len);
	w->len += len;
	for (i = 0; i < w->len; i++) {
		if (w->buf[i] != '\n')
			continue;
		if (i > start && watch_message(w, w->buf + start, i - start) == -1)
			return -1;
		start = i + 1;
	}
	memmove(w->buf, w->buf + start, w->len - start);
	w->len -= start;
	return 0;
}

/* The stream ended. */
static void
watch_end(struct http_result *res, void *arg)
{
	struct watch *w = arg;
	struct etcd_reply r;
	char err[512];

	memset(&r, 0, sizeof(r));
	/* A last message without its newline. */
	if (w->error[0] == '\0' && w->len > 0)
		(void)watch_message(w, w->buf, w->len);
	if (w->error[0] != '\0')
		snprintf(err, sizeof(err), "%s", w->error);
	else if (!res->ok && res->timed_out)
		snprintf(err, sizeof(err), "etcd watch: time bound reached");
	else if (!res->ok) {
		snprintf(err, sizeof(err), "etcd watch %s: %s", E.n > 0 ?
		    E.ep[w->ep % E.n] : "?", res->error);
		ep_failed(w->ep);
	} else
		snprintf(err, sizeof(err), "etcd watch: stream closed (HTTP %ld)",
		    res->code);
	r.error = err;
	watch_unlink(w);
	w->done(&r, w->arg);
	free(w->buf);
	free(w);
}

/* Start a watch (see etcd.h). */
long
etcd_watch(const char *prefix, int64_t start_rev, long max_ms,
    etcd_watch_fn fn, etcd_cb done, void *arg)
{
	struct http_url_opts o;
	struct watch *w;
	cJSON *o2, *cr;
	char *text, *url;

	if (E.n == 0)
		return -1;
	o2 = cJSON_CreateObject();
	cr = cJSON_AddObjectToObject(o2, "create_request");
	add_prefix(cr, prefix);
	if (start_rev > 0)
		add_int(cr, "start_revision", start_rev);
	text = cJSON_PrintUnformatted(o2);
	cJSON_Delete(o2);
	if (text == NULL)
		fatalx("etcd: out of memory");
	w = xcalloc(1, sizeof(*w));
	w->fn = fn;
	w->done = done;
	w->arg = arg;
	w->ep = E.cur;
	opts_fill(&o);
	o.timeout_ms = max_ms > 0 ? max_ms : 0;
	o.stream = watch_stream;
	o.stream_arg = w;
	url = xasprintf("%s/v3/watch", E.ep[E.cur]);
	w->id = http_url_request("POST", url, text, &o, watch_end, w);
	free(url);
	free(text);
	if (w->id == -1) {
		free(w);
		return -1;
	}
	w->next = watches;
	watches = w;
	return w->id;
}

/* Stop a watch. */
void
etcd_watch_cancel(long id)
{
	struct watch *w;

	for (w = watches; w != NULL; w = w->next)
		if (w->id == id) {
			http_cancel(id);
			watch_unlink(w);
			free(w->buf);
			free(w);
			return;
		}
}
