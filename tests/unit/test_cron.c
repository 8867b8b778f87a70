/*
 * test_cron.c - common/cronexpr.c against next-fire tables of two oracles
 * (gorhill/cronexpr's own tests and python3-croniter, in UTC and in a
 * DST-free local zone: cronexpr_table.h, gen_cronexpr_table.py), the
 * parser's refusals, agent/cron.c's job decoder and JSONL sink, and the
 * bounded queue of the Redis-stream sink (agent/cron_sink_redis.c) with no
 * Redis at all.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "cron.h"
#include "cron_redis.h"
#include "cronexpr.h"
#include "ev.h"
#include "log.h"
#include "t.h"
#include "util.h"

#include "cronexpr_table.h"

/* Set the local zone for cronexpr_next(..., 0). */
static void
zone_set(const char *tz)
{
	setenv("TZ", tz, 1);
	tzset();
}

/* Every row of both oracles. */
TEST(oracle_table)
{
	size_t i, bad = 0;

	for (i = 0; i < sizeof(cron_rows) / sizeof(cron_rows[0]); i++) {
		const struct cron_row *r = &cron_rows[i];
		struct cronexpr c;
		char err[200];
		int64_t got;

		zone_set(r->tz);
		if (cronexpr_parse(r->expr, &c, err, sizeof(err)) == -1) {
			fprintf(stderr, "  parse '%s': %s\n", r->expr, err);
			bad++;
			continue;
		}
		got = cronexpr_next(&c, r->from * 1000, r->utc);
		if (got != r->next * 1000) {
			if (bad < 10)
				fprintf(stderr, "  '%s' %s from %lld: got %lld, want %lld\n",
				    r->expr, r->tz, r->from, (long long)(got / 1000),
				    r->next);
			bad++;
		}
		/* Not strictly after a fire: the same fire again. */
		if (got > 0)
			CHECK(cronexpr_next(&c, got - 1, r->utc) == got);
	}
	CHECK(bad == 0);
	zone_set("UTC");
}

/*
 * Fresh random 5-field expressions against python3-croniter (live oracle,
 * through gen_cronexpr_table.py --random). Skipped loudly when python3 or
 * croniter is missing (scripts/dev/install-deps.sh test installs both).
 */
TEST(croniter_live)
{
	FILE *p = popen("/usr/bin/python3 tests/unit/gen_cronexpr_table.py "
	    "--random 400 2>/dev/null", "r");
	char line[1024], seed[64] = "?";
	int rows = 0, bad = 0;

	if (p == NULL) {
		fprintf(stderr, "  SKIP croniter_live: cannot start python3\n");
		return;
	}
	while (fgets(line, sizeof(line), p) != NULL) {
		char *f[5], *save = NULL, *q = line;
		struct cronexpr c;
		char err[200];
		long long from, next;
		int64_t got;
		int i;

		if (line[0] == '#') {
			snprintf(seed, sizeof(seed), "%.60s", line + 2);
			seed[strcspn(seed, "\n")] = '\0';
			continue;
		}
		line[strcspn(line, "\n")] = '\0';
		for (i = 0; i < 5; i++, q = NULL)
			if ((f[i] = strtok_r(q, "\t", &save)) == NULL)
				break;
		if (i < 5)
			continue;
		from = strtoll(f[3], NULL, 10);
		next = strtoll(f[4], NULL, 10);
		zone_set(f[1]);
		rows++;
		if (cronexpr_parse(f[0], &c, err, sizeof(err)) == -1) {
			fprintf(stderr, "  '%s': %s (croniter accepts it)\n", f[0], err);
			bad++;
			continue;
		}
		got = cronexpr_next(&c, from * 1000, f[2][0] == '1');
		if (got != next * 1000) {
			if (bad < 10)
				fprintf(stderr, "  '%s' %s from %lld: got %lld, croniter %lld "
				    "(%s)\n", f[0], f[1], from, (long long)(got / 1000),
				    next, seed);
			bad++;
		}
	}
	if (pclose(p) != 0 || rows == 0) {
		fprintf(stderr, "  SKIP croniter_live: no oracle (python3-croniter "
		    "missing?)\n");
		return;
	}
	CHECK(bad == 0);
	zone_set("UTC");
}

