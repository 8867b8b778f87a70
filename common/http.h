/*
 * http.h - the agent's HTTP client over libcurl (protocol §3, §4).
 *
 * Every request carries the four auth headers (X-DEVOPS-BUILD-TYPE: AGENT,
 * X-DEVOPS-PROJECT-ID, X-DEVOPS-AGENT-ID, X-DEVOPS-AGENT-SECRET-KEY); POST and
 * PUT add "Content-Type: application/json; charset=utf-8". TLS trusts the
 * system roots plus the PEM certificates of ca_file (".cert") when it exists.
 * Proxies: a lookup function set with http_set_proxy_lookup (the agent's:
 * heartbeat envs, environment, .agent.properties) decides per request; without
 * one, or when it finds neither an HTTP nor an HTTPS proxy, the variables
 * http_proxy/HTTP_PROXY, https_proxy/HTTPS_PROXY and no_proxy/NO_PROXY of the
 * environment are honoured (upper and lower case).
 *
 * Requests run asynchronously on one curl multi handle that the event loop
 * drives (http_fds/http_dispatch, see ev.h), or synchronously with the
 * *_sync variants (upgrader, tests). The HTTP status code of JSON calls is not
 * interpreted here: callers decode the body as an envelope (json.h).
 *
 * Redirects are never followed, for any request: libcurl would send the auth
 * headers (custom headers) to whatever Location names. A 3xx answer other
 * than 304 fails the request (res->ok 0, res->redirected 1) with a log line
 * naming the Location (docs/security.md).
 */
#ifndef HTTP_H
#define HTTP_H

#include <poll.h>
#include <stddef.h>

#include "md5.h"

#define HTTP_MAX_BODY		((size_t)4 * 1024 * 1024)	/* response cap, bytes */
#define HTTP_DEFAULT_TIMEOUT_MS	5000
#define HTTP_DL_MAX_BYTES	(256LL * 1024 * 1024)	/* cap when none given */
#define HTTP_DL_TOTAL_MS	(10L * 60 * 1000)	/* download time when none given */
/* Beside every verified download: "<dest>.md5" holds its md5 (32 hex). */
#define HTTP_VERIFIED_SUFFIX	".md5"

/* Limits of one download (http_download). */
struct http_dl_limits {
	long long	 max_bytes;	/* body cap, bytes; <= 0 -> HTTP_DL_MAX_BYTES */
	long		 total_ms;	/* whole transfer, ms; <= 0 -> HTTP_DL_TOTAL_MS */
	int		 stall_sec;	/* < 1 byte/s this long aborts; <= 0 -> 30 */
};

struct http_settings {
	const char	*project_id;	/* borrowed for the client's lifetime */
	const char	*agent_id;
	const char	*secret_key;
	const char	*gateway;	/* copied; see http_set_gateway */
	long		 timeout_ms;	/* JSON calls; <= 0 -> HTTP_DEFAULT_TIMEOUT_MS */
	const char	*ca_file;	/* extra PEM roots, e.g. ".cert"; NULL = none */
	const char	*user_agent;	/* NULL = "devopsAgent" */
};

struct http_result {
	long	 code;		/* HTTP status; 0 when no response arrived */
	int	 ok;		/* transport succeeded and body within the cap */
	char	 error[256];	/* why !ok (curl's text, "body too large", ...) */
	int	 timed_out;	/* !ok because the request's time limit passed */
	char	*body;		/* NUL-terminated response body (JSON calls) or NULL */
	size_t	 len;		/* body bytes */
	char	 md5_header[MD5_HEX_LEN];	/* X-Checksum-Md5, "" if absent */
	char	 md5[MD5_HEX_LEN];	/* downloads: md5 of the file now at dest */
	int	 write_errno;	/* downloads: errno of a failed local write (ENOSPC...) */
	int	 too_large;	/* downloads: the body passed max_bytes */
	int	 unverified;	/* downloads: 2xx without X-Checksum-Md5 */
	int	 redirected;	/* a 3xx (not 304) answer: refused, never followed */
	long long elapsed_ms;	/* total transfer time */
};

typedef void (*http_cb)(struct http_result *res, void *arg);

/** Initialise libcurl and the client; call once per process. 0 or -1. */
int http_init(const struct http_settings *s);
/** Release every resource; pending requests are dropped without callbacks. */
void http_shutdown(void);
/** Switch the gateway (heartbeat-delivered) for later requests; copied. */
void http_set_gateway(const char *gateway);
/** Current request timeout for JSON calls, ms. */
void http_set_timeout_ms(long ms);

