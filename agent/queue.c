/*
 * queue.c - tasks from a Redis queue (docs/queue.md): turns task messages
 * into executor requests and results into log messages.
 *
 * Four connections, all on the event loop (common/redis.c):
 *   take  BLMOVE <name> <processing> LEFT LEFT 1 while a slot is free: the
 *         task moves atomically into this agent's processing list;
 *   ctl   BLPOP <control> 1: a kill taken from the control list is
 *         re-published on the pub/sub channel <control>, so that every agent
 *         sees it, whichever took it;
 *   sub   SUBSCRIBE <control>: kills for tasks running here;
 *   cmd   everything else, in order: log messages (RPUSH <logs>), LREM of
 *         the processing list, dead letters, LRANGE at (re)connect.
 * A task leaves the processing list only after its done message was
 * accepted by Redis (and its result marked reported on disk); at every
 * (re)connect the processing list is reconciled with the on-disk results,
 * so a task is never run twice and its outcome is never lost.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>

#include "agent.h"
#include "ev.h"
#include "executor.h"
#include "fsutil.h"
#include "http.h"
#include "log.h"
#include "queue.h"
#include "redis.h"
#include "tree.h"
#include "util.h"

#define TAG			"queue"
#define BATCH_MAX		((size_t)64 * 1024)	/* log batch, bytes */
#define BATCH_MS		200			/* log batch age, ms */
#define INFLIGHT_MAX		((long long)8 * 1024 * 1024)	/* unanswered log bytes:
							   above, task output waits */
#define HTTP_INFLIGHT_MAX	64
#define BACKOFF_MIN_MS		250
#define BACKOFF_MAX_MS		10000
#define TAKE_WAIT_SEC		"1"

enum { C_CMD, C_TAKE, C_CTL, C_SUB, C_N };

/* A task running here. */
struct qtask {
	char		*id;
	char		*type;
	char		*raw;		/* the message as taken (for LREM) */
	size_t		 rawlen;
	char		*buf;		/* pending log batch */
	size_t		 len;
	int		 stream;	/* 1 stdout, 2 stderr */
	long long	 dropped;	/* output bytes not sent (memory bound) */
	struct timer	 flush;
	struct qtask	*next;
};

/* A command waiting for its reply on the cmd connection. */
struct qop {
	int		 kind;
	char		*id;
	char		*raw;
	size_t		 rawlen;
	long long	 bytes;
};
enum { OP_LOG, OP_DONE, OP_LREM, OP_DEAD, OP_RANGE, OP_AUTH, OP_PUB };

static struct {
	int		 on;
	struct redis_url url;
	char		*name, *control, *logsq, *http, *proc, *dead;
	int		 logs, parallel;
	struct executor	*ex;
	redisAsyncContext *c[C_N];
	int		 connected;	/* connect callbacks seen OK */
	int		 up;		/* all four connected */
	int		 taking, ctl_waiting;
	int		 stopping;
	int		 paused;	/* task output paused: redis is slow */
	int64_t		 backoff_ms;
	long long	 inflight;
	int		 http_inflight;
	long long	 http_dropped;
	struct timer	 reconnect, reset, take_timer;
	struct qtask	*tasks;
} Q;

static void q_reset_later(void);
static void output_pause_all(int pause);
static void take_next(void);
static void msg_process(const char *raw, size_t len, int reconciling);

/* ------------------------------------------------------------ decoders */

/* Read an id: a string or an integer; NULL when unusable. */
static char *
id_read(const cJSON *o)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "id");
	char buf[64];

	if (cJSON_IsString(v) && exec_id_valid(v->valuestring))
		return xstrdup(v->valuestring);
	if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1e15 &&
	    floor(v->valuedouble) == v->valuedouble) {
		snprintf(buf, sizeof(buf), "%.0f", v->valuedouble);
		return xstrdup(buf);
	}
	return NULL;
}

/* Parse msg as a JSON object, with the size cap. */
static cJSON *
msg_parse(const char *msg, size_t len, char *err, size_t errlen)
{
	cJSON *o;

	if (len > QUEUE_MSG_MAX) {
		snprintf(err, errlen, "message of %zu bytes is larger than %zu",
		    len, QUEUE_MSG_MAX);
		return NULL;
	}
	if (memchr(msg, '\0', len) != NULL) {
		snprintf(err, errlen, "message holds a NUL byte");
		return NULL;
	}
	o = cJSON_ParseWithLength(msg, len);
	if (o == NULL || !cJSON_IsObject(o)) {
		cJSON_Delete(o);
		snprintf(err, errlen, "message is not a JSON object");
		return NULL;
	}
	return o;
}

