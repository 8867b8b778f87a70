/*
 * cron_sink_redis.c - the cron job log's Redis-stream sink (cron_redis.h,
 * docs/cron.md): one connection of its own to the queue source's Redis,
 * driven from the event loop like agent/queue.c's (hiredis async over
 * common/redis.c), never a blocking call. Records wait in a bounded queue
 * until Redis has accepted them; a batch of XADDs is in flight at a time.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>

#include "cron_redis.h"
#include "ev.h"
#include "log.h"
#include "util.h"

#define SEND_MAX		64		/* XADDs in flight at once */
#define ANSWER_MS		INT64_C(5000)	/* connect or batch without answer */
#define BACKOFF_MIN_MS		INT64_C(250)
#define BACKOFF_MAX_MS		INT64_C(10000)
#define DRAIN_MS		INT64_C(1000)	/* at free, when connected */
#define FIELDS_MAX		32		/* members of a record sent */

/* ------------------------------------------------------------ queue */

/* Empty queue with caps (see cron_redis.h). */
void
cron_recq_init(struct cron_recq *q, size_t max_n, size_t max_bytes)
{
	memset(q, 0, sizeof(*q));
	q->max_n = max_n;
	q->max_bytes = max_bytes;
}

/* Drop the oldest records beyond the caps (never the newest one). */
static size_t
recq_trim(struct cron_recq *q)
{
	size_t k = 0, bytes = q->bytes, i;

	while (q->n - k > 1 && ((q->max_n > 0 && q->n - k > q->max_n) ||
	    (q->max_bytes > 0 && bytes > q->max_bytes))) {
		bytes -= strlen(q->v[k]);
		k++;
	}
	if (k == 0)
		return 0;
	for (i = 0; i < k; i++)
		free(q->v[i]);
	memmove(q->v, q->v + k, (q->n - k) * sizeof(*q->v));
	q->n -= k;
	q->bytes = bytes;
	return k;
}

/* Room for extra more records. */
static void
recq_grow(struct cron_recq *q, size_t extra)
{
	if (q->n + extra <= q->cap)
		return;
	q->cap = q->cap == 0 ? 16 : q->cap;
	while (q->cap < q->n + extra)
		q->cap *= 2;
	q->v = xrealloc(q->v, q->cap * sizeof(*q->v));
}

/* Append the newest record. */
size_t
cron_recq_push(struct cron_recq *q, char *text)
{
	recq_grow(q, 1);
	q->v[q->n++] = text;
	q->bytes += strlen(text);
	return recq_trim(q);
}

/* Move the oldest records out. */
size_t
cron_recq_take(struct cron_recq *q, char **out, size_t max)
{
	size_t k = q->n < max ? q->n : max, i;

	for (i = 0; i < k; i++) {
		out[i] = q->v[i];
		q->bytes -= strlen(q->v[i]);
	}
	memmove(q->v, q->v + k, (q->n - k) * sizeof(*q->v));
	q->n -= k;
	return k;
}

/* Put records back in front. */
size_t
cron_recq_unshift(struct cron_recq *q, char **texts, size_t k)
{
	size_t i;

	if (k == 0)
		return 0;
	recq_grow(q, k);
	memmove(q->v + k, q->v, q->n * sizeof(*q->v));
	for (i = 0; i < k; i++) {
		q->v[i] = texts[i];
		q->bytes += strlen(texts[i]);
	}
	q->n += k;
	return recq_trim(q);
}

/* Free everything queued. */
void
cron_recq_clear(struct cron_recq *q)
{
	size_t i;

	for (i = 0; i < q->n; i++)
		free(q->v[i]);
	free(q->v);
	q->v = NULL;
	q->n = q->cap = q->bytes = 0;
}

/* ------------------------------------------------------------ sink */

struct redis_sink {
	struct cron_sink base;
	struct redis_url url;
	char		*stream;
	char		 maxlen[32];
	struct cron_recq q;
	char		*sent[SEND_MAX];	/* the batch in flight, oldest first */
	unsigned char	 sent_ok[SEND_MAX];
	size_t		 nsent, nanswered;
	redisAsyncContext *ac;
	int		 up;		/* connected */
	int		 was_up;	/* a connect ever succeeded */
	int		 refused;	/* Redis refused a command: reset */
	int64_t		 backoff;
	long long	 written, dropped;
	struct timer	 reconnect;	/* connect again */
	struct timer	 deadline;	/* no answer in time: reset */
	struct timer	 reset;		/* drop the connection (outside hiredis) */
};