/**
 * Per-request proxy lookup: fn(name) with name "HTTP_PROXY", "HTTPS_PROXY"
 * or "NO_PROXY" returns its value (borrowed, valid until the request is set
 * up) or NULL / "" for none. When it gives an HTTP or an HTTPS proxy, an
 * https URL goes through the HTTPS one and an http URL through the HTTP one
 * (directly when that one is empty), hosts matching NO_PROXY (libcurl's
 * comma-separated list) go directly, and the environment is not consulted;
 * otherwise the environment rules apply, as in GoAgent HEAD
 * (src/agent/agent/src/pkg/util/httputil/httputil.go proxyFromAgentEnv).
 * fn NULL: environment only (the default).
 */
typedef const char *(*http_proxy_fn)(const char *name);
void http_set_proxy_lookup(http_proxy_fn fn);

/**
 * Start a JSON call: method "GET", "POST", "PUT" or "DELETE"; path is
 * appended to the gateway base (e.g. "/ms/environment/api/..."), with query.
 * body: JSON text for POST/PUT (copied), NULL for none.
 * cb(res, arg) runs from http_dispatch() exactly once; res is valid during
 * the callback only. Returns 0, or -1 when the request cannot be started
 * (then cb is not called).
 */
int http_json(const char *method, const char *path, const char *body,
    http_cb cb, void *arg);

/**
 * http_json with extra request headers: headers is a NULL-terminated array
 * of "Name: value" lines (copied), sent after the auth headers (the build
 * log calls' X-DEVOPS-BUILD-ID and X-DEVOPS-VM-SID, protocol §7.12).
 */
int http_json_headers(const char *method, const char *path, const char *body,
    const char *const headers[], http_cb cb, void *arg);

/**
 * Start a POST of a body that is not JSON (e.g. InfluxDB line protocol to
 * agents/metrix/write, protocol §7.11) with the given Content-Type (copied);
 * otherwise exactly like http_json: auth headers, timeout, body copied,
 * cb(res, arg) runs exactly once from http_dispatch(). Returns 0, or -1 when
 * the request cannot be started (then cb is not called).
 */
int http_post(const char *path, const char *content_type, const char *body,
    http_cb cb, void *arg);

/**
 * Redis task queue: start a POST of JSON body (copied) to url, an absolute
 * http:// or https:// URL outside BK-CI, through http_url_request: none of
 * the agent's identity or secret headers are sent, only Content-Type; no
 * proxy, no redirects; the JSON call timeout; the same callback rule as
 * http_json. Returns 0, or -1 when url is not http(s) or
 * the request cannot be started (then cb is not called).
 */
int http_post_url(const char *url, const char *body, http_cb cb, void *arg);

/**
 * Body sink of a streaming request (http_url_opts.stream): called from
 * http_dispatch() with each chunk of the response body as it arrives (len
 * bytes, not NUL-terminated, any split). Return 0 to go on, -1 to abort the
 * transfer (its callback then runs with !ok).
 */
typedef int (*http_stream_fn)(const char *data, size_t len, void *arg);

/* Options of http_url_request; a zeroed struct gives the defaults. */
struct http_url_opts {
	const char	*content_type;	/* POST/PUT body type; NULL = "application/json" */
	long		 timeout_ms;	/* whole request; 0 = the JSON call timeout
					   (http_set_timeout_ms), or none for a
					   stream; < 0 = the JSON call timeout */
	long		 connect_timeout_ms; /* <= 0: 10000 */
	const char	*ca_file;	/* PEM roots instead of the system's; NULL/"" */
	const char	*cert_file;	/* PEM client certificate; NULL/"" = none */
	const char	*key_file;	/* its PEM key; NULL/"" = none */
	http_stream_fn	 stream;	/* NULL: the body is buffered (capped at
					   max_body) into res->body */
	size_t		 max_body;	/* buffered body cap, bytes; 0 = HTTP_MAX_BODY */
	void		*stream_arg;
};

