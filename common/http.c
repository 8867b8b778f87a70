/* http.c - libcurl client: auth headers, timeouts, caps, CA, proxy, downloads. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config.h"
#include "fsutil.h"
#include "http.h"
#include "log.h"
#include "util.h"

struct http_req {
	CURL		*easy;
	struct curl_slist *headers;
	http_cb		 cb;
	void		*arg;
	struct http_result res;
	size_t		 cap;		/* allocated body bytes */
	/* downloads */
	int		 fd;		/* temp file, -1 for JSON calls */
	char		*tmp;		/* temp path */
	char		*dest;		/* final path */
	char		*etag;		/* md5 of dest sent as eTag, or NULL */
	long long	 max_bytes;	/* body cap of a download, bytes */
	long long	 written;	/* body bytes written so far */
	struct md5_stream *md5;
	char		 curl_err[CURL_ERROR_SIZE];	/* libcurl's detailed text */
	/* http_url_request */
	long		 id;		/* > 0 for requests that can be cancelled */
	size_t		 max_body;	/* response cap; 0 = HTTP_MAX_BODY */
	http_stream_fn	 stream;	/* body sink of a streaming request */
	void		*stream_arg;
	char		*path;		/* request path without the query (observer) */
	struct http_req	*next;
};

static struct {
	CURLM		*multi;
	char		*project_id, *agent_id, *secret_key;
	char		*gateway;
	long		 timeout_ms;
	char		*ca_file;
	char		*user_agent;
	struct http_req	*reqs;		/* in flight */
	int		 n;
	long		 last_id;	/* ids of http_url_request */
} H;

/* The proxy lookup of the agent, or NULL (http_set_proxy_lookup). */
static http_proxy_fn proxy_fn;

/* Set the per-request proxy lookup (see http.h). */
void
http_set_proxy_lookup(http_proxy_fn fn)
{
	proxy_fn = fn;
}

/*
 * Set the proxy of one request: from the lookup when it names an HTTP or
 * HTTPS proxy, else from the environment, accepting upper and lower case
 * names.
 */
static void
set_proxy(CURL *easy, const char *url)
{
	const char *p, *np;
	int https = strncasecmp(url, "https:", 6) == 0;

	if (proxy_fn != NULL) {
		const char *hp = proxy_fn("HTTP_PROXY");
		const char *sp = proxy_fn("HTTPS_PROXY");

		if (!str_blank(hp != NULL ? hp : "") ||
		    !str_blank(sp != NULL ? sp : "")) {
			p = https ? sp : hp;
			np = proxy_fn("NO_PROXY");
			/* "" turns libcurl's own environment lookup off. */
			curl_easy_setopt(easy, CURLOPT_PROXY, p != NULL ? p : "");
			curl_easy_setopt(easy, CURLOPT_NOPROXY, np != NULL ? np : "");
			return;
		}
	}
	if (https)
		p = getenv("https_proxy") ? getenv("https_proxy") : getenv("HTTPS_PROXY");
	else
		p = getenv("http_proxy") ? getenv("http_proxy") : getenv("HTTP_PROXY");
	np = getenv("no_proxy") ? getenv("no_proxy") : getenv("NO_PROXY");
	if (p != NULL && *p != '\0')
		curl_easy_setopt(easy, CURLOPT_PROXY, p);
	if (np != NULL && *np != '\0')
		curl_easy_setopt(easy, CURLOPT_NOPROXY, np);
}

/* Add the PEM certificates of H.ca_file to the default trust store. */
static CURLcode
ssl_ctx_cb(CURL *easy, void *ssl_ctx, void *arg)
{
	X509_STORE *store = SSL_CTX_get_cert_store((SSL_CTX *)ssl_ctx);
	BIO *bio;
	X509 *x;

	(void)easy;
	(void)arg;
	if (H.ca_file == NULL || (bio = BIO_new_file(H.ca_file, "r")) == NULL)
		return CURLE_OK;
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		(void)X509_STORE_add_cert(store, x);
		X509_free(x);
	}
	BIO_free(bio);
	return CURLE_OK;
}