/* Decode a task message (queue.h); an oversized one still yields its id. */
int
queue_task_decode(const char *msg, size_t len, struct queue_task *t, char *err,
    size_t errlen)
{
	cJSON *o, *task, *v;
	size_t n = 0, cap = 8;
	int rc = -1;

	memset(t, 0, sizeof(*t));
	if ((o = msg_parse(msg, len, err, errlen)) == NULL) {
		/* An oversized message may still be JSON with an id. */
		if (len > QUEUE_MSG_MAX && memchr(msg, '\0', len) == NULL &&
		    (o = cJSON_ParseWithLength(msg, len)) != NULL) {
			t->id = cJSON_IsObject(o) ? id_read(o) : NULL;
			cJSON_Delete(o);
			return t->id != NULL ? -1 : -2;
		}
		return -2;
	}
	if ((t->id = id_read(o)) == NULL) {
		snprintf(err, errlen, "no usable id (a string of [A-Za-z0-9._-], at "
		    "most %d characters, or an integer)", EXEC_ID_MAX);
		rc = -2;
		goto out;
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "type");
	if (v != NULL && !cJSON_IsString(v)) {
		snprintf(err, errlen, "type is not a string");
		goto out;
	}
	t->type = xstrdup(v != NULL ? v->valuestring : "");
	task = cJSON_GetObjectItemCaseSensitive(o, "task");
	if (!cJSON_IsObject(task)) {
		snprintf(err, errlen, "task is missing or not an object");
		goto out;
	}
	v = cJSON_GetObjectItemCaseSensitive(task, "cmdline");
	if (!cJSON_IsString(v) || str_blank(v->valuestring)) {
		snprintf(err, errlen, "task.cmdline is missing, blank or not a string");
		goto out;
	}
	t->argv = xcalloc(cap, sizeof(*t->argv));
	{
		const char *p = v->valuestring;
		while (*p != '\0') {
			size_t w;
			while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
				p++;
			w = strcspn(p, " \t\n\r");
			if (w == 0)
				break;
			if (n + 1 >= QUEUE_ARGS_MAX) {
				snprintf(err, errlen, "more than %d words", QUEUE_ARGS_MAX);
				goto out;
			}
			if (n + 2 > cap) {
				cap *= 2;
				t->argv = xrealloc(t->argv, cap * sizeof(*t->argv));
			}
			t->argv[n++] = xstrndup(p, w);
			t->argv[n] = NULL;
			p += w;
		}
	}
	v = cJSON_GetObjectItemCaseSensitive(task, "cmd_args");
	if (v != NULL && !cJSON_IsNull(v)) {
		const cJSON *a;
		if (!cJSON_IsArray(v)) {
			snprintf(err, errlen, "task.cmd_args is not an array");
			goto out;
		}
		cJSON_ArrayForEach(a, v) {
			if (!cJSON_IsString(a)) {
				snprintf(err, errlen, "task.cmd_args holds a non-string");
				goto out;
			}
			if (n + 1 >= QUEUE_ARGS_MAX) {
				snprintf(err, errlen, "more than %d words", QUEUE_ARGS_MAX);
				goto out;
			}
			if (n + 2 > cap) {
				cap *= 2;
				t->argv = xrealloc(t->argv, cap * sizeof(*t->argv));
			}
			t->argv[n++] = xstrdup(a->valuestring);
			t->argv[n] = NULL;
		}
	}
	v = cJSON_GetObjectItemCaseSensitive(task, "timeout");
	if (v != NULL && !cJSON_IsNull(v)) {
		if (!cJSON_IsNumber(v) || isnan(v->valuedouble)) {
			snprintf(err, errlen, "task.timeout is not a number");
			goto out;
		}
		if (v->valuedouble > 0)
			t->timeout_ms = v->valuedouble > 1e9 ? (int64_t)1e12 :
			    (int64_t)(v->valuedouble * 1000.0);
		if (v->valuedouble > 0 && t->timeout_ms < 1)
			t->timeout_ms = 1;
	}
	rc = 0;
out:
	cJSON_Delete(o);
	return rc;
}

/* Free a decoded task. */
void
queue_task_free(struct queue_task *t)
{
	size_t i;

	for (i = 0; t->argv != NULL && t->argv[i] != NULL; i++)
		free(t->argv[i]);
	free(t->argv);
	free(t->id);
	free(t->type);
	memset(t, 0, sizeof(*t));
}

/* Decode a kill. */
int
queue_control_decode(const char *msg, size_t len, char **id, char *err,
    size_t errlen)
{
	cJSON *o, *v;

	*id = NULL;
	if ((o = msg_parse(msg, len, err, errlen)) == NULL)
		return -1;
	v = cJSON_GetObjectItemCaseSensitive(o, "type");
	if (!cJSON_IsString(v) || strcmp(v->valuestring, "kill") != 0) {
		snprintf(err, errlen, "type is not \"kill\"");
		cJSON_Delete(o);
		return -1;
	}
	if ((*id = id_read(o)) == NULL) {
		snprintf(err, errlen, "no usable id");
		cJSON_Delete(o);
		return -1;
	}
	cJSON_Delete(o);
	return 0;
}

/* ------------------------------------------------------------ sending */

/* Bytes at the start of s[0..n) that are ASCII other than NUL (the common
   case of build output), looked at eight at a time. */