static void sink_flush(struct redis_sink *s);

/* Log records dropped by the caps. */
static void
dropped_log(struct redis_sink *s, size_t n)
{
	if (n == 0)
		return;
	s->dropped += (long long)n;
	log_warnx("cron log: redis stream %s: dropped the %zu oldest record(s) "
	    "waiting for Redis (more than %zu records or %zu bytes; %lld "
	    "dropped since start; the JSONL file has them)", s->stream, n,
	    s->q.max_n, s->q.max_bytes, s->dropped);
}

/* The batch in flight is answered: forget the accepted, keep the others. */
static void
batch_settle(struct redis_sink *s)
{
	char *back[SEND_MAX];
	size_t i, k = 0, ok = 0;

	for (i = 0; i < s->nsent; i++) {
		if (s->sent_ok[i]) {
			free(s->sent[i]);
			ok++;
		} else {
			back[k++] = s->sent[i];
		}
		s->sent[i] = NULL;
	}
	s->nsent = s->nanswered = 0;
	s->written += (long long)ok;
	timer_cancel(&s->deadline);
	dropped_log(s, cron_recq_unshift(&s->q, back, k));
	if (ok > 0)
		log_debug("cron log: redis stream %s: %zu record(s) added", s->stream,
		    ok);
}

/* One answer of the batch, in order. */
static void
answer_note(struct redis_sink *s, int ok)
{
	if (s->nanswered < s->nsent)
		s->sent_ok[s->nanswered++] = (unsigned char)(ok != 0);
	if (s->nsent > 0 && s->nanswered == s->nsent) {
		batch_settle(s);
		if (s->up && !s->refused)
			sink_flush(s);
	}
}

/* Drop the connection soon (never from inside a hiredis callback). */
static void
reset_later(struct redis_sink *s)
{
	s->up = 0;
	if (timer_remaining(&s->reset) < 0)
		timer_set(&s->reset, 0);
}

/* hiredis: the answer of one XADD. */
static void
on_xadd(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_sink *s = priv;
	redisReply *reply = r;

	(void)ac;
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
		log_warnx("cron log: redis stream %s: XADD refused: %.200s",
		    s->stream, reply->str);
		s->refused = 1;
		reset_later(s);
	}
	answer_note(s, reply != NULL && reply->type != REDIS_REPLY_ERROR);
}

/* hiredis: the answer of AUTH or SELECT. */
static void
on_setup(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_sink *s = priv;
	redisReply *reply = r;

	(void)ac;
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
		log_warnx("cron log: redis stream %s: redis refused AUTH/SELECT: "
		    "%.200s", s->stream, reply->str);
		s->refused = 1;
		reset_later(s);
	}
}

/* Schedule the next connect after the backoff. */
static void
retry_later(struct redis_sink *s, const char *why)
{
	log_warnx("cron log: redis stream %s on %s:%d: %s; %zu record(s) wait, "
	    "connecting again in %lld ms", s->stream, s->url.host, s->url.port,
	    why, s->q.n + s->nsent, (long long)s->backoff);
	timer_set(&s->reconnect, s->backoff);
	s->backoff = s->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS :
	    s->backoff * 2;
}

/* Free the connection now; its pending answers come back as failures. */
static void
conn_drop(struct redis_sink *s)
{
	redisAsyncContext *ac = s->ac;

	s->up = 0;
	s->ac = NULL;
	timer_cancel(&s->deadline);
	timer_cancel(&s->reset);
	if (ac != NULL) {
		ac->data = NULL;
		redisAsyncFree(ac);	/* runs on_xadd with NULL for each */
	}
	if (s->nsent > 0) {
		/* Commands hiredis never took: nothing will answer them. */
		while (s->nanswered < s->nsent)
			s->sent_ok[s->nanswered++] = 0;
		batch_settle(s);
	}
}

/* Timer: drop the connection and connect again after the backoff. */
static void
reset_fn(void *arg)
{
	struct redis_sink *s = arg;
	int refused = s->refused;

	if (s->ac == NULL && timer_remaining(&s->reconnect) >= 0)
		return;		/* hiredis dropped it; the connect is planned */
	conn_drop(s);
	s->refused = 0;
	retry_later(s, refused ? "a command was refused" :
	    "the connection was lost");
}