/* Set up libcurl and the shared request settings. */
int
http_init(const struct http_settings *s)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -1;
	if ((H.multi = curl_multi_init()) == NULL)
		return -1;
	H.project_id = xstrdup(s->project_id ? s->project_id : "");
	H.agent_id = xstrdup(s->agent_id ? s->agent_id : "");
	H.secret_key = xstrdup(s->secret_key ? s->secret_key : "");
	H.gateway = xstrdup(s->gateway ? s->gateway : "");
	H.timeout_ms = s->timeout_ms > 0 ? s->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
	H.ca_file = s->ca_file != NULL && fs_is_file(s->ca_file) ?
	    xstrdup(s->ca_file) : NULL;
	H.user_agent = xstrdup(s->user_agent ? s->user_agent : "devopsAgent");
	log_add_secret(H.secret_key);
	return 0;
}

static void req_free(struct http_req *r);

/* Drop every pending request and free the client. */
void
http_shutdown(void)
{
	while (H.reqs != NULL) {
		struct http_req *r = H.reqs;
		H.reqs = r->next;
		curl_multi_remove_handle(H.multi, r->easy);
		req_free(r);
	}
	H.n = 0;
	if (H.multi != NULL)
		curl_multi_cleanup(H.multi);
	H.multi = NULL;
	free(H.project_id);
	free(H.agent_id);
	free(H.secret_key);
	free(H.gateway);
	free(H.ca_file);
	free(H.user_agent);
	memset(&H, 0, sizeof(H));
	curl_global_cleanup();
}

/* Use another gateway for later requests. */
void
http_set_gateway(const char *gateway)
{
	free(H.gateway);
	H.gateway = xstrdup(gateway);
}

/* Change the JSON call timeout. */
void
http_set_timeout_ms(long ms)
{
	H.timeout_ms = ms > 0 ? ms : HTTP_DEFAULT_TIMEOUT_MS;
}

/* Body sink for JSON calls: grow up to HTTP_MAX_BODY, then abort. */
static size_t
write_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct http_req *r = arg;
	size_t n = size * nmemb, max = r->max_body ? r->max_body : HTTP_MAX_BODY;

	if (r->res.len + n > max) {
		snprintf(r->res.error, sizeof(r->res.error),
		    "response body larger than %zu bytes", max);
		return 0;
	}
	if (r->res.len + n + 1 > r->cap) {
		size_t cap = r->cap ? r->cap : 1024;
		while (cap < r->res.len + n + 1)
			cap *= 2;
		if (cap > max + 1)
			cap = max + 1;
		r->res.body = xrealloc(r->res.body, cap);
		r->cap = cap;
	}
	memcpy(r->res.body + r->res.len, ptr, n);
	r->res.len += n;
	r->res.body[r->res.len] = '\0';
	return n;
}

/* Body sink for downloads: temp file + streaming md5. */
static size_t
write_file(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct http_req *r = arg;
	size_t n = size * nmemb, done = 0;
	long code = 0;

	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code < 200 || code >= 300) {
		/* Error page: keep a bounded copy for the log, not the file. */
		return write_body(ptr, size, nmemb, arg) == n ? n : 0;
	}
	/* The cap holds with or without Content-Length (an endless body). */
	if (r->written + (long long)n > r->max_bytes) {
		r->res.too_large = 1;
		snprintf(r->res.error, sizeof(r->res.error),
		    "body larger than the %lld-byte cap of this file; abandoned",
		    r->max_bytes);
		return 0;
	}
	while (done < n) {
		ssize_t w = write(r->fd, ptr + done, n - done);
		if (w == -1) {
			if (errno == EINTR)
				continue;
			r->res.write_errno = errno;
			snprintf(r->res.error, sizeof(r->res.error),
			    "write %s: %s", r->tmp, strerror(errno));
			return 0;
		}
		done += (size_t)w;
	}
	r->written += (long long)n;
	md5_stream_update(r->md5, ptr, n);
	return n;
}