static size_t
ascii_run(const unsigned char *s, size_t n)
{
	const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t w;

		memcpy(&w, s + i, 8);
		if ((w & high) != 0 || ((w - ones) & ~w & high) != 0)
			break;	/* a byte >= 0x80 or a NUL in these eight */
	}
	while (i < n && s[i] != 0 && s[i] < 0x80)
		i++;
	return i;
}

/* Valid UTF-8 of buf[0..n) (invalid bytes become U+FFFD); *used gets the
   bytes consumed: an incomplete sequence at the end is left when keep_tail. */
static char *
utf8_text(const char *buf, size_t n, int keep_tail, size_t *used)
{
	const unsigned char *s = (const unsigned char *)buf;
	char *out = xmalloc(n * 3 + 1);
	size_t i = 0, k = 0;

	while (i < n) {
		size_t run = ascii_run(s + i, n - i);
		unsigned char c;
		size_t len, j;
		int ok;

		memcpy(out + k, s + i, run);	/* plain ASCII: as it is */
		k += run;
		i += run;
		if (i == n)
			break;
		c = s[i];
		len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 :
		    (c >> 3) == 30 ? 4 : 0;
		ok = len != 0 && c != 0;
		if (ok && i + len > n) {
			if (keep_tail)
				break;
			ok = 0;
		}
		for (j = 1; ok && j < len; j++)
			if ((s[i + j] & 0xC0) != 0x80)
				ok = 0;
		if (ok && len == 2 && c < 0xC2)
			ok = 0;
		if (ok && len == 3 && ((c == 0xE0 && s[i + 1] < 0xA0) ||
		    (c == 0xED && s[i + 1] >= 0xA0)))
			ok = 0;
		if (ok && len == 4 && ((c == 0xF0 && s[i + 1] < 0x90) ||
		    (c == 0xF4 && s[i + 1] >= 0x90) || c > 0xF4))
			ok = 0;
		if (!ok) {
			memcpy(out + k, "\xEF\xBF\xBD", 3);
			k += 3;
			i++;
			continue;
		}
		memcpy(out + k, s + i, len);
		k += len;
		i += len;
	}
	out[k] = '\0';
	*used = i;
	return out;
}

/* A reply on the cmd connection. */
static void
on_cmd_reply(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply *reply = r;
	struct qop *op = priv;
	size_t i;

	(void)ac;
	if (op->kind == OP_LOG || op->kind == OP_DONE)
		Q.inflight -= op->bytes;
	if (Q.paused && Q.inflight < INFLIGHT_MAX / 2)
		output_pause_all(0);
	if (reply == NULL) {
		/* Disconnected: the reconcile at the next connect takes over. */
	} else if (reply->type == REDIS_REPLY_ERROR) {
		log_warnx("queue: redis refused a command: %.200s", reply->str);
		if (op->kind == OP_AUTH)
			q_reset_later();
	} else if (op->kind == OP_DONE) {
		if (exec_mark_reported(Q.ex, op->id) == -1 && errno != ENOENT)
			log_warn("queue: task %s: cannot mark its result reported", op->id);
		if (op->raw != NULL) {
			struct qop *rm = xcalloc(1, sizeof(*rm));
			const char *argv[4] = { "LREM", Q.proc, "1", op->raw };
			size_t lens[4] = { 4, strlen(Q.proc), 1, op->rawlen };
			rm->kind = OP_LREM;
			rm->id = xstrdup(op->id);
			if (Q.c[C_CMD] == NULL || redisAsyncCommandArgv(Q.c[C_CMD],
			    on_cmd_reply, rm, 4, argv, lens) != REDIS_OK) {
				free(rm->id);
				free(rm);
			}
		}
	} else if (op->kind == OP_RANGE && reply->type == REDIS_REPLY_ARRAY) {
		log_info("queue: %zu task(s) in the processing list %s",
		    reply->elements, Q.proc);
		for (i = 0; i < reply->elements; i++)
			if (reply->element[i]->type == REDIS_REPLY_STRING)
				msg_process(reply->element[i]->str,
				    reply->element[i]->len, 1);
		take_next();
	}
	free(op->id);
	free(op->raw);
	free(op);
}

/* Send argv on the cmd connection; 0 or -1 (not connected). */
static int
cmd_send(struct qop *op, int argc, const char **argv, const size_t *lens)
{
	if (Q.c[C_CMD] == NULL || !Q.up ||
	    redisAsyncCommandArgv(Q.c[C_CMD], on_cmd_reply, op, argc, argv, lens) != REDIS_OK) {
		free(op->id);
		free(op->raw);
		free(op);
		return -1;
	}
	return 0;
}

/* HTTP copy of a log message answered (or failed): only counted. */
static void
on_http_log(struct http_result *res, void *arg)
{
	(void)arg;
	Q.http_inflight--;
	if (!res->ok || res->code < 200 || res->code > 299)
		log_warnx("queue: log POST to devops.queue.logs.http: %s (HTTP %ld)",
		    res->ok ? "refused" : res->error, res->code);
}