/* Timer: no answer in time. */
static void
deadline_fn(void *arg)
{
	struct redis_sink *s = arg;

	conn_drop(s);
	retry_later(s, "no answer within 5000 ms");
}

/* hiredis: the connection went away (hiredis frees ac after this). */
static void
on_disconnect(const redisAsyncContext *ac, int status)
{
	struct redis_sink *s = ac->data;

	if (s == NULL)
		return;		/* our own conn_drop */
	s->ac = NULL;
	s->up = 0;
	timer_cancel(&s->deadline);
	if (status != REDIS_OK)
		retry_later(s, ac->errstr[0] != '\0' ? ac->errstr :
		    "connection lost");
	else
		retry_later(s, "connection closed");
}

/* hiredis: the connect finished (on failure hiredis frees ac after this). */
static void
on_connect(const redisAsyncContext *ac, int status)
{
	struct redis_sink *s = ac->data;

	if (s == NULL)
		return;
	if (status != REDIS_OK) {
		s->ac = NULL;
		timer_cancel(&s->deadline);
		retry_later(s, ac->errstr[0] != '\0' ? ac->errstr :
		    "cannot connect");
		return;
	}
	timer_cancel(&s->deadline);
	s->up = 1;
	s->refused = 0;
	s->backoff = BACKOFF_MIN_MS;
	log_info("cron log: redis stream %s on %s:%d db %d: connected%s (%zu "
	    "record(s) waiting)", s->stream, s->url.host, s->url.port, s->url.db,
	    s->was_up ? " again" : "", s->q.n);
	s->was_up = 1;
	sink_flush(s);
}