/* Fields, names, macros, @every, the year field. */
TEST(forms)
{
	struct cronexpr c;
	char err[200];
	/* 2013-01-01 00:00:00 UTC, a Tuesday. */
	const int64_t t0 = 1356998400000LL;

	CHECK(cronexpr_parse("@hourly", &c, err, sizeof(err)) == 0);
	CHECK(cronexpr_next(&c, t0, 1) == t0 + 3600000);
	CHECK(cronexpr_parse("@DAILY", &c, err, sizeof(err)) == 0);
	CHECK(cronexpr_next(&c, t0, 1) == t0 + 86400000);
	CHECK(cronexpr_parse("@weekly", &c, err, sizeof(err)) == 0);
	CHECK(cronexpr_next(&c, t0, 1) == t0 + 5 * 86400000LL);	/* Sunday */
	CHECK(cronexpr_parse("@monthly", &c, err, sizeof(err)) == 0);
	CHECK(cronexpr_next(&c, t0, 1) == t0 + 31 * 86400000LL);
	CHECK(cronexpr_parse("@annually", &c, err, sizeof(err)) == 0);
	CHECK(cronexpr_next(&c, t0, 1) == t0 + 365 * 86400000LL);
	CHECK(cronexpr_parse("@every 1h30m", &c, err, sizeof(err)) == 0);
	CHECK(c.every_ms == 5400000);
	/* Aligned to the epoch: the same plan times on every machine. */
	CHECK(cronexpr_next(&c, t0 + 1, 1) == (t0 / 5400000 + 1) * 5400000);
	CHECK(cronexpr_parse("@every 1s", &c, err, sizeof(err)) == 0);
	CHECK(cronexpr_next(&c, t0 + 1500, 1) == t0 + 2000);
	/* Six fields: the sixth is the year (gorhill), not seconds. */
	CHECK(cronexpr_parse("0 0 1 1 * 2015", &c, err, sizeof(err)) == 0);
	CHECK(cronexpr_next(&c, t0, 1) == 1420070400000LL);
	CHECK(cronexpr_parse("* * * * * 1980", &c, err, sizeof(err)) == 0);
	CHECK(cronexpr_next(&c, t0, 1) == -1);
	/* Seven fields: seconds first. */
	CHECK(cronexpr_parse("*/20 * * * * * *", &c, err, sizeof(err)) == 0);
	CHECK(cronexpr_next(&c, t0, 1) == t0 + 20000);
	CHECK(cronexpr_parse("0 0 * DEC-jan *", &c, err, sizeof(err)) == -1);
	CHECK(cronexpr_parse("0 0 * January SAT", &c, err, sizeof(err)) == 0);
	/* Only the weekday is restricted: Saturday Jan 5, not every day. */
	CHECK(cronexpr_next(&c, t0, 1) == t0 + 4 * 86400000LL);
	CHECK(cronexpr_parse("0 0 2 * SAT", &c, err, sizeof(err)) == 0);
	CHECK(cronexpr_next(&c, t0, 1) == t0 + 86400000);	/* both: OR */
	CHECK(cronexpr_parse("0 0 ? * 5/1", &c, err, sizeof(err)) == 0);
	CHECK(cronexpr_next(&c, t0, 1) == t0 + 3 * 86400000LL);	/* Friday */
}