/* Push one log message (JSON text) to the logs list, and to the HTTP URL. */
static int
log_send(const char *text, int kind, const char *id, const char *raw,
    size_t rawlen)
{
	struct qop *op = xcalloc(1, sizeof(*op));
	const char *argv[3] = { "RPUSH", Q.logsq, text };
	size_t lens[3] = { 5, strlen(Q.logsq), strlen(text) };

	if (Q.http != NULL) {
		if (Q.http_inflight >= HTTP_INFLIGHT_MAX) {
			if (Q.http_dropped++ % 1000 == 0)
				log_warnx("queue: too many log POSTs in flight; "
				    "dropping (%lld so far)", Q.http_dropped);
		} else if (http_post_url(Q.http, text, on_http_log, NULL) == 0) {
			Q.http_inflight++;
		}
	}
	op->kind = kind;
	op->id = xstrdup(id);
	op->bytes = (long long)lens[2];
	if (raw != NULL) {
		op->raw = xmalloc(rawlen + 1);
		memcpy(op->raw, raw, rawlen);
		op->raw[rawlen] = '\0';
		op->rawlen = rawlen;
	}
	Q.inflight += op->bytes;
	if (cmd_send(op, 3, argv, lens) == -1) {
		Q.inflight -= (long long)lens[2];
		return -1;
	}
	return 0;
}

/* Send a task's pending batch as one stdout/stderr message. */
static void
batch_flush(struct qtask *t, int final)
{
	cJSON *o;
	char *text, *data;
	size_t used, cap;

	timer_cancel(&t->flush);
	if (t->len == 0)
		return;
	data = utf8_text(t->buf, t->len, !final, &used);
	if (used == 0 && !final) {
		free(data);
		return;		/* only a partial character: wait for the rest */
	}
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "id", t->id);
	cJSON_AddStringToObject(o, "type", t->type);
	cJSON_AddStringToObject(o, "msg_type", t->stream == 2 ? "stderr" : "stdout");
	/* data by reference, printed into one buffer sized for the worst
	   escaping (\u00XX: 6 bytes a byte): no copy of it, no regrowth. */
	cJSON_AddItemToObject(o, "data", cJSON_CreateStringReference(data));
	cap = 6 * (strlen(data) + strlen(t->id) + strlen(t->type)) + 64;
	text = xmalloc(cap);
	if (!cJSON_PrintPreallocated(o, text, (int)cap, 0)) {
		free(text);
		text = cJSON_PrintUnformatted(o);
	}
	cJSON_Delete(o);
	free(data);
	/* Redis away: dropped (output.log has it); slow: the tasks wait. */
	if (!Q.up || log_send(text, OP_LOG, t->id, NULL, 0) == -1)
		t->dropped += (long long)used;
	else if (Q.inflight > INFLIGHT_MAX && !Q.paused)
		output_pause_all(1);
	free(text);
	memmove(t->buf, t->buf + used, t->len - used);
	t->len -= used;
}

/* Timer: the batch is BATCH_MS old. */
static void
batch_timer(void *arg)
{
	batch_flush(arg, 0);
}

/* Stop (or resume) reading the output of every running task. */
static void
output_pause_all(int pause)
{
	struct qtask *t;

	Q.paused = pause;
	for (t = Q.tasks; t != NULL; t = t->next)
		(void)exec_output_pause(Q.ex, t->id, pause);
}

/* Executor output hook: batch per stream, in order. */
static void
on_task_output(const char *id, int stream, const char *data, size_t len, void *arg)
{
	struct qtask *t = arg;

	(void)id;
	if (!Q.logs)
		return;
	if (t->len > 0 && t->stream != stream)
		batch_flush(t, 1);
	t->stream = stream;
	while (len > 0) {
		size_t room = BATCH_MAX - t->len, k = len < room ? len : room;
		memcpy(t->buf + t->len, data, k);
		t->len += k;
		data += k;
		len -= k;
		if (t->len >= BATCH_MAX)
			batch_flush(t, 0);
		if (t->len >= BATCH_MAX)	/* a partial char could not go */
			batch_flush(t, 1);
	}
	if (t->len > 0 && timer_remaining(&t->flush) < 0)
		timer_set(&t->flush, BATCH_MS);
}

/* The done message of a task: status, exit code, duration, error. */
static char *
done_text(const char *id, const char *type, const char *status, int exit_code,
    int64_t duration_ms, const char *error, long long dropped)
{
	cJSON *o = cJSON_CreateObject(), *d = cJSON_CreateObject();
	char *text;

	cJSON_AddStringToObject(o, "id", id);
	cJSON_AddStringToObject(o, "type", type);
	cJSON_AddStringToObject(o, "msg_type", "done");
	cJSON_AddStringToObject(d, "status", status);
	cJSON_AddNumberToObject(d, "exit_code", exit_code);
	cJSON_AddNumberToObject(d, "duration_ms", (double)duration_ms);
	cJSON_AddStringToObject(d, "error", error);
	if (dropped > 0)
		cJSON_AddNumberToObject(d, "dropped_bytes", (double)dropped);
	cJSON_AddItemToObject(o, "data", d);
	text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return text;
}

