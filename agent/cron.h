/*
 * cron.h - the cron task source (docs/cron.md): jobs defined in etcd,
 * scheduled by cron expressions (common/cronexpr.h), run once across the
 * fleet under an etcd lease lock, on the safe executor (common/executor.h),
 * with batched job logs.
 *
 * The job decoder and the log sinks are public so that they can be tested
 * and fuzzed without etcd (fuzz/fuzz_cron.c, tests/unit/test_cron.c).
 */
#ifndef CRON_H
#define CRON_H

#include <stddef.h>
#include <stdint.h>

#include "cronexpr.h"

/** Largest job value accepted from etcd, bytes. */
#define CRON_VALUE_MAX		((size_t)64 * 1024)
/** Longest job name (it names the task dir, the lock and the killer key). */
#define CRON_NAME_MAX		64
/** Longest command, bytes. */
#define CRON_COMMAND_MAX	((size_t)32 * 1024)
/** Bytes of output a job log record keeps (the tail). */
#define CRON_OUTPUT_MAX		((size_t)16 * 1024)

/** A decoded job; every pointer is owned (cron_job_free). */
struct cron_job {
	char		*name;
	char		*command;
	char		*expr;		/* the cronExpr text */
	struct cronexpr	 cx;		/* parsed */
};

/**
 * Decode value (len bytes, not NUL-terminated, from etcd key
 * <prefix>jobs/<key_name>) as the design note's job: a JSON object
 * {"name","command","cronExpr"} (other members ignored). name must equal
 * key_name (unless key_name is NULL), be 1..CRON_NAME_MAX bytes of
 * [A-Za-z0-9._-] and not "." or ".."; command a non-blank string of at most
 * CRON_COMMAND_MAX bytes; cronExpr what cronexpr_parse accepts; the value
 * at most CRON_VALUE_MAX bytes. Returns 0 with *out filled (free with
 * cron_job_free), or -1 with a one-line reason in err (errlen bytes) and
 * *out zeroed. No side effects.
 */
int cron_job_parse(const char *key_name, const char *value, size_t len,
    struct cron_job *out, char *err, size_t errlen);
/** Free what cron_job_parse allocated; j is zeroed. */
void cron_job_free(struct cron_job *j);

/**
 * A store of job log records: write n records (JSON texts, one object
 * each, borrowed) at once. Returns 0, or -1 with err (errlen bytes); the
 * records are then kept (at most 1000, the oldest dropped) and retried at
 * the next commit, for that sink only. A sink that delivers in the
 * background (the Redis stream, cron_redis.h) takes copies into a bounded
 * queue of its own, retries by itself and returns 0.
 */
struct cron_sink {
	const char	*name;
	int		(*write)(struct cron_sink *s, char *const *recs, size_t n,
			    char *err, size_t errlen);
	void		(*free)(struct cron_sink *s);
};

/**
 * The local JSONL sink: appends one record per line to path (created with
 * mode 0640); when the file would exceed max_bytes it is renamed to
 * path.1 (path.1 to path.2 ... up to path.<keep>, the oldest dropped)
 * first. New sink, free with s->free(s).
 */
struct cron_sink *cron_sink_jsonl_new(const char *path, long long max_bytes,
    int keep);

/**
 * Start the source when devops.cron.etcd is set (else log that it is off
 * and return): the executor over devops.cron.workspace, recovery of
 * results the previous agent did not log, the first list of the jobs.
 * Never blocks: everything else happens from the event loop.
 */
void cron_start(void);
/**
 * Agent exit: stop the running jobs (up to budget_ms, they are logged as
 * stopped), revoke their leases (best effort), flush the job log.
 */
void cron_stop(int64_t budget_ms);

#endif
