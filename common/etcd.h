/*
 * etcd.h - a small asynchronous client of etcd v3's JSON gateway (the
 * grpc-gateway of etcd 3.4+: POST /v3/kv/range, /v3/kv/put, /v3/kv/txn,
 * /v3/lease/grant, /v3/lease/keepalive, /v3/lease/revoke, /v3/watch) over
 * http_url_request (http.h), so every call runs on the event loop and none
 * blocks it. Keys and values travel base64-encoded inside JSON; 64-bit
 * numbers (revisions, lease ids) travel as decimal strings. Reference:
 * etcd's api/etcdserverpb/rpc.proto and Documentation/dev-guide/api_grpc_gateway.md.
 *
 * Endpoints: a comma list of base URLs ("http://10.0.0.1:2379,..."); a
 * call goes to the current endpoint and a transport failure moves the
 * current one to the next, so the following call tries another member.
 */
#ifndef ETCD_H
#define ETCD_H

#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

/** Most endpoints kept from the list. */
#define ETCD_MAX_ENDPOINTS	16
/** Largest answer of a unary call, bytes (etcd caps a request at 1.5 MiB). */
#define ETCD_BODY_MAX		((size_t)64 * 1024 * 1024)
/** Keys per page of etcd_range_page: the answer stays far below ETCD_BODY_MAX. */
#define ETCD_PAGE_KEYS		16
/** Largest watch message buffered, bytes (a longer one ends the stream). */
#define ETCD_WATCH_MSG_MAX	((size_t)8 * 1024 * 1024)

struct etcd_config {
	const char	*endpoints;	/* comma list of base URLs; copied */
	const char	*ca_file;	/* PEM roots for https; NULL/"" = system */
	const char	*cert_file;	/* PEM client certificate; NULL/"" = none */
	const char	*key_file;	/* its key */
	long		 timeout_ms;	/* unary calls; <= 0 -> 5000 */
};

/**
 * Outcome of a unary call, valid during the callback only: ok when a 2xx
 * answer with a JSON object arrived; then json is that object (borrowed),
 * e.g. {"header":{...},"kvs":[...],"count":"1"} for a range. Otherwise
 * error says why ("etcd http://h:2379: Connection refused", "etcd: HTTP
 * 400: etcdserver: ..."), json may hold the error object.
 */
struct etcd_reply {
	int		 ok;
	const char	*error;
	cJSON		*json;
};

typedef void (*etcd_cb)(const struct etcd_reply *r, void *arg);

/** Set up the client; 0, or -1 with err (errlen bytes) when no endpoint is usable. */
int etcd_init(const struct etcd_config *c, char *err, size_t errlen);
/** Forget the configuration; calls and watches in flight are dropped without their callbacks. */
void etcd_shutdown(void);
/** Base URL of the current endpoint (borrowed) or "". */
const char *etcd_endpoint(void);

/**
 * POST body (a JSON object, consumed: deleted here) to path ("/v3/kv/put")
 * of the current endpoint. cb runs exactly once from the loop. Returns 0,
 * or -1 when the call cannot start (cb not called).
 */
int etcd_call(const char *path, cJSON *body, etcd_cb cb, void *arg);

/** Base64 of the NUL-terminated s; new string, caller frees. */
char *etcd_b64(const char *s);
/**
 * Decode the base64 string member name of o into a new NUL-terminated
 * string (*len bytes, len may be NULL). NULL when absent ("" for an
 * empty key/value, which the gateway omits: callers decide) or malformed.
 */
char *etcd_b64_member(const cJSON *o, const char *name, size_t *len);
/** Integer member name of o (decimal string or number); def when absent or bad. */
int64_t etcd_int(const cJSON *o, const char *name, int64_t def);
/** The range end that covers every key starting with prefix (new string). */
char *etcd_prefix_end(const char *prefix);

/** Range read of every key under prefix (/v3/kv/range). */
int etcd_range_prefix(const char *prefix, etcd_cb cb, void *arg);
/**
 * One page of a range read under prefix: at most ETCD_PAGE_KEYS keys from
 * the key after (after_len bytes; NULL = from the start of the prefix,
 * else the range starts just after it), at revision rev (0 = the latest).
 * The answer has "kvs", "more" (true when keys remain) and
 * "header.revision": read the next pages at that revision.
 */
int etcd_range_page(const char *prefix, const char *after, size_t after_len,
    int64_t rev, etcd_cb cb, void *arg);
/** Put key=value, attached to lease (0 = none) (/v3/kv/put). */
int etcd_put(const char *key, const char *value, int64_t lease, etcd_cb cb,
    void *arg);
/** Grant a lease of ttl_sec seconds; the answer has "ID" and "TTL". */
int etcd_lease_grant(long ttl_sec, etcd_cb cb, void *arg);
/**
 * One keep-alive of lease id; the answer is {"result":{"ID","TTL"}}, a TTL
 * absent or <= 0 meaning the lease is gone.
 */
int etcd_lease_keepalive(int64_t id, etcd_cb cb, void *arg);
/** Revoke lease id (its keys are deleted). */
int etcd_lease_revoke(int64_t id, etcd_cb cb, void *arg);

/**
 * Called for each message of a watch stream: result is the message's
 * "result" object (borrowed), with "header", "created", "events",
 * "compact_revision", "canceled" as etcd sends them.
 */
typedef void (*etcd_watch_fn)(const cJSON *result, void *arg);

/**
 * Watch every key under prefix from revision start_rev (0 = now): one
 * long POST /v3/watch whose answer is a stream of JSON messages, each
 * handed to fn. done runs once when the stream ends (r->error says why:
 * an error, a closed connection, the end of max_ms, or a message larger
 * than ETCD_WATCH_MSG_MAX). max_ms > 0 ends the stream after that long so
 * the caller re-watches (a liveness bound); 0 = no bound. Returns a watch
 * id for etcd_watch_cancel, or -1 (done not called).
 */
long etcd_watch(const char *prefix, int64_t start_rev, long max_ms,
    etcd_watch_fn fn, etcd_cb done, void *arg);
/** Stop watch id; neither its fn nor its done run again. */
void etcd_watch_cancel(long id);

#endif