/* Refusals name the field. */
TEST(refusals)
{
	static const struct { const char *expr, *msg; } bad[] = {
		{ "", "empty" },
		{ "* * * *", "4 fields" },
		{ "* * * * * * * *", "more than 7" },
		{ "60 * * * *", "field 1 (minute): 60 out of range 0-59" },
		{ "* 24 * * *", "field 2 (hour): 24 out of range" },
		{ "* * 0 * *", "day of month" },
		{ "* * * 13 *", "month" },
		{ "* * * * 8", "day of week" },
		{ "* * * * * 2100", "year" },
		{ "5-1 * * * *", "backwards" },
		{ "*/0 * * * *", "bad step" },
		{ "*/61 * * * *", "step 61" },
		{ "1,,2 * * * *", "empty list item" },
		{ "1, * * * *", "trailing comma" },
		{ "0 0 L * *", "not supported" },
		{ "0 0 * * 5#3", "not supported" },
		{ "0 0 15W * *", "not supported" },
		{ "a * * * *", "cannot read 'a'" },
		{ "* * * foo *", "cannot read 'foo'" },
		{ "@every", "one duration" },
		{ "@every 500ms", "at least 1s" },
		{ "@every 5x", "Go duration" },
		{ "@every 1s 2s", "one duration" },
		{ "@often", "unknown macro" },
		{ "@daily extra", "unknown macro" },
		{ "1234567 * * * *", "cannot read" },
	};
	struct cronexpr c;
	char err[200], big[400];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		CHECK(cronexpr_parse(bad[i].expr, &c, err, sizeof(err)) == -1);
		if (strstr(err, bad[i].msg) == NULL)
			fprintf(stderr, "  '%s': '%s' lacks '%s'\n", bad[i].expr, err,
			    bad[i].msg);
		CHECK(strstr(err, bad[i].msg) != NULL);
	}
	memset(big, '1', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CHECK(cronexpr_parse(big, &c, err, sizeof(err)) == -1);
	CHECK(strstr(err, "longer than") != NULL);
}

/* A DST zone: skipped wall times are not fired, time never runs backwards. */
TEST(dst_zone)
{
	struct cronexpr c;
	char err[200];
	int64_t t, prev;
	int i;

	zone_set("Europe/Berlin");
	CHECK(cronexpr_parse("30 2 * * *", &c, err, sizeof(err)) == 0);
	/* 2025-03-29 12:00 UTC; 02:30 does not exist on 2025-03-30. */
	t = cronexpr_next(&c, 1743249600000LL, 0);
	CHECK(t == 1743381000000LL);	/* 2025-03-31 02:30 CEST */
	CHECK(cronexpr_parse("*/20 * * * *", &c, err, sizeof(err)) == 0);
	/* Over the autumn fold (2025-10-26 01:00 UTC). */
	prev = 1761436800000LL;
	for (i = 0; i < 20; i++) {
		t = cronexpr_next(&c, prev, 0);
		CHECK(t > prev);
		prev = t;
	}
	zone_set("UTC");
}

/* The job decoder. */
TEST(job_parse)
{
	struct cron_job j;
	char err[300], big[CRON_VALUE_MAX + 10];
	const char *ok = "{\"name\":\"a.b-c_1\",\"command\":\"echo hi\","
	    "\"cronExpr\":\"*/5 * * * * * *\",\"extra\":1}";

	CHECK(cron_job_parse("a.b-c_1", ok, strlen(ok), &j, err, sizeof(err)) == 0);
	CHECK_STR(j.name, "a.b-c_1");
	CHECK_STR(j.command, "echo hi");
	CHECK_STR(j.expr, "*/5 * * * * * *");
	cron_job_free(&j);
	CHECK(j.name == NULL);
	CHECK(cron_job_parse("other", ok, strlen(ok), &j, err, sizeof(err)) == -1);
	CHECK(strstr(err, "differs") != NULL);
	CHECK(cron_job_parse(NULL, "[1]", 3, &j, err, sizeof(err)) == -1);
	CHECK(strstr(err, "not a JSON object") != NULL);
#define BAD(v, m) do {							\
	CHECK(cron_job_parse(NULL, v, strlen(v), &j, err, sizeof(err)) == -1); \
	CHECK(strstr(err, m) != NULL);					\
	CHECK(j.name == NULL && j.command == NULL);			\
} while (0)
	BAD("{\"name\":\"../x\",\"command\":\"x\",\"cronExpr\":\"* * * * *\"}", "name");
	BAD("{\"name\":\"..\",\"command\":\"x\",\"cronExpr\":\"* * * * *\"}", "name");
	BAD("{\"name\":\"\",\"command\":\"x\",\"cronExpr\":\"* * * * *\"}", "name");
	BAD("{\"name\":1,\"command\":\"x\",\"cronExpr\":\"* * * * *\"}", "name");
	BAD("{\"name\":\"a\",\"command\":\" \\n\",\"cronExpr\":\"* * * * *\"}", "command");
	BAD("{\"name\":\"a\",\"command\":[],\"cronExpr\":\"* * * * *\"}", "command");
	BAD("{\"name\":\"a\",\"command\":\"x\"}", "cronExpr");
	BAD("{\"name\":\"a\",\"command\":\"x\",\"cronExpr\":\"61 * * * *\"}",
	    "cronExpr: field 1 (minute)");
	memset(big, ' ', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, "{\"name\":\"a\"", 11);
	big[sizeof(big) - 2] = '}';
	CHECK(cron_job_parse(NULL, big, strlen(big), &j, err, sizeof(err)) == -1);
	CHECK(strstr(err, "larger than") != NULL);
	/* Not NUL-terminated: only len bytes are read. */
	CHECK(cron_job_parse("a.b-c_1", ok, strlen(ok) - 1, &j, err, sizeof(err)) == -1);
}

