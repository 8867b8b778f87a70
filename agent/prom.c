/*
 * prom.c - the local Prometheus endpoint (devops.agent.metrics.listen):
 * GET /metrics answers the text exposition of ops_prom_text(); every other
 * path is 404 and every other method 405. libmicrohttpd runs without a
 * thread of its own: its epoll fd sits in our event loop (ev.h) and
 * MHD_run() does the work when it is readable or its timeout is due, so a
 * scrape never blocks the loop. Connections, their memory and their idle
 * time are capped, so no client can make it allocate without bound.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "ev.h"
#include "log.h"
#include "ops.h"
#include "util.h"

#define PROM_CONNECTIONS	8	/* at once */
#define PROM_CONN_MEMORY	((size_t)32 * 1024)	/* bytes per connection */
#define PROM_IDLE_SEC		5
#define PROM_CONTENT_TYPE	"text/plain; version=0.0.4; charset=utf-8"

static struct {
	struct MHD_Daemon	*d;
	int			 fd;	/* MHD's epoll fd in our loop, or -1 */
	struct timer		 timer;
} S = { NULL, -1, { 0 } };

/* Queue a fixed text answer. */
static enum MHD_Result
answer(struct MHD_Connection *c, unsigned int code, char *text, int owned)
{
	struct MHD_Response *r;
	enum MHD_Result rc;

	r = MHD_create_response_from_buffer(strlen(text), text, owned ?
	    MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (r == NULL) {
		if (owned)
			free(text);
		return MHD_NO;
	}
	(void)MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
	    code == MHD_HTTP_OK ? PROM_CONTENT_TYPE : "text/plain; charset=utf-8");
	if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
		(void)MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	rc = MHD_queue_response(c, code, r);
	MHD_destroy_response(r);
	return rc;
}

/* One request: GET or HEAD /metrics only. */
static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **req_cls)
{
	(void)cls; (void)version; (void)upload_data; (void)req_cls;
	/* A body is never read: the answer goes out on the first call. */
	*upload_data_size = 0;
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
	    strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED,
		    "only GET /metrics is served\n", 0);
	if (strcmp(url, "/metrics") != 0)
		return answer(c, MHD_HTTP_NOT_FOUND, "only /metrics is served\n", 0);
	return answer(c, MHD_HTTP_OK, ops_prom_text(), 1);
}

/* Run MHD's pending work, then arm the timer for its next deadline. */
static void
prom_run(void)
{
	MHD_UNSIGNED_LONG_LONG ms;

	if (S.d == NULL)
		return;
	(void)MHD_run(S.d);
	if (MHD_get_timeout(S.d, &ms) == MHD_YES)
		timer_set(&S.timer, ms > 60000 ? 60000 : (int64_t)ms);
	else
		timer_cancel(&S.timer);
}

/* The epoll fd is readable. */
static void
prom_ready(int fd, short revents, void *arg)
{
	(void)fd; (void)revents; (void)arg;
	prom_run();
}

/* MHD's timeout is due (idle connections). */
static void
prom_tick(void *arg)
{
	(void)arg;
	prom_run();
}

/* 1 when sa is a loopback address. */
static int
is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	}
	return 0;
}

/* Split "host:port" or "[v6]:port" into host and port (new strings). */
static int
split_listen(const char *listen, char **host, char **port)
{
	const char *colon;

	if (listen[0] == '[') {
		const char *end = strchr(listen, ']');
		if (end == NULL || end[1] != ':')
			return -1;
		*host = xstrndup(listen + 1, (size_t)(end - listen - 1));
		*port = xstrdup(end + 2);
		return 0;
	}
	if ((colon = strrchr(listen, ':')) == NULL || colon == listen)
		return -1;
	*host = xstrndup(listen, (size_t)(colon - listen));
	*port = xstrdup(colon + 1);
	return 0;
}

/* Listen on the metrics address (ops.h). */
int
prom_start(const char *listen, int remote)
{
	struct addrinfo hints, *ai = NULL;
	const union MHD_DaemonInfo *info;
	char *host = NULL, *port = NULL;
	unsigned int flags = MHD_USE_EPOLL;
	int rc;

	if (split_listen(listen, &host, &port) == -1) {
		log_error("metrics: devops.agent.metrics.listen=%s is not "
		    "host:port; the metrics endpoint is off", listen);
		return -1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, port, &hints, &ai);
	free(host);
	free(port);
	if (rc != 0) {
		log_error("metrics: devops.agent.metrics.listen=%s: %s (a numeric "
		    "address and port are needed); the metrics endpoint is off",
		    listen, gai_strerror(rc));
		return -1;
	}
	if (!is_loopback(ai->ai_addr) && !remote) {
		log_error("metrics: %s is not a loopback address; set "
		    "devops.agent.metrics.remote=true to serve other hosts; the "
		    "metrics endpoint is off", listen);
		freeaddrinfo(ai);
		return -1;
	}
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	S.d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL,
	    MHD_OPTION_SOCK_ADDR, ai->ai_addr,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int)PROM_CONNECTIONS,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, PROM_CONN_MEMORY,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)PROM_IDLE_SEC,
	    MHD_OPTION_END);
	freeaddrinfo(ai);
	if (S.d == NULL) {
		log_error("metrics: cannot listen on %s: %s; the metrics endpoint "
		    "is off", listen, strerror(errno));
		return -1;
	}
	info = MHD_get_daemon_info(S.d, MHD_DAEMON_INFO_EPOLL_FD);
	if (info == NULL || ev_fd_add(info->epoll_fd, POLLIN, prom_ready,
	    NULL) == -1) {
		log_error("metrics: cannot add the server to the event loop; the "
		    "metrics endpoint is off");
		MHD_stop_daemon(S.d);
		S.d = NULL;
		return -1;
	}
	S.fd = info->epoll_fd;
	timer_init(&S.timer, "metrics-http", prom_tick, NULL);
	log_info("metrics: serving GET /metrics on %s", listen);
	return 0;
}

/* Stop the endpoint (ops.h). */
void
prom_stop(void)
{
	if (S.d == NULL)
		return;
	ev_fd_del(S.fd);
	timer_cancel(&S.timer);
	MHD_stop_daemon(S.d);
	S.d = NULL;
	S.fd = -1;
}