/* Our wire name of an executor status. */
static const char *
status_word(enum exec_status s)
{
	switch (s) {
	case EXEC_SUCCESS:
		return "success";
	case EXEC_TIMEOUT:
		return "timeout";
	case EXEC_KILLED:
		return "killed";
	default:
		return "failed";
	}
}

/* Publish done for a finished task, then (on the reply) drop raw from the
   processing list; without logs, mark and drop at once. */
static void
done_send(const char *id, const char *type, const struct exec_result *res,
    const char *status, const char *error, long long dropped, const char *raw,
    size_t rawlen)
{
	char *text;

	if (!Q.logs) {
		struct qop *rm = xcalloc(1, sizeof(*rm));
		const char *argv[4] = { "LREM", Q.proc, "1", raw };
		size_t lens[4] = { 4, strlen(Q.proc), 1, rawlen };
		if (res != NULL)
			(void)exec_mark_reported(Q.ex, id);
		rm->kind = OP_LREM;
		(void)cmd_send(rm, 4, argv, lens);
		return;
	}
	if (res != NULL)
		text = done_text(id, type, status_word(res->status), res->exit_code,
		    res->duration_ms, res->error, dropped);
	else
		text = done_text(id, type, status, -1, 0, error, 0);
	if (log_send(text, OP_DONE, id, raw, rawlen) == -1)
		log_warnx("queue: task %s: redis is away; its done message is sent "
		    "after the reconnect", id);
	free(text);
}

/* Move an undecodable message to the dead-letter list. */
static void
dead_letter(const char *raw, size_t len, const char *why)
{
	struct qop *op = xcalloc(1, sizeof(*op));
	const char *argv[4] = { "RPUSH", Q.dead, raw, NULL };
	size_t lens[4] = { 5, strlen(Q.dead), len, 0 };

	log_warnx("queue: message without a usable id (%s) moved to %s", why, Q.dead);
	op->kind = OP_DEAD;
	if (cmd_send(op, 3, argv, lens) == -1)
		return;
	op = xcalloc(1, sizeof(*op));
	op->kind = OP_LREM;
	argv[0] = "LREM";
	argv[1] = Q.proc;
	argv[2] = "1";
	argv[3] = raw;
	lens[0] = 4;
	lens[1] = strlen(Q.proc);
	lens[2] = 1;
	lens[3] = len;
	(void)cmd_send(op, 4, argv, lens);
}

/* ------------------------------------------------------------ tasks */

/* Find a running task. */
static struct qtask *
qtask_find(const char *id)
{
	struct qtask *t;

	for (t = Q.tasks; t != NULL; t = t->next)
		if (strcmp(t->id, id) == 0)
			return t;
	return NULL;
}

/* Number of queue tasks running. */
static int
running_count(void)
{
	struct qtask *t;
	int n = 0;

	for (t = Q.tasks; t != NULL; t = t->next)
		n++;
	return n;
}