/* The JSONL sink appends whole lines and rotates. */
TEST(jsonl_sink)
{
	char dir[] = "/tmp/test_cron.XXXXXX", *path, *p1, err[200], buf[4096];
	char *recs[3] = { "{\"a\":1}", "{\"b\":2}", "{\"c\":3}" };
	struct cron_sink *s;
	FILE *f;
	size_t n;

	CHECK(mkdtemp(dir) != NULL);
	path = malloc(strlen(dir) + 20);
	p1 = malloc(strlen(dir) + 20);
	snprintf(path, strlen(dir) + 20, "%s/log.jsonl", dir);
	snprintf(p1, strlen(dir) + 20, "%s/log.jsonl.1", dir);
	s = cron_sink_jsonl_new(path, 30, 1);
	CHECK(s->write(s, recs, 2, err, sizeof(err)) == 0);
	f = fopen(path, "r");
	CHECK(f != NULL);
	n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	buf[n] = '\0';
	if (f)
		fclose(f);
	CHECK_STR(buf, "{\"a\":1}\n{\"b\":2}\n");
	/* 16 + 24 > 30: the old file moves to .1 first. */
	CHECK(s->write(s, recs, 3, err, sizeof(err)) == 0);
	CHECK(access(p1, F_OK) == 0);
	f = fopen(path, "r");
	n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	buf[n] = '\0';
	if (f)
		fclose(f);
	CHECK_STR(buf, "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
	s->free(s);
	/* An unwritable path fails with a message. */
	s = cron_sink_jsonl_new("/nonexistent-dir/x.jsonl", 100, 1);
	CHECK(s->write(s, recs, 1, err, sizeof(err)) == -1);
	CHECK(strstr(err, "/nonexistent-dir/x.jsonl") != NULL);
	s->free(s);
	unlink(path);
	unlink(p1);
	rmdir(dir);
	free(path);
	free(p1);
}

/* The record queue keeps the newest within its caps, in order. */
TEST(recq_bounded)
{
	struct cron_recq q;
	char *out[4];
	size_t i;

	cron_recq_init(&q, 3, 0);
	CHECK(cron_recq_push(&q, xstrdup("r1")) == 0);
	CHECK(cron_recq_push(&q, xstrdup("r2")) == 0);
	CHECK(cron_recq_push(&q, xstrdup("r3")) == 0);
	CHECK(cron_recq_push(&q, xstrdup("r4")) == 1);	/* r1 goes */
	CHECK(cron_recq_push(&q, xstrdup("r5")) == 1);	/* r2 goes */
	CHECK(q.n == 3 && q.bytes == 6);
	CHECK_STR(q.v[0], "r3");
	CHECK_STR(q.v[2], "r5");
	/* Taken for sending, then given back: the same order again. */
	CHECK(cron_recq_take(&q, out, 2) == 2);
	CHECK_STR(out[0], "r3");
	CHECK_STR(out[1], "r4");
	CHECK(q.n == 1 && q.bytes == 2);
	CHECK(cron_recq_push(&q, xstrdup("r6")) == 0);
	CHECK(cron_recq_unshift(&q, out, 2) == 1);	/* 4 > 3: r3 goes */
	CHECK(q.n == 3);
	CHECK_STR(q.v[0], "r4");
	CHECK_STR(q.v[1], "r5");
	CHECK_STR(q.v[2], "r6");
	CHECK(cron_recq_take(&q, out, 4) == 3 && q.n == 0 && q.bytes == 0);
	for (i = 0; i < 3; i++)
		free(out[i]);
	CHECK(cron_recq_take(&q, out, 4) == 0);
	CHECK(cron_recq_unshift(&q, out, 0) == 0);
	cron_recq_clear(&q);
	CHECK(q.n == 0 && q.v == NULL);

	/* The byte cap; one record larger than the cap still stays. */
	cron_recq_init(&q, 0, 10);
	CHECK(cron_recq_push(&q, xstrdup("aaaa")) == 0);
	CHECK(cron_recq_push(&q, xstrdup("bbbb")) == 0);
	CHECK(cron_recq_push(&q, xstrdup("cccc")) == 1);
	CHECK(q.n == 2 && q.bytes == 8);
	CHECK_STR(q.v[0], "bbbb");
	CHECK(cron_recq_push(&q, xstrdup("0123456789abcdef")) == 2);
	CHECK(q.n == 1 && q.bytes == 16);
	/* Many records: the count cap holds at every step. */
	cron_recq_clear(&q);
	cron_recq_init(&q, 100, 0);
	for (i = 0; i < 1000; i++) {
		char buf[16];

		snprintf(buf, sizeof(buf), "%zu", i);
		(void)cron_recq_push(&q, xstrdup(buf));
		CHECK(q.n <= 100);
	}
	CHECK_STR(q.v[0], "900");
	CHECK_STR(q.v[99], "999");
	cron_recq_clear(&q);
}

/*
 * The stream sink with Redis away (a closed port): writes are taken
 * (never -1), the queue stays within its caps, the reconnects go on, and
 * free is clean.
 */
TEST(redis_sink_away)
{
	struct redis_url u;
	struct cron_sink *s;
	char err[200], *recs[3];
	int64_t end;
	int fd;
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);

	/* A port nobody listens on: bind, read it, close. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(fd != -1 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
	close(fd);
	CHECK(ev_init() == 0);
	memset(&u, 0, sizeof(u));
	snprintf(u.host, sizeof(u.host), "127.0.0.1");
	u.port = ntohs(sa.sin_port);
	u.password = xstrdup("pw");
	s = cron_sink_redis_new(&u, "t:stream", 100, 4, 0);
	redis_url_clear(&u);
	recs[0] = "{\"jobName\":\"a\",\"planTime\":1}";
	recs[1] = "{\"jobName\":\"b\",\"planTime\":2}";
	recs[2] = "not json";
	CHECK(s->write(s, recs, 3, err, sizeof(err)) == 0);
	CHECK(s->write(s, recs, 3, err, sizeof(err)) == 0);	/* 2 dropped */
	/* Let a few connects fail (refused) on the loop. */
	end = mono_ms() + 600;
	while (mono_ms() < end)
		ev_run_once(50);
	CHECK(s->write(s, recs, 1, err, sizeof(err)) == 0);
	s->free(s);
}

int
main(void)
{
	log_set_level(LOG_ERROR);
	RUN(oracle_table);
	RUN(croniter_live);
	RUN(forms);
	RUN(refusals);
	RUN(dst_zone);
	RUN(job_parse);
	RUN(jsonl_sink);
	RUN(recq_bounded);
	RUN(redis_sink_away);
	return t_done();
}