/* Parse an X-Checksum-Md5 header line (see http.h). */
int
http_md5_header_parse(const char *line, size_t len, char out[MD5_HEX_LEN])
{
	static const char name[] = "x-checksum-md5:";
	char val[MD5_HEX_LEN];
	size_t i, j = 0;
	int hex = 1;

	if (len < sizeof(name) - 1 ||
	    strncasecmp(line, name, sizeof(name) - 1) != 0)
		return 0;
	/* Blanks anywhere are dropped; anything else must be a hex digit. */
	for (i = sizeof(name) - 1; i < len; i++) {
		char c = line[i];

		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			continue;
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		    (c >= 'A' && c <= 'F')))
			hex = 0;
		if (j < 32)
			val[j] = (char)(c >= 'A' && c <= 'F' ? c + 32 : c);
		j++;
	}
	if (hex && j == 32) {
		memcpy(out, val, 32);
		out[32] = '\0';
		return 1;
	}
	if (j == 0) {
		/* An empty value is no checksum (§7.5: "non-empty"). */
		out[0] = '\0';
		return 1;
	}
	/*
	 * Not 32 hex digits: a value that never equals an md5 ('!' is not
	 * hex), so the download fails. Control bytes are kept out of it.
	 */
	out[0] = '!';
	for (i = 0; i < 31 && i < j && i < 32; i++)
		if (val[i] >= 0x20 && val[i] < 0x7f)
			out[i + 1] = val[i];
		else
			out[i + 1] = '?';
	out[i + 1] = '\0';
	return 1;
}

/* Remember X-Checksum-Md5. */
static size_t
header_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	struct http_req *r = arg;
	size_t n = size * nitems;

	(void)http_md5_header_parse(buf, n, r->res.md5_header);
	return n;
}

/* Free a request, its temp file and its result. */
static void
req_free(struct http_req *r)
{
	if (r->easy != NULL)
		curl_easy_cleanup(r->easy);
	curl_slist_free_all(r->headers);
	if (r->fd != -1)
		close(r->fd);
	if (r->tmp != NULL)
		unlink(r->tmp);
	if (r->md5 != NULL) {
		char hex[MD5_HEX_LEN];
		md5_stream_final(r->md5, hex);
	}
	free(r->tmp);
	free(r->dest);
	free(r->etag);
	free(r->path);
	http_result_free(&r->res);
	free(r);
}

/* The observer of finished asynchronous requests, or NULL. */
static http_observe_fn observer;

/* Set the observer (http.h). */
void
http_set_observer(http_observe_fn fn)
{
	observer = fn;
}

/*
 * The settings every request shares: no redirects (docs/security.md:
 * libcurl would resend our custom auth headers to any Location, so a 3xx
 * ends the request instead, req_finish; POSTREDIR is moot then, set so
 * that a later change to FOLLOWLOCATION could never turn a POST into a
 * GET), http(s) only, connect timeout, libcurl's error text.
 */
static struct http_req *
req_base(const char *url)
{
	struct http_req *r = xcalloc(1, sizeof(*r));

	r->fd = -1;
	if ((r->easy = curl_easy_init()) == NULL)
		fatalx("http: curl_easy_init failed");
	curl_easy_setopt(r->easy, CURLOPT_URL, url);
	curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(r->easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(r->easy, CURLOPT_POSTREDIR, (long)CURL_REDIR_POST_ALL);
	curl_easy_setopt(r->easy, CURLOPT_USERAGENT, H.user_agent ?
	    H.user_agent : "devopsAgent");
	curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
	curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->curl_err);
	curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(r->easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	return r;
}

/* Method and body of a request (POST/PUT carry body as given). */
static void
req_method(struct http_req *r, const char *method, const char *body,
    const char *content_type)
{
	if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
		char *h = xasprintf("Content-Type: %s", content_type);

		r->headers = curl_slist_append(r->headers, h);
		free(h);
		curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE,
		    (long)(body ? strlen(body) : 0));
		curl_easy_setopt(r->easy, CURLOPT_COPYPOSTFIELDS, body ? body : "");
		if (strcmp(method, "PUT") == 0)
			curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST, "PUT");
	} else if (strcmp(method, "DELETE") == 0) {
		curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST, "DELETE");
	}
}