/* Timer: open the connection; AUTH and SELECT are queued first. */
static void
connect_fn(void *arg)
{
	struct redis_sink *s = arg;
	redisAsyncContext *ac;

	if (s->ac != NULL)
		return;
	ac = redisAsyncConnect(s->url.host, s->url.port);
	if (ac == NULL || ac->err) {
		char why[160];

		snprintf(why, sizeof(why), "%s", ac != NULL ? ac->errstr :
		    "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		retry_later(s, why);
		return;
	}
	if (redis_ev_attach(ac) == -1) {
		redisAsyncFree(ac);
		retry_later(s, "cannot watch the connection");
		return;
	}
	ac->data = s;
	s->ac = ac;
	if (redisEnableKeepAlive(&ac->c) != REDIS_OK)
		log_debug("cron log: no TCP keepalive on the redis connection");
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	if (s->url.password != NULL) {
		const char *argv[2] = { "AUTH", s->url.password };

		(void)redisAsyncCommandArgv(ac, on_setup, s, 2, argv, NULL);
	}
	if (s->url.db != 0) {
		char db[16];
		const char *argv[2] = { "SELECT", db };

		snprintf(db, sizeof(db), "%d", s->url.db);
		(void)redisAsyncCommandArgv(ac, on_setup, s, 2, argv, NULL);
	}
	timer_set(&s->deadline, ANSWER_MS);
}

/* Text of a number member: a decimal integer when it is one. */
static void
number_text(double d, char *buf, size_t len)
{
	if (d >= -9.0e15 && d <= 9.0e15 && (double)(long long)d == d)
		snprintf(buf, len, "%lld", (long long)d);
	else
		snprintf(buf, len, "%.17g", d);
}

/*
 * Send one record as XADD; returns 0 or -1 (hiredis did not take it). A
 * record that is not a JSON object goes as one field "record".
 */
static int
xadd_send(struct redis_sink *s, const char *text)
{
	const char *argv[6 + 2 * FIELDS_MAX];
	char nums[FIELDS_MAX][40];
	char *printed[FIELDS_MAX];
	size_t lens[6 + 2 * FIELDS_MAX];
	int argc = 0, nprinted = 0, nf = 0, i, rc;
	cJSON *o = cJSON_Parse(text);
	const cJSON *m;

	argv[argc++] = "XADD";
	argv[argc++] = s->stream;
	argv[argc++] = "MAXLEN";
	argv[argc++] = "~";
	argv[argc++] = s->maxlen;
	argv[argc++] = "*";
	if (cJSON_IsObject(o)) {
		cJSON_ArrayForEach(m, o) {
			const char *v;

			if (nf == FIELDS_MAX || m->string == NULL)
				break;
			if (cJSON_IsString(m)) {
				v = m->valuestring;
			} else if (cJSON_IsNumber(m)) {
				number_text(m->valuedouble, nums[nf], sizeof(nums[nf]));
				v = nums[nf];
			} else {
				printed[nprinted] = cJSON_PrintUnformatted(m);
				if (printed[nprinted] == NULL)
					continue;
				v = printed[nprinted++];
			}
			argv[argc++] = m->string;
			argv[argc++] = v;
			nf++;
		}
	}
	if (nf == 0) {
		argv[argc++] = "record";
		argv[argc++] = text;
	}
	for (i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	rc = redisAsyncCommandArgv(s->ac, on_xadd, s, argc, argv, lens) ==
	    REDIS_OK ? 0 : -1;
	for (i = 0; i < nprinted; i++)
		cJSON_free(printed[i]);
	cJSON_Delete(o);
	return rc;
}

/* Send the next batch when connected and none is in flight. */
static void
sink_flush(struct redis_sink *s)
{
	size_t i, n;

	if (!s->up || s->ac == NULL || s->nsent > 0 || s->q.n == 0 ||
	    (s->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)) != 0)
		return;
	n = cron_recq_take(&s->q, s->sent, SEND_MAX);
	s->nsent = n;
	s->nanswered = 0;
	timer_set(&s->deadline, ANSWER_MS);
	for (i = 0; i < n; i++)
		if (xadd_send(s, s->sent[i]) == -1) {
			/* Not queued in hiredis: this and the rest fail now. */
			s->nsent = i;
			if (i == 0) {
				s->nsent = n;
				while (s->nanswered < s->nsent)
					s->sent_ok[s->nanswered++] = 0;
				batch_settle(s);
			} else {
				char *back[SEND_MAX];
				size_t k = n - i;

				memcpy(back, s->sent + i, k * sizeof(*back));
				dropped_log(s, cron_recq_unshift(&s->q, back, k));
			}
			reset_later(s);
			return;
		}
}

/* Take copies of the records; send them when connected (see cron_redis.h). */
static int
redis_write(struct cron_sink *base, char *const *recs, size_t n, char *err,
    size_t errlen)
{
	struct redis_sink *s = (struct redis_sink *)base;
	size_t i, dropped = 0;

	(void)err;
	(void)errlen;
	for (i = 0; i < n; i++)
		dropped += cron_recq_push(&s->q, xstrdup(recs[i]));
	dropped_log(s, dropped);
	sink_flush(s);
	return 0;
}

/* Let waiting records leave (bounded), then free the sink. */
static void
redis_free(struct cron_sink *base)
{
	struct redis_sink *s = (struct redis_sink *)base;
	int64_t until = mono_ms() + DRAIN_MS;

	while (s->up && s->ac != NULL && (s->q.n > 0 || s->nsent > 0) &&
	    mono_ms() < until) {
		sink_flush(s);
		ev_run_once(50);
	}
	timer_cancel(&s->reconnect);
	conn_drop(s);
	timer_cancel(&s->reconnect);
	if (s->q.n > 0)
		log_warnx("cron log: redis stream %s: %zu record(s) not added at "
		    "exit (the JSONL file has them)", s->stream, s->q.n);
	log_info("cron log: redis stream %s: %lld record(s) added, %lld dropped",
	    s->stream, s->written, s->dropped);
	cron_recq_clear(&s->q);
	redis_url_clear(&s->url);
	free(s->stream);
	free(s);
}

/* New Redis-stream sink (see cron_redis.h). */
struct cron_sink *
cron_sink_redis_new(const struct redis_url *u, const char *stream,
    long long maxlen, size_t keep_n, size_t keep_bytes)
{
	struct redis_sink *s = xcalloc(1, sizeof(*s));

	s->base.name = "redis";
	s->base.write = redis_write;
	s->base.free = redis_free;
	s->url = *u;
	s->url.password = u->password != NULL ? xstrdup(u->password) : NULL;
	s->stream = xstrdup(stream);
	snprintf(s->maxlen, sizeof(s->maxlen), "%lld", maxlen > 0 ? maxlen : 1);
	cron_recq_init(&s->q, keep_n, keep_bytes);
	s->backoff = BACKOFF_MIN_MS;
	timer_init(&s->reconnect, "cron log redis connect", connect_fn, s);
	timer_init(&s->deadline, "cron log redis deadline", deadline_fn, s);
	timer_init(&s->reset, "cron log redis reset", reset_fn, s);
	timer_set(&s->reconnect, 0);
	return &s->base;
}