/**
 * Start a request to an absolute URL (http or https) that is not the BK-CI
 * gateway, e.g. etcd's JSON gateway: NO BK-CI auth headers, no proxy (the
 * environment's and the agent's proxies are ignored: cluster services are
 * reached directly), no redirects, TCP keep-alive probes every 5 s after
 * 10 s idle. method "GET", "POST", "PUT" or "DELETE"; body copied (NULL =
 * empty); o may be NULL. With o->stream the body goes to the stream
 * function as it arrives and res->body stays NULL. cb(res, arg) runs
 * exactly once from http_dispatch() unless the request is cancelled.
 * Returns a request id (> 0) for http_cancel, or -1 when it cannot start
 * (cb not called).
 */
long http_url_request(const char *method, const char *url, const char *body,
    const struct http_url_opts *o, http_cb cb, void *arg);

/**
 * Drop request id (from http_url_request) now: its callback and stream
 * function never run again. Unknown or finished ids are ignored. Call it
 * from the loop or another request's callback, never from the request's
 * own stream function (return -1 there instead).
 */
void http_cancel(long id);

/**
 * Blocking JSON call; fills *res (free with http_result_free). Returns 0 when
 * a response arrived within the cap (res->ok), else -1 (res->error says why).
 */
int http_json_sync(const char *method, const char *path, const char *body,
    struct http_result *res);

/**
 * Start a file download (protocol §7.5): GET path; when etag (md5 hex of
 * the existing dest) is non-NULL, "&eTag=<etag>" is appended by the caller
 * in path and a 304 keeps dest as is (a 304 to a request without etag
 * fails). The body streams into a temp file "<dest>.part.XXXXXX" while its
 * MD5 is computed; dest is replaced (rename) only when the status is 2xx, the
 * transfer completed, X-Checksum-Md5 was sent and matches. Unlike GoAgent,
 * an absent or empty X-Checksum-Md5 fails (res->unverified). Limits, lim
 * (borrowed, not NULL): connect timeout 10 s; abort when fewer than 1 byte/s
 * arrive for lim->stall_sec s; abort after lim->total_ms ms in all
 * (res->timed_out); abort once the body passes lim->max_bytes, whether or
 * not a Content-Length announced it (res->too_large). Every failure removes
 * the temp file; a failed local write sets res->write_errno (ENOSPC...).
 * A verified dest (2xx with a matching checksum, or 304 to our eTag) gets
 * the record "<dest>" HTTP_VERIFIED_SUFFIX holding its md5, for a later
 * user of the file (the upgrader) to check it against; failing to write it
 * fails the download.
 * Result: res->ok && (code 2xx or 304) means dest holds the file whose md5 is
 * res->md5; anything else leaves dest untouched.
 */
int http_download(const char *path, const char *dest, const char *etag,
    const struct http_dl_limits *lim, http_cb cb, void *arg);

/** Blocking variant of http_download; fills *res. 0 on success, else -1. */
int http_download_sync(const char *path, const char *dest, const char *etag,
    const struct http_dl_limits *lim, struct http_result *res);

/**
 * Parse one response header line as libcurl passes it to the header
 * callback ("Name: value\r\n", len bytes, not NUL-terminated) for the
 * download checksum X-Checksum-Md5 (protocol §7.5; bk-ci
 * upgrade/files/download). Returns 0 when it is another header (out
 * untouched); 1 when it is that header: out is its 32 hex digits in lower
 * case, "" for an empty value (no checksum: the download then fails as
 * unverified, unlike GoAgent), or, when the
 * value is anything else, '!' plus at most 31 printable bytes of it, which
 * never equals an md5, so the download fails.
 */
int http_md5_header_parse(const char *line, size_t len, char out[MD5_HEX_LEN]);

/** Free a result's body (safe to call twice). */
void http_result_free(struct http_result *res);

/**
 * Observer of every finished asynchronous request to the BK-CI gateway
 * (not the _sync ones, not http_url_request):
 * called from the loop before the request's own callback with its path
 * (no query string; borrowed) and its result (borrowed, read only). One
 * observer per process; NULL removes it. Used by the operator metrics.
 */
typedef void (*http_observe_fn)(const char *path, const struct http_result *res);
void http_set_observer(http_observe_fn fn);

/** Number of requests in flight. */
int http_in_flight(void);

/**
 * Event-loop integration: wait up to timeout_ms for curl's sockets or any of
 * the n extra descriptors (poll(2) semantics; revents filled). Returns the
 * number of ready extra fds (>= 0) or -1 on error.
 */
int http_wait(struct pollfd *extra, unsigned int n, int timeout_ms);
/** Drive transfers and run the callbacks of finished requests. */
void http_dispatch(void);

#endif