/* A request to the BK-CI gateway: the auth headers, proxies, .cert. */
static struct http_req *
req_new(const char *method, const char *path, const char *body)
{
	char *url = config_url(H.gateway, path), *h;
	struct http_req *r = req_base(url);

	r->path = xstrndup(path, strcspn(path, "?"));

	curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(r->easy, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
	set_proxy(r->easy, url);
	free(url);

	r->headers = curl_slist_append(r->headers, "X-DEVOPS-BUILD-TYPE: AGENT");
	h = xasprintf("X-DEVOPS-PROJECT-ID: %s", H.project_id);
	r->headers = curl_slist_append(r->headers, h);
	free(h);
	h = xasprintf("X-DEVOPS-AGENT-ID: %s", H.agent_id);
	r->headers = curl_slist_append(r->headers, h);
	free(h);
	h = xasprintf("X-DEVOPS-AGENT-SECRET-KEY: %s", H.secret_key);
	r->headers = curl_slist_append(r->headers, h);
	free(h);
	r->headers = curl_slist_append(r->headers, "Expect:");
	req_method(r, method, body, "application/json; charset=utf-8");
	curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
	return r;
}

/* A JSON call: timeout and a capped body buffer. */
static struct http_req *
json_req_new(const char *method, const char *path, const char *body)
{
	struct http_req *r = req_new(method, path, body);

	curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, H.timeout_ms);
	curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, write_body);
	curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
	return r;
}

/* A download: temp file beside dest, streaming MD5, size/time caps. */
static struct http_req *
download_req_new(const char *path, const char *dest, const char *etag,
    const struct http_dl_limits *lim)
{
	struct http_req *r = req_new("GET", path, NULL);
	int stall_sec = lim->stall_sec > 0 ? lim->stall_sec : 30;

	r->max_bytes = lim->max_bytes > 0 ? lim->max_bytes : HTTP_DL_MAX_BYTES;
	r->dest = xstrdup(dest);
	r->etag = etag != NULL ? xstrdup(etag) : NULL;
	r->tmp = xasprintf("%s.part.XXXXXX", dest);
	if ((r->fd = mkstemp(r->tmp)) == -1) {
		snprintf(r->res.error, sizeof(r->res.error), "create %s: %s",
		    r->tmp, strerror(errno));
		r->res.write_errno = errno;
		free(r->tmp);
		r->tmp = NULL;
		req_free(r);
		return NULL;
	}
	(void)fcntl(r->fd, F_SETFD, FD_CLOEXEC);
	r->md5 = md5_stream_new();
	curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, write_file);
	curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(r->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(r->easy, CURLOPT_LOW_SPEED_TIME, (long)stall_sec);
	curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS,
	    lim->total_ms > 0 ? lim->total_ms : HTTP_DL_TOTAL_MS);
	curl_easy_setopt(r->easy, CURLOPT_MAXFILESIZE_LARGE,
	    (curl_off_t)r->max_bytes);
	return r;
}

/*
 * A 3xx answer: the request fails, loudly. The Location is logged with its
 * control bytes and blanks replaced, at most 200 bytes of it.
 */
static void
redirect_refuse(struct http_req *r)
{
	char *loc = NULL, *url = NULL, shown[201];
	size_t i;

	curl_easy_getinfo(r->easy, CURLINFO_REDIRECT_URL, &loc);
	curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url);
	for (i = 0; loc != NULL && loc[i] != '\0' && i < sizeof(shown) - 1; i++)
		shown[i] = (char)(loc[i] > 0x20 && loc[i] < 0x7f ? loc[i] : '?');
	shown[i] = '\0';
	r->res.ok = 0;
	r->res.redirected = 1;
	snprintf(r->res.error, sizeof(r->res.error),
	    "redirect refused: HTTP %ld to %s (no redirect is followed)",
	    r->res.code, i > 0 ? shown : "(no Location)");
	log_warnx("http: %s answered HTTP %ld, a redirect to %s; refused: "
	    "requests never follow redirects, so the agent's secret stays with "
	    "the gateway", url != NULL ? url : "?", r->res.code,
	    i > 0 ? shown : "(no Location)");
}