/* Executor callback: the task is over and its result is on disk. */
static void
on_task_done(struct exec_result *res, void *arg)
{
	struct qtask *t = arg, **pp;

	batch_flush(t, 1);
	if (t->dropped > 0)
		log_warnx("queue: task %s: %lld output bytes not sent (redis was "
		    "away); output.log has them all", t->id, t->dropped);
	/* Redis away: the reconcile after the reconnect reports it. */
	if (Q.up)
		done_send(t->id, t->type, res, NULL, NULL, t->dropped, t->raw,
		    t->rawlen);
	free(t->raw);
	for (pp = &Q.tasks; *pp != NULL; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	timer_cancel(&t->flush);
	free(t->buf);
	free(t->id);
	free(t->type);
	free(t);
	exec_result_free(res);
	take_next();
}

/* Start a decoded task; on refusal report done failed. */
static void
task_run(struct queue_task *qt, const char *raw, size_t len)
{
	struct exec_request r;
	struct qtask *t;
	struct exec_result *res = NULL;
	char err[512];
	enum exec_error rc;

	t = xcalloc(1, sizeof(*t));
	t->id = xstrdup(qt->id);
	t->type = xstrdup(qt->type);
	t->raw = xmalloc(len + 1);
	memcpy(t->raw, raw, len);
	t->raw[len] = '\0';
	t->rawlen = len;
	t->buf = xmalloc(BATCH_MAX);
	t->stream = 1;
	timer_init(&t->flush, "queue-log-batch", batch_timer, t);
	memset(&r, 0, sizeof(r));
	r.id = qt->id;
	r.tag = TAG;
	r.script_path = qt->argv[0];
	r.args = qt->argv + 1;
	r.workdir = ".";
	r.user = A.cfg.slave_user;
	r.timeout_ms = qt->timeout_ms;
	r.on_output = on_task_output;
	r.output_arg = t;
	r.split_stderr = 1;
	t->next = Q.tasks;
	Q.tasks = t;
	rc = exec_start(Q.ex, &r, on_task_done, t, err, sizeof(err));
	if (rc == EXEC_OK) {
		log_info("queue: task %s started (%s)", qt->id, qt->argv[0]);
		if (Q.paused)
			(void)exec_output_pause(Q.ex, qt->id, 1);
		return;
	}
	Q.tasks = t->next;
	free(t->raw);
	free(t->buf);
	free(t->id);
	free(t->type);
	free(t);
	if (rc == EXEC_E_EXISTS && exec_load(Q.ex, qt->id, &res) == 1) {
		log_info("queue: task %s ran already (%s); its outcome is reported "
		    "again, it is not run again", qt->id, exec_status_name(res->status));
		done_send(qt->id, qt->type, res, NULL, NULL, 0, raw, len);
		exec_result_free(res);
		return;
	}
	log_warnx("queue: task %s refused: %s", qt->id, err);
	done_send(qt->id, qt->type, NULL, "failed", err, 0, raw, len);
}

/* A message of the processing list: run, re-report, fail or dead-letter it. */
static void
msg_process(const char *raw, size_t len, int reconciling)
{
	struct queue_task qt;
	struct exec_result *res = NULL;
	char err[512];
	int rc;

	rc = queue_task_decode(raw, len, &qt, err, sizeof(err));
	if (rc == -2) {
		dead_letter(raw, len, err);
	} else if (qtask_find(qt.id) != NULL || exec_is_running(Q.ex, qt.id)) {
		if (!reconciling)
			log_warnx("queue: task %s is running already; the duplicate "
			    "message is dropped", qt.id);
	} else if (exec_load(Q.ex, qt.id, &res) == 1) {
		if (reconciling && res->reported) {
			const char *argv[4] = { "LREM", Q.proc, "1", raw };
			size_t lens[4] = { 4, strlen(Q.proc), 1, len };
			struct qop *op = xcalloc(1, sizeof(*op));
			op->kind = OP_LREM;
			(void)cmd_send(op, 4, argv, lens);
		} else {
			log_info("queue: task %s: reporting its outcome (%s)", qt.id,
			    exec_status_name(res->status));
			done_send(qt.id, qt.type ? qt.type : "", res, NULL, NULL, 0, raw, len);
		}
		exec_result_free(res);
	} else if (rc == -1) {
		log_warnx("queue: task %s refused: %s", qt.id, err);
		done_send(qt.id, qt.type ? qt.type : "", NULL, "failed", err, 0, raw, len);
	} else {
		task_run(&qt, raw, len);
	}
	queue_task_free(&qt);
}

/* ------------------------------------------------------------ connections */

/* BLMOVE answered: a task, or nothing within the wait. */
static void
on_take(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply *reply = r;

	(void)ac;
	(void)priv;
	Q.taking = 0;
	if (reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		log_warnx("queue: BLMOVE refused (redis 6.2 or later is needed): %.200s",
		    reply->str);
		timer_set(&Q.take_timer, 5000);
		return;
	}
	if (reply->type == REDIS_REPLY_STRING)
		msg_process(reply->str, reply->len, 0);
	timer_set(&Q.take_timer, 0);
}

/* Ask for the next task when a slot is free. */
static void
take_next(void)
{
	const char *argv[6] = { "BLMOVE", Q.name, Q.proc, "LEFT", "LEFT", TAKE_WAIT_SEC };

	if (!Q.up || Q.taking || Q.stopping || Q.c[C_TAKE] == NULL ||
	    running_count() >= Q.parallel)
		return;
	if (redisAsyncCommandArgv(Q.c[C_TAKE], on_take, NULL, 6, argv, NULL) == REDIS_OK)
		Q.taking = 1;
}

/* Timer form of take_next. */
static void
take_timer_fn(void *arg)
{
	(void)arg;
	take_next();
}

static void ctl_next(void);

/* A kill from the control list: fan it out on the channel. */
static void
on_ctl(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply *reply = r;

	(void)ac;
	(void)priv;
	Q.ctl_waiting = 0;
	if (reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
	    reply->element[1]->type == REDIS_REPLY_STRING) {
		const char *argv[3] = { "PUBLISH", Q.control, reply->element[1]->str };
		size_t lens[3] = { 7, strlen(Q.control), reply->element[1]->len };
		struct qop *op = xcalloc(1, sizeof(*op));
		op->kind = OP_PUB;
		(void)cmd_send(op, 3, argv, lens);
	}
	ctl_next();
}

/* Wait for the next control message. */
static void
ctl_next(void)
{
	const char *argv[3] = { "BLPOP", Q.control, TAKE_WAIT_SEC };

	if (!Q.up || Q.ctl_waiting || Q.c[C_CTL] == NULL)
		return;
	if (redisAsyncCommandArgv(Q.c[C_CTL], on_ctl, NULL, 3, argv, NULL) == REDIS_OK)
		Q.ctl_waiting = 1;
}

/* A control message on the channel: kill the task if it runs here. */
static void
on_sub(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply *reply = r;
	char err[256], *id;

	(void)ac;
	(void)priv;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(reply->element[0]->str, "message") != 0 ||
	    reply->element[2]->type != REDIS_REPLY_STRING)
		return;
	if (queue_control_decode(reply->element[2]->str, reply->element[2]->len,
	    &id, err, sizeof(err)) == -1) {
		log_warnx("queue: control message ignored: %s", err);
		return;
	}
	if (qtask_find(id) != NULL && exec_kill(Q.ex, id) == 1)
		log_info("queue: task %s: kill requested", id);
	else
		log_info("queue: kill of task %s: not running here (no-op)", id);
	free(id);
}

