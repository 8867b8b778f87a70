/* test_metrics.c - the metrics point buffer and line-protocol output (agent/metrics.c). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "t.h"
#include "util.h"

/* Number of lines of body starting with prefix. */
static int
count_prefix(const char *body, const char *prefix)
{
	const char *p = body;
	int n = 0;

	while (p != NULL && *p) {
		if (str_starts(p, prefix))
			n++;
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return n;
}

TEST(buffer_is_bounded_and_drops_oldest)
{
	struct mbuf b;
	unsigned long long end;
	char *body;
	int i;

	mbuf_init(&b, 3);
	CHECK(mbuf_batch(&b, 10, &end) == NULL);
	for (i = 1; i <= 5; i++)
		mbuf_push(&b, xasprintf("p%d", i));
	CHECK(b.count == 3);
	CHECK(b.dropped == 2);
	body = mbuf_batch(&b, 2, &end);
	CHECK_STR(body, "p3\np4\n");
	free(body);
	/* A point arriving while the batch is in flight pushes p3 out. */
	mbuf_push(&b, xstrdup("p6"));
	mbuf_ack(&b, end);
	body = mbuf_batch(&b, 10, &end);
	CHECK_STR(body, "p5\np6\n");
	free(body);
	mbuf_ack(&b, end);
	CHECK(b.count == 0);
	mbuf_free(&b);
}

/*
 * The array grows with the lines held, keeping their order when the ring
 * has wrapped, and is given back when a delivery empties a backlog.
 */
TEST(buffer_grows_in_order_and_shrinks_when_delivered)
{
	struct mbuf b;
	unsigned long long end;
	char *body, want[8];
	size_t i, len;
	int ok = 1;

	mbuf_init(&b, 500);
	CHECK(b.alloc == 0);
	for (i = 0; i < 40; i++)
		mbuf_push(&b, xasprintf("a%zu", i));
	body = mbuf_batch(&b, 30, &end);
	free(body);
	mbuf_ack(&b, end);		/* head is now inside the array */
	CHECK(b.count == 10 && b.head == 30 && b.alloc == 64);
	for (i = 0; i < 200; i++)	/* wraps, then grows twice */
		mbuf_push(&b, xasprintf("b%zu", i));
	CHECK(b.count == 210 && b.alloc == 256 && b.dropped == 0);
	body = mbuf_batch(&b, 1000, &end);
	CHECK(body != NULL);
	if (body == NULL)
		return;
	len = 0;
	for (i = 0; i < 210 && ok; i++) {
		snprintf(want, sizeof(want), i < 10 ? "a%zu\n" : "b%zu\n",
		    i < 10 ? i + 30 : i - 10);
		ok = strncmp(body + len, want, strlen(want)) == 0;
		len += strlen(want);
	}
	CHECK(ok && body[len] == '\0');
	free(body);
	mbuf_ack(&b, end);
	CHECK(b.count == 0 && b.alloc == 0 && b.lines == NULL);
	mbuf_push(&b, xstrdup("c"));
	body = mbuf_batch(&b, 10, &end);
	CHECK_STR(body, "c\n");
	free(body);
	mbuf_free(&b);
}

TEST(floats_like_telegraf)
{
	char buf[400];

	metrics_format_float(93.1, buf, sizeof(buf));
	CHECK_STR(buf, "93.1");
	metrics_format_float(100, buf, sizeof(buf));
	CHECK_STR(buf, "100");
	metrics_format_float(0, buf, sizeof(buf));
	CHECK_STR(buf, "0");
	metrics_format_float(1e-7, buf, sizeof(buf));
	CHECK_STR(buf, "0.0000001");
	metrics_format_float(1e20, buf, sizeof(buf));
	CHECK_STR(buf, "100000000000000000000");
	metrics_format_float(2.0 / 3.0, buf, sizeof(buf));
	CHECK(strtod(buf, NULL) == 2.0 / 3.0);
}

TEST(collect_writes_telegraf_points)
{
	struct mbuf b;
	struct metrics_tags tags = { "agent-1", "proj 1", "my host,x=1" };
	unsigned long long end;
	char *body;
	int n1, n2;

	mbuf_init(&b, 10000);
	n1 = metrics_collect(&b, &tags, 1717000000000000000LL);
	usleep(300000);		/* let the CPU tick counters move */
	n2 = metrics_collect(&b, &tags, 1717000060000000000LL);
	CHECK(n1 > 0);
	body = mbuf_batch(&b, 10000, &end);
	CHECK(body != NULL);
	if (body == NULL)
		return;
	/* cpu needs two rounds: none in the first, total + per-CPU in the second. */
	CHECK(count_prefix(body, "cpu,") == n2 - n1);
	CHECK(strstr(body, "cpu,agentId=agent-1,cpu=cpu-total,host=my\\ host\\,x\\=1,"
	    "projectId=proj\\ 1 usage_user=") != NULL);
	CHECK(count_prefix(body, "mem,") == 2);
	CHECK(count_prefix(body, "swap,") == 2);
	CHECK(count_prefix(body, "kernel,") == 2);
	CHECK(count_prefix(body, "processes,") == 2);
	CHECK(count_prefix(body, "system,") == 2);
	CHECK(strstr(body, ",total=") != NULL);
	CHECK(strstr(body, "uptime_format=\"") != NULL);
	CHECK(strstr(body, "agentSecret") == NULL);
	CHECK(strstr(body, " 1717000060000000000\n") != NULL);
	free(body);
	mbuf_free(&b);
}

int
main(void)
{
	log_set_level(LOG_ERROR);
	RUN(buffer_is_bounded_and_drops_oldest);
	RUN(buffer_grows_in_order_and_shrinks_when_delivered);
	RUN(floats_like_telegraf);
	RUN(collect_writes_telegraf_points);
	return t_done();
}