/* Write "<dest>.md5" (HTTP_VERIFIED_SUFFIX) holding res.md5. 0 or -1. */
static int
verified_record(struct http_req *r)
{
	char *path = xasprintf("%s" HTTP_VERIFIED_SUFFIX, r->dest);
	int rc = fs_write_atomic(path, r->res.md5, strlen(r->res.md5), 0644);

	free(path);
	return rc;
}

/* Turn curl's outcome into r->res; for downloads, verify and rename. */
static void
req_finish(struct http_req *r, CURLcode rc)
{
	double t = 0;

	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->res.code);
	curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &t);
	r->res.elapsed_ms = (long long)(t * 1000);
	if (rc == CURLE_FILESIZE_EXCEEDED) {
		r->res.too_large = 1;
		snprintf(r->res.error, sizeof(r->res.error),
		    "Content-Length above the %lld-byte cap of this file; "
		    "abandoned", r->max_bytes);
	}
	if (rc != CURLE_OK) {
		/* Ours first (cap, write), else curl's detailed text. */
		if (r->res.error[0] == '\0')
			snprintf(r->res.error, sizeof(r->res.error), "%s",
			    r->curl_err[0] != '\0' ? r->curl_err :
			    curl_easy_strerror(rc));
		r->res.ok = 0;
		r->res.timed_out = rc == CURLE_OPERATION_TIMEDOUT;
		return;
	}
	r->res.ok = 1;
	if (r->res.code >= 300 && r->res.code < 400 && r->res.code != 304) {
		redirect_refuse(r);
		return;
	}
	if (r->dest == NULL)
		return;

	/* Download epilogue. */
	if (r->res.code == 304) {
		if (r->etag == NULL) {
			/* Nothing was offered to compare: nothing is verified. */
			r->res.ok = 0;
			snprintf(r->res.error, sizeof(r->res.error),
			    "HTTP 304 although no eTag was sent; refused");
			return;
		}
		snprintf(r->res.md5, sizeof(r->res.md5), "%s", r->etag);
		/* The server compared our eTag with its md5: dest is verified. */
		if (verified_record(r) == -1)
			goto write_fail;
		return;
	}
	if (r->res.code < 200 || r->res.code >= 300) {
		r->res.ok = 0;
		snprintf(r->res.error, sizeof(r->res.error), "HTTP %ld%s", r->res.code,
		    r->res.code == 404 ? " (file not found)" : "");
		return;
	}
	md5_stream_final(r->md5, r->res.md5);
	r->md5 = NULL;
	if (r->res.md5_header[0] == '\0') {
		/* Nothing to check the file against: never used unverified. */
		r->res.ok = 0;
		r->res.unverified = 1;
		snprintf(r->res.error, sizeof(r->res.error),
		    "no X-Checksum-Md5 header: the file cannot be verified; "
		    "refused");
		return;
	}
	if (strcmp(r->res.md5_header, r->res.md5) != 0) {
		r->res.ok = 0;
		snprintf(r->res.error, sizeof(r->res.error),
		    "md5 mismatch: got %s, server says %s", r->res.md5,
		    r->res.md5_header);
		return;
	}
	if (fsync(r->fd) == -1 || close(r->fd) == -1) {
		r->fd = -1;
		goto write_fail;
	}
	r->fd = -1;
	if (chmod(r->tmp, 0644) == -1 || rename(r->tmp, r->dest) == -1)
		goto write_fail;
	free(r->tmp);
	r->tmp = NULL;
	if (verified_record(r) == -1)
		goto write_fail;
	return;
write_fail:
	r->res.ok = 0;
	r->res.write_errno = errno;
	snprintf(r->res.error, sizeof(r->res.error), "install %s: %s", r->dest,
	    strerror(errno));
}

/* Move a finished request's result to the caller's struct. */
static void
req_take_result(struct http_req *r, struct http_result *out)
{
	*out = r->res;
	r->res.body = NULL;
	r->res.len = 0;
}