/* Backoff timer: connect again. */
static void q_connect(void *arg);

/* Drop every connection (never from inside a hiredis callback). */
static void
q_reset(void *arg)
{
	int i;

	(void)arg;
	Q.up = 0;
	for (i = 0; i < C_N; i++) {
		redisAsyncContext *ac = Q.c[i];
		if (ac != NULL) {
			Q.c[i] = NULL;
			ac->data = NULL;
			redisAsyncFree(ac);
		}
	}
	Q.connected = 0;
	Q.taking = Q.ctl_waiting = 0;
	Q.inflight = 0;		/* every pending reply came back as NULL */
	if (Q.paused && Q.ex != NULL)
		output_pause_all(0);
	if (Q.stopping)
		return;
	log_info("queue: reconnecting to redis in %lld ms", (long long)Q.backoff_ms);
	timer_set(&Q.reconnect, Q.backoff_ms);
	Q.backoff_ms = Q.backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : Q.backoff_ms * 2;
}

/* Schedule q_reset from the loop. */
static void
q_reset_later(void)
{
	Q.up = 0;
	if (timer_remaining(&Q.reset) < 0 && timer_remaining(&Q.reconnect) < 0)
		timer_set(&Q.reset, 0);
}

/* Which slot holds ac. */
static int
slot_of(const redisAsyncContext *ac)
{
	int i;

	for (i = 0; i < C_N; i++)
		if (Q.c[i] == ac)
			return i;
	return -1;
}

/* hiredis: a connection went away (it frees ac after this). */
static void
on_disconnect(const redisAsyncContext *ac, int status)
{
	int i = slot_of(ac);

	if (i < 0)
		return;
	Q.c[i] = NULL;
	if (!Q.stopping)
		log_warnx("queue: redis connection lost%s%s", status != REDIS_OK ?
		    ": " : "", status != REDIS_OK ? ac->errstr : "");
	q_reset_later();
}

/* hiredis: a connect finished. */
static void
on_connect(const redisAsyncContext *ac, int status)
{
	int i = slot_of(ac);

	if (i < 0)
		return;
	if (status != REDIS_OK) {
		Q.c[i] = NULL;
		log_warnx("queue: cannot connect to redis %s:%d: %s", Q.url.host,
		    Q.url.port, ac->errstr);
		q_reset_later();
		return;
	}
	if (++Q.connected < C_N)
		return;
	{
		const char *argv[4] = { "LRANGE", Q.proc, "0", "-1" };
		struct qop *op = xcalloc(1, sizeof(*op));
		log_info("queue: connected to redis %s:%d db %d; queue %s, control %s, "
		    "logs %s", Q.url.host, Q.url.port, Q.url.db, Q.name, Q.control,
		    Q.logs ? Q.logsq : "off");
		Q.up = 1;
		Q.backoff_ms = BACKOFF_MIN_MS;
		op->kind = OP_RANGE;
		(void)cmd_send(op, 4, argv, NULL);	/* reconcile, then take */
		ctl_next();
	}
}

/* Open the four connections; AUTH/SELECT are queued before anything else. */
static void
q_connect(void *arg)
{
	int i;

	(void)arg;
	for (i = 0; i < C_N; i++) {
		redisAsyncContext *ac = redisAsyncConnect(Q.url.host, Q.url.port);
		if (ac == NULL || ac->err) {
			log_warnx("queue: cannot connect to redis %s:%d: %s", Q.url.host,
			    Q.url.port, ac != NULL ? ac->errstr : "out of memory");
			if (ac != NULL)
				redisAsyncFree(ac);
			q_reset(NULL);
			return;
		}
		if (redis_ev_attach(ac) == -1) {
			log_warn("queue: cannot watch the redis connection");
			redisAsyncFree(ac);
			q_reset(NULL);
			return;
		}
		Q.c[i] = ac;
		/* A vanished host shows as an error instead of a silent wait. */
		if (redisEnableKeepAlive(&ac->c) != REDIS_OK)
			log_warnx("queue: cannot enable TCP keepalive on the redis "
			    "connection");
		redisAsyncSetConnectCallback(ac, on_connect);
		redisAsyncSetDisconnectCallback(ac, on_disconnect);
		if (Q.url.password != NULL) {
			const char *argv[2] = { "AUTH", Q.url.password };
			struct qop *op = xcalloc(1, sizeof(*op));
			op->kind = OP_AUTH;
			if (redisAsyncCommandArgv(ac, on_cmd_reply, op, 2, argv, NULL) != REDIS_OK)
				free(op);
		}
		if (Q.url.db != 0) {
			char db[16];
			const char *argv[2] = { "SELECT", db };
			struct qop *op = xcalloc(1, sizeof(*op));
			snprintf(db, sizeof(db), "%d", Q.url.db);
			op->kind = OP_AUTH;
			if (redisAsyncCommandArgv(ac, on_cmd_reply, op, 2, argv, NULL) != REDIS_OK)
				free(op);
		}
	}
	{
		const char *argv[2] = { "SUBSCRIBE", Q.control };
		(void)redisAsyncCommandArgv(Q.c[C_SUB], on_sub, NULL, 2, argv, NULL);
	}
}

