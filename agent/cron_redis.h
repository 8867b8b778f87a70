/*
 * cron_redis.h - the Redis-stream sink of the cron job log (docs/cron.md,
 * "Job logs"): every record is XADDed to a stream of the queue source's
 * Redis (devops.queue.redis), on the event loop through hiredis's async API
 * (common/redis.h), with a bounded queue of the records Redis has not
 * accepted yet.
 */
#ifndef CRON_REDIS_H
#define CRON_REDIS_H

#include <stddef.h>

#include "cron.h"
#include "redis.h"

/** Records the stream sink keeps while Redis is away (then the oldest go). */
#define CRON_STREAM_KEEP_MAX	((size_t)10000)
/** Bytes of records the stream sink keeps while Redis is away. */
#define CRON_STREAM_KEEP_BYTES	((size_t)8 * 1024 * 1024)

/**
 * A bounded FIFO of record texts (each an owned NUL-terminated string):
 * when it holds more than max_n records or more than max_bytes bytes of
 * text, the oldest records are freed (the newest one always stays).
 * Initialise with cron_recq_init, free with cron_recq_clear.
 */
struct cron_recq {
	char		**v;		/* v[0] is the oldest */
	size_t		 n, cap;
	size_t		 bytes;		/* sum of strlen(v[i]) */
	size_t		 max_n, max_bytes;
};

/** Empty q with the caps max_n records and max_bytes bytes (0 = none). */
void cron_recq_init(struct cron_recq *q, size_t max_n, size_t max_bytes);

/**
 * Append text (owned by q after the call) as the newest record. Returns
 * how many oldest records were dropped to stay within the caps.
 */
size_t cron_recq_push(struct cron_recq *q, char *text);

/**
 * Move up to max oldest records into out (an array of max pointers; the
 * caller owns them after). Returns how many were moved.
 */
size_t cron_recq_take(struct cron_recq *q, char **out, size_t max);

/**
 * Put k records (owned by q after the call, oldest first) back in front
 * of the queue, as they were before cron_recq_take. Returns how many
 * oldest records were then dropped to stay within the caps.
 */
size_t cron_recq_unshift(struct cron_recq *q, char **texts, size_t k);

/** Free every record and the array; q is empty (caps kept). */
void cron_recq_clear(struct cron_recq *q);

/**
 * The Redis-stream sink: each record (a flat JSON object) becomes one entry
 * `XADD <stream> MAXLEN ~ <maxlen> * <member> <value> ...`, one field per
 * member of the record in its order, strings as they are, numbers as
 * decimal integers. u is copied (its password too), stream must be
 * non-empty, maxlen > 0 entries. Everything runs on the event loop: the
 * connect (started at once, again after a backoff of 250 ms doubling up to
 * 10 s when Redis is away), AUTH/SELECT from u, and the XADDs in pipelined
 * batches; a connect or a batch without an answer in 5 s drops the
 * connection. write() copies the records into the sink's queue (at most
 * keep_n records and keep_bytes bytes; the oldest are dropped beyond, with
 * a log line counting them) and returns 0: the sink retries by itself and
 * removes a record only once Redis accepted it (at least once: a record
 * whose answer was lost with the connection is sent again). free() gives
 * waiting records up to 1 s to leave when connected (it runs the loop).
 * New sink, free with s->free(s).
 */
struct cron_sink *cron_sink_redis_new(const struct redis_url *u,
    const char *stream, long long maxlen, size_t keep_n, size_t keep_bytes);

#endif