/* Hand a request to the multi handle. */
static int
req_submit(struct http_req *r, http_cb cb, void *arg)
{
	r->cb = cb;
	r->arg = arg;
	if (curl_multi_add_handle(H.multi, r->easy) != CURLM_OK) {
		req_free(r);
		return -1;
	}
	r->next = H.reqs;
	H.reqs = r;
	H.n++;
	return 0;
}

/* Start an asynchronous JSON call. */
int
http_json(const char *method, const char *path, const char *body,
    http_cb cb, void *arg)
{
	return req_submit(json_req_new(method, path, body), cb, arg);
}

/* Start an asynchronous JSON call with extra headers (build logs). */
int
http_json_headers(const char *method, const char *path, const char *body,
    const char *const headers[], http_cb cb, void *arg)
{
	struct http_req *r = json_req_new(method, path, body);
	size_t i;

	for (i = 0; headers != NULL && headers[i] != NULL; i++)
		r->headers = curl_slist_append(r->headers, headers[i]);
	curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
	return req_submit(r, cb, arg);
}

/* POST with a caller-chosen Content-Type (line protocol). */
int
http_post(const char *path, const char *content_type, const char *body,
    http_cb cb, void *arg)
{
	struct http_req *r = json_req_new("POST", path, body);
	struct curl_slist *h, *list = NULL;
	char *ct = xasprintf("Content-Type: %s", content_type);

	/* Same headers, but our Content-Type instead of the JSON one. */
	for (h = r->headers; h != NULL; h = h->next)
		if (strncasecmp(h->data, "Content-Type:", 13) != 0)
			list = curl_slist_append(list, h->data);
	list = curl_slist_append(list, ct);
	free(ct);
	curl_slist_free_all(r->headers);
	r->headers = list;
	curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
	return req_submit(r, cb, arg);
}

/* Redis task queue: POST JSON to an absolute URL without the agent's headers. */
int
http_post_url(const char *url, const char *body, http_cb cb, void *arg)
{
	struct http_url_opts o;

	if (url == NULL || (strncmp(url, "http://", 7) != 0 &&
	    strncmp(url, "https://", 8) != 0))
		return -1;
	memset(&o, 0, sizeof(o));
	o.content_type = "application/json; charset=utf-8";
	return http_url_request("POST", url, body, &o, cb, arg) == -1 ? -1 : 0;
}

/* Body sink of a streaming request: hand each chunk to the caller. */
static size_t
write_stream(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct http_req *r = arg;
	size_t n = size * nmemb;

	if (r->stream(ptr, n, r->stream_arg) == -1) {
		snprintf(r->res.error, sizeof(r->res.error),
		    "stream closed by the receiver");
		return 0;
	}
	return n;
}

/* A request to any URL, without the BK-CI headers (see http.h). */
long
http_url_request(const char *method, const char *url, const char *body,
    const struct http_url_opts *o, http_cb cb, void *arg)
{
	struct http_url_opts none;
	struct http_req *r;

	if (o == NULL) {
		memset(&none, 0, sizeof(none));
		o = &none;
	}
	r = req_base(url);
	/* Direct: an environment proxy must not capture cluster traffic. */
	curl_easy_setopt(r->easy, CURLOPT_PROXY, "");
	curl_easy_setopt(r->easy, CURLOPT_NOPROXY, "*");
	if (o->connect_timeout_ms > 0)
		curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS,
		    o->connect_timeout_ms);
	if (o->timeout_ms > 0)
		curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, o->timeout_ms);
	else if (o->timeout_ms < 0 || o->stream == NULL)
		curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, H.timeout_ms > 0 ?
		    H.timeout_ms : (long)HTTP_DEFAULT_TIMEOUT_MS);
	curl_easy_setopt(r->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(r->easy, CURLOPT_TCP_KEEPIDLE, 10L);
	curl_easy_setopt(r->easy, CURLOPT_TCP_KEEPINTVL, 5L);
	if (o->ca_file != NULL && *o->ca_file != '\0')
		curl_easy_setopt(r->easy, CURLOPT_CAINFO, o->ca_file);
	if (o->cert_file != NULL && *o->cert_file != '\0')
		curl_easy_setopt(r->easy, CURLOPT_SSLCERT, o->cert_file);
	if (o->key_file != NULL && *o->key_file != '\0')
		curl_easy_setopt(r->easy, CURLOPT_SSLKEY, o->key_file);
	r->headers = curl_slist_append(r->headers, "Expect:");
	req_method(r, method, body, o->content_type != NULL ?
	    o->content_type : "application/json");
	curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
	if (o->stream != NULL) {
		r->stream = o->stream;
		r->stream_arg = o->stream_arg;
		curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, write_stream);
	} else {
		r->max_body = o->max_body;
		curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, write_body);
	}
	curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
	r->id = ++H.last_id;
	if (req_submit(r, cb, arg) == -1)
		return -1;
	return H.last_id;
}