/* ------------------------------------------------------------ life cycle */

/* Interrupted or unreported results found at start: reconciled later. */
static void
on_recovered(struct exec_result *res, void *arg)
{
	(void)arg;
	log_info("queue: task %s from before the restart: %s (reported after "
	    "the connect)", res->id, exec_status_name(res->status));
	exec_result_free(res);
}

/* Start the source (queue.h). */
void
queue_start(void)
{
	struct exec_config c;
	char err[512], *cmd_dir, *tasks;

	if (Q.on || str_blank(A.cfg.queue_redis)) {
		if (!Q.on)
			log_info("queue source off (devops.queue.redis not set)");
		return;
	}
	if (redis_url_parse(A.cfg.queue_redis, &Q.url, err, sizeof(err)) == -1) {
		log_error("queue source off: devops.queue.redis: %s", err);
		return;
	}
	log_add_secret(Q.url.password);
	Q.name = xstrdup(str_blank(A.cfg.queue_name) ? "queue_job_task" : A.cfg.queue_name);
	Q.control = str_blank(A.cfg.queue_control) ? xasprintf("%s_control", Q.name) :
	    xstrdup(A.cfg.queue_control);
	Q.logsq = str_blank(A.cfg.queue_logs_queue) ? xasprintf("%s_logs", Q.name) :
	    xstrdup(A.cfg.queue_logs_queue);
	Q.http = str_blank(A.cfg.queue_logs_http) ? NULL : xstrdup(A.cfg.queue_logs_http);
	Q.proc = xasprintf("%s_processing_%s", Q.name, A.cfg.agent_id);
	Q.dead = xasprintf("%s_dead", Q.name);
	Q.logs = A.cfg.queue_logs;
	Q.parallel = A.cfg.queue_parallel > 0 ? A.cfg.queue_parallel : 4;
	cmd_dir = str_blank(A.cfg.queue_cmd_dir) ? xstrdup("queue_cmd") :
	    xstrdup(A.cfg.queue_cmd_dir);
	tasks = xasprintf("%s/queue_tasks", A.workdir);
	memset(&c, 0, sizeof(c));
	c.workspace = cmd_dir;
	c.taskdir = tasks;
	c.tree = tree_exec_hooks();	/* escaped processes: cgroup */
	c.kill_grace_ms = agent_period(P_KILL_GRACE);
	Q.ex = exec_new(&c, err, sizeof(err));
	free(cmd_dir);
	free(tasks);
	if (Q.ex == NULL) {
		log_error("queue source off: %s", err);
		redis_url_clear(&Q.url);
		return;
	}
	Q.on = 1;
	Q.backoff_ms = BACKOFF_MIN_MS;
	timer_init(&Q.reconnect, "queue-connect", q_connect, NULL);
	timer_init(&Q.reset, "queue-reset", q_reset, NULL);
	timer_init(&Q.take_timer, "queue-take", take_timer_fn, NULL);
	(void)exec_recover(Q.ex, TAG, on_recovered, NULL);
	log_info("queue source on: redis %s:%d db %d, commands in %s, %d in "
	    "parallel, processing list %s", Q.url.host, Q.url.port, Q.url.db,
	    exec_workspace(Q.ex), Q.parallel, Q.proc);
	timer_set(&Q.reconnect, 0);
}

/* Remove old reported task dirs (queue.h). */
int
queue_prune(long long max_age_sec)
{
	return Q.on ? exec_prune(Q.ex, max_age_sec) : 0;
}

/* Agent exit (queue.h). */
void
queue_stop(int64_t budget_ms)
{
	int64_t until = mono_ms() + budget_ms;

	if (!Q.on)
		return;
	if (exec_running(Q.ex) > 0) {
		log_info("queue: stopping %d running task(s)", exec_running(Q.ex));
		exec_shutdown(Q.ex, budget_ms / 2);
	}
	/* Let the done messages and their LREMs go out. */
	while (Q.up && Q.inflight > 0 && mono_ms() < until)
		ev_run_once(50);
	Q.stopping = 1;
	timer_cancel(&Q.reconnect);
	timer_cancel(&Q.take_timer);
	q_reset(NULL);
	timer_cancel(&Q.reset);
	exec_free(Q.ex);
	Q.ex = NULL;
	redis_url_clear(&Q.url);
	free(Q.name);
	free(Q.control);
	free(Q.logsq);
	free(Q.http);
	free(Q.proc);
	free(Q.dead);
	Q.on = 0;
}