/* Drop request id without its callback (see http.h). */
void
http_cancel(long id)
{
	struct http_req **pp;

	for (pp = &H.reqs; id > 0 && *pp != NULL; pp = &(*pp)->next)
		if ((*pp)->id == id) {
			struct http_req *r = *pp;

			*pp = r->next;
			curl_multi_remove_handle(H.multi, r->easy);
			H.n--;
			req_free(r);
			return;
		}
}

/* Run a JSON call to the end (upgrader, tests). */
int
http_json_sync(const char *method, const char *path, const char *body,
    struct http_result *res)
{
	struct http_req *r = json_req_new(method, path, body);

	req_finish(r, curl_easy_perform(r->easy));
	req_take_result(r, res);
	req_free(r);
	return res->ok ? 0 : -1;
}

/* Start an asynchronous download. */
int
http_download(const char *path, const char *dest, const char *etag,
    const struct http_dl_limits *lim, http_cb cb, void *arg)
{
	struct http_req *r = download_req_new(path, dest, etag, lim);

	return r == NULL ? -1 : req_submit(r, cb, arg);
}

/* Run a download to the end (upgrader, tests). */
int
http_download_sync(const char *path, const char *dest, const char *etag,
    const struct http_dl_limits *lim, struct http_result *res)
{
	struct http_req *r = download_req_new(path, dest, etag, lim);

	if (r == NULL) {
		memset(res, 0, sizeof(*res));
		snprintf(res->error, sizeof(res->error), "cannot create temp file");
		return -1;
	}
	req_finish(r, curl_easy_perform(r->easy));
	req_take_result(r, res);
	req_free(r);
	return res->ok ? 0 : -1;
}

/* Free the body of a result. */
void
http_result_free(struct http_result *res)
{
	free(res->body);
	res->body = NULL;
	res->len = 0;
}

/* Requests in flight. */
int
http_in_flight(void)
{
	return H.n;
}

/* Wait for curl's sockets and the loop's fds together. */
int
http_wait(struct pollfd *extra, unsigned int n, int timeout_ms)
{
	struct curl_waitfd wfd[16];
	unsigned int i;
	int ready = 0;

	if (n > nitems(wfd))
		n = nitems(wfd);
	for (i = 0; i < n; i++) {
		wfd[i].fd = extra[i].fd;
		wfd[i].events = (short)extra[i].events;
		wfd[i].revents = 0;
	}
	if (curl_multi_poll(H.multi, wfd, n, timeout_ms, NULL) != CURLM_OK)
		return -1;
	for (i = 0; i < n; i++) {
		extra[i].revents = (short)wfd[i].revents;
		if (wfd[i].revents)
			ready++;
	}
	return ready;
}

/* Drive transfers and run the callbacks of finished ones. */
void
http_dispatch(void)
{
	int running, left;
	CURLMsg *m;

	curl_multi_perform(H.multi, &running);
	while ((m = curl_multi_info_read(H.multi, &left)) != NULL) {
		struct http_req *r = NULL, **pp;
		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		CURLcode rc = m->data.result;
		curl_multi_remove_handle(H.multi, r->easy);
		for (pp = &H.reqs; *pp != NULL; pp = &(*pp)->next)
			if (*pp == r) {
				*pp = r->next;
				break;
			}
		H.n--;
		req_finish(r, rc);
		if (observer != NULL && r->path != NULL)
			observer(r->path, &r->res);
		r->cb(&r->res, r->arg);
		req_free(r);
	}
}
