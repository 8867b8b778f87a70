/*
 * cron.c - the cron task source (docs/cron.md), the agent's third source of
 * local tasks beside the pipeline and queue ones, after the go-crontab
 * worker design: jobs under <prefix>jobs/<name> in etcd, listed then
 * watched; each scheduled by its cron expression; a fire runs on one agent
 * of the fleet only, under a lease lock; <prefix>killer/<name> kills a run;
 * one log record per run, batched into the sinks.
 *
 * Exactly once per fire across the fleet: the lock is a transaction that
 * creates <prefix>lock/<name> (bound to a lease kept alive while the job
 * runs) only when it does not exist AND <prefix>fired/<name> (the plan
 * time of the last fire that ran anywhere, 16 zero-padded digits of ms so
 * that etcd's byte compare is a numeric one) is older than this fire; it
 * writes both. An agent that fires late, after the winner already ended
 * and revoked its lease, still loses. Plan times are the same on every
 * agent (the expression's next time; @every is aligned to the epoch).
 *
 * Never twice after a restart: the plan time of a fire is persisted
 * (<workspace>/cron-state.json) before the lock is tried, the next fire
 * is computed from max(now, that time), and a task id names the fire
 * (cron-<name>-<plan ms>) which the executor never runs twice.
 *
 * Everything runs from the event loop; etcd calls are asynchronous
 * (common/etcd.h): an unreachable etcd only makes fires fail to lock
 * (no lock, no run) and the list/watch reconnect with a backoff.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "agent.h"
#include "cron.h"
#include "cron_redis.h"
#include "etcd.h"
#include "ev.h"
#include "executor.h"
#include "fsutil.h"
#include "http.h"
#include "log.h"
#include "util.h"

#define TAG			"cron"
#define STATE_FILE		"cron-state.json"
#define LOG_FILE		"logs/cron-jobs.jsonl"
#define LOG_KEEP		3
#define LOG_KEEP_MAX		((size_t)1000)	/* records kept for a failing sink */
#define BACKOFF_MIN_MS		INT64_C(500)
#define BACKOFF_MAX_MS		INT64_C(30000)
#define WATCH_MAX_MS		(INT64_C(5) * 60 * 1000)	/* re-list at least this often */
#define KILL_GRACE_MS		5000
#define PRUNE_PERIOD_MS		(INT64_C(10) * 60 * 1000)
#define PRUNE_AGE_SEC		3600
#define TICK_MAX_MS		1000

/* ------------------------------------------------------------ decoder */

/* Free a decoded job. */
void
cron_job_free(struct cron_job *j)
{
	free(j->name);
	free(j->command);
	free(j->expr);
	memset(j, 0, sizeof(*j));
}

/* 1 when s is a usable job name. */
static int
name_valid(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > CRON_NAME_MAX || strcmp(s, ".") == 0 ||
	    strcmp(s, "..") == 0)
		return 0;
	for (i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* Decode a job value (see cron.h). */
int
cron_job_parse(const char *key_name, const char *value, size_t len,
    struct cron_job *out, char *err, size_t errlen)
{
	const cJSON *n, *c, *e;
	char cerr[200];
	cJSON *j;

	memset(out, 0, sizeof(*out));
	if (len > CRON_VALUE_MAX) {
		snprintf(err, errlen, "value of %zu bytes is larger than %zu",
		    len, CRON_VALUE_MAX);
		return -1;
	}
	if ((j = cJSON_ParseWithLength(value, len)) == NULL || !cJSON_IsObject(j)) {
		snprintf(err, errlen, "not a JSON object");
		cJSON_Delete(j);
		return -1;
	}
	n = cJSON_GetObjectItemCaseSensitive(j, "name");
	c = cJSON_GetObjectItemCaseSensitive(j, "command");
	e = cJSON_GetObjectItemCaseSensitive(j, "cronExpr");
	if (!cJSON_IsString(n) || !name_valid(n->valuestring)) {
		snprintf(err, errlen, "name: not 1..%d characters of "
		    "[A-Za-z0-9._-]", CRON_NAME_MAX);
		goto fail;
	}
	if (key_name != NULL && strcmp(key_name, n->valuestring) != 0) {
		snprintf(err, errlen, "name '%s' differs from the key's name",
		    n->valuestring);
		goto fail;
	}
	if (!cJSON_IsString(c) || str_blank(c->valuestring)) {
		snprintf(err, errlen, "command: missing, not a string or blank");
		goto fail;
	}
	if (strlen(c->valuestring) > CRON_COMMAND_MAX) {
		snprintf(err, errlen, "command: longer than %zu bytes",
		    CRON_COMMAND_MAX);
		goto fail;
	}
	if (!cJSON_IsString(e)) {
		snprintf(err, errlen, "cronExpr: missing or not a string");
		goto fail;
	}
	if (cronexpr_parse(e->valuestring, &out->cx, cerr, sizeof(cerr)) == -1) {
		snprintf(err, errlen, "cronExpr: %s", cerr);
		goto fail;
	}
	out->name = xstrdup(n->valuestring);
	out->command = xstrdup(c->valuestring);
	out->expr = xstrdup(e->valuestring);
	cJSON_Delete(j);
	return 0;
fail:
	cJSON_Delete(j);
	memset(out, 0, sizeof(*out));
	return -1;
}

/* ------------------------------------------------------------ JSONL sink */

struct jsonl_sink {
	struct cron_sink base;
	char		*path;
	long long	 max_bytes;
	int		 keep;
};

/* Shift path.N-1 to path.N ... path to path.1. */
static void
jsonl_rotate(struct jsonl_sink *s)
{
	int i;

	for (i = s->keep; i >= 1; i--) {
		char *from = i == 1 ? xstrdup(s->path) :
		    xasprintf("%s.%d", s->path, i - 1);
		char *to = xasprintf("%s.%d", s->path, i);

		if (rename(from, to) == -1 && errno != ENOENT)
			log_warn("cron log: rename %s", from);
		free(from);
		free(to);
	}
}

/* Append records, one per line; rotate first when the file would be too big. */
static int
jsonl_write(struct cron_sink *base, char *const *recs, size_t n, char *err,
    size_t errlen)
{
	struct jsonl_sink *s = (struct jsonl_sink *)base;
	struct stat st;
	size_t i, total = 0, off = 0;
	char *buf;
	int fd, rc = 0;

	for (i = 0; i < n; i++)
		total += strlen(recs[i]) + 1;
	if (stat(s->path, &st) == 0 && st.st_size > 0 &&
	    (long long)st.st_size + (long long)total > s->max_bytes)
		jsonl_rotate(s);
	buf = xmalloc(total + 1);
	for (i = 0; i < n; i++) {
		size_t l = strlen(recs[i]);
		memcpy(buf + off, recs[i], l);
		off += l;
		buf[off++] = '\n';
	}
	fd = open(s->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (fd == -1 || fs_write_all(fd, buf, off) == -1) {
		snprintf(err, errlen, "%s: %s", s->path, strerror(errno));
		rc = -1;
	}
	if (fd != -1 && close(fd) == -1 && rc == 0) {
		snprintf(err, errlen, "close %s: %s", s->path, strerror(errno));
		rc = -1;
	}
	free(buf);
	return rc;
}

/* Free the JSONL sink. */
static void
jsonl_free(struct cron_sink *base)
{
	struct jsonl_sink *s = (struct jsonl_sink *)base;

	free(s->path);
	free(s);
}

/* New JSONL sink (see cron.h). */
struct cron_sink *
cron_sink_jsonl_new(const char *path, long long max_bytes, int keep)
{
	struct jsonl_sink *s = xcalloc(1, sizeof(*s));

	s->base.name = "jsonl";
	s->base.write = jsonl_write;
	s->base.free = jsonl_free;
	s->path = xstrdup(path);
	s->max_bytes = max_bytes > 0 ? max_bytes : 16LL * 1024 * 1024;
	s->keep = keep > 0 ? keep : 1;
	return &s->base;
}

/* ------------------------------------------------------------ state */

/* A job as scheduled here. */
struct job {
	struct cron_job	 def;
	int64_t		 next_ms;	/* plan time of the next fire */
	int		 fired_ok;	/* <prefix>fired/<name> known to exist */
	int		 seen;		/* in the latest list */
	struct job	*next;
};

enum run_state { R_PREPARE, R_GRANT, R_LOCK, R_RUN, R_END };

/* One fire being tried or run. */
struct run {
	char		*name;
	char		*command;
	char		 id[EXEC_ID_MAX + 1];
	int64_t		 plan_ms, sched_ms, start_ms;
	int64_t		 lease;
	int64_t		 lease_ok_ms;	/* mono time of the last confirmed keep-alive */
	enum run_state	 state;
	int		 killed;	/* by request */
	int		 lock_lost;
	int		 busy;		/* an etcd call of this run is in flight */
	const char	*kill_why;	/* static text, set by run_kill */
	struct timer	 keep_timer;
	struct run	*next;
};

/*
 * One log record waiting in the batch; its task is marked reported once
 * every sink has it. done has bit s set when sink s took it, so that a
 * sink that failed is retried alone and the others never get it twice.
 */
struct rec {
	char		*text;
	char		 id[EXEC_ID_MAX + 1];
	unsigned	 done;
};

static struct {
	int		 on;
	char		*prefix;
	char		*jobs_prefix, *lock_prefix, *killer_prefix, *fired_prefix;
	struct executor	*ex;
	struct job	*jobs;
	struct run	*runs;
	cJSON		*state;		/* name -> last fired plan ms */
	char		*state_path;
	/* list + watch */
	struct timer	 list_timer;
	struct timer	 watch_timer;
	struct timer	 killer_timer;
	int		 relist;	/* history compacted: list again */
	int64_t		 list_rev;	/* revision of the list being read */
	char		*list_after;	/* last key of the previous page */
	size_t		 list_after_len;
	int		 list_keys;
	int		 killer_restart;
	int64_t		 backoff;
	int		 listing;
	long		 watch_id, killer_id;
	int64_t		 rev;		/* last revision seen of the jobs */
	int64_t		 killer_rev;
	/* schedule */
	struct timer	 tick;
	struct timer	 prune_timer;
	/* log */
	struct cron_sink *sinks[2];
	int		 nsinks;
	struct rec	*batch;
	size_t		 nbatch, capbatch;
	struct timer	 commit_timer;
	int		 stopping;
} C;

static void list_start(void *arg);
static void list_done(const struct etcd_reply *r, void *arg);
static void tick_fn(void *arg);
static void killer_watch_start(void);

/* Plan time as the fired key's value: 16 zero-padded digits. */
static void
plan_text(int64_t plan, char buf[32])
{
	snprintf(buf, 32, "%016" PRId64, plan);
}

/* Job of that name, or NULL. */
static struct job *
job_find(const char *name)
{
	struct job *j;

	for (j = C.jobs; j != NULL; j = j->next)
		if (strcmp(j->def.name, name) == 0)
			return j;
	return NULL;
}

/* Run of that name, or NULL. */
static struct run *
run_find(const char *name)
{
	struct run *r;

	for (r = C.runs; r != NULL; r = r->next)
		if (strcmp(r->name, name) == 0)
			return r;
	return NULL;
}

/* Last fired plan time of name from the state file, or 0. */
static int64_t
state_get(const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(C.state, name);

	return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

/* Persist the last fired plan time of name (atomic write). */
static int
state_set(const char *name, int64_t plan)
{
	cJSON *v = cJSON_GetObjectItemCaseSensitive(C.state, name);
	char *text;
	int rc;

	if (v != NULL)
		cJSON_SetNumberValue(v, (double)plan);
	else
		cJSON_AddNumberToObject(C.state, name, (double)plan);
	text = cJSON_PrintUnformatted(C.state);
	if (text == NULL)
		fatalx("cron: out of memory");
	rc = fs_write_atomic(C.state_path, text, strlen(text), 0640);
	if (rc == -1)
		log_warn("cron: cannot persist %s", C.state_path);
	free(text);
	return rc;
}

/* Load the state file; a missing or broken one starts empty. */
static void
state_load(void)
{
	char *text = NULL;
	size_t len = 0;

	C.state = NULL;
	if (fs_read_file(C.state_path, (size_t)1024 * 1024, &text, &len) == 0)
		C.state = cJSON_ParseWithLength(text, len);
	free(text);
	if (!cJSON_IsObject(C.state)) {
		cJSON_Delete(C.state);
		C.state = cJSON_CreateObject();
	}
}

/* ------------------------------------------------------------ job log */

/*
 * Write the batch to every sink: each sink gets the records it does not
 * have yet; a record every sink has leaves the batch and its task is
 * marked reported. A sink that failed is retried at the next commit; the
 * batch then keeps at most LOG_KEEP_MAX records (the oldest go, with a log
 * line; their results stay unreported on disk and are logged again by the
 * next start).
 */
static void
log_commit(void *arg)
{
	char **texts, err[512];
	size_t i, k, done = 0;
	unsigned all = (1U << C.nsinks) - 1U;
	int s;

	(void)arg;
	timer_cancel(&C.commit_timer);
	if (C.nbatch == 0)
		return;
	texts = xcalloc(C.nbatch, sizeof(*texts));
	for (s = 0; s < C.nsinks; s++) {
		unsigned bit = 1U << s;

		for (i = 0, k = 0; i < C.nbatch; i++)
			if ((C.batch[i].done & bit) == 0)
				texts[k++] = C.batch[i].text;
		if (k == 0)
			continue;
		if (C.sinks[s]->write(C.sinks[s], texts, k, err, sizeof(err)) == -1) {
			log_warnx("cron log: sink %s: %s; %zu record(s) kept for "
			    "a retry", C.sinks[s]->name, err, k);
			continue;
		}
		for (i = 0; i < C.nbatch; i++)
			C.batch[i].done |= bit;
	}
	free(texts);
	for (i = 0, k = 0; i < C.nbatch; i++) {
		if (C.batch[i].done != all) {
			C.batch[k++] = C.batch[i];
			continue;
		}
		if (C.batch[i].id[0] != '\0' && C.ex != NULL &&
		    exec_mark_reported(C.ex, C.batch[i].id) == -1)
			log_warn("cron %s: cannot mark the result logged",
			    C.batch[i].id);
		free(C.batch[i].text);
		done++;
	}
	C.nbatch = k;
	if (done > 0)
		log_info("cron log: wrote %zu record(s)", done);
	if (C.nbatch > LOG_KEEP_MAX) {
		size_t drop = C.nbatch - LOG_KEEP_MAX;

		for (i = 0; i < drop; i++)
			free(C.batch[i].text);
		memmove(C.batch, C.batch + drop, LOG_KEEP_MAX * sizeof(*C.batch));
		C.nbatch = LOG_KEEP_MAX;
		log_warnx("cron log: dropped the %zu oldest record(s) a sink could "
		    "not take (more than %zu kept; their runs are logged again at "
		    "the next start)", drop, LOG_KEEP_MAX);
	}
	if (C.nbatch > 0 && !C.stopping)
		timer_set(&C.commit_timer, A.cfg.cron_log_commit_ms);
}

/* Add a record; commit at devops.cron.log.batch records or after commit.ms. */
static void
log_append(cJSON *rec, const char *id)
{
	char *text = cJSON_PrintUnformatted(rec);

	cJSON_Delete(rec);
	if (text == NULL)
		fatalx("cron: out of memory");
	if (C.nbatch == C.capbatch) {
		C.capbatch = C.capbatch ? C.capbatch * 2 : 16;
		C.batch = xrealloc(C.batch, C.capbatch * sizeof(*C.batch));
	}
	C.batch[C.nbatch].text = text;
	snprintf(C.batch[C.nbatch].id, sizeof(C.batch[C.nbatch].id), "%s",
	    id ? id : "");
	C.batch[C.nbatch].done = 0;
	C.nbatch++;
	if (C.nbatch >= (size_t)A.cfg.cron_log_batch)
		log_commit(NULL);
	else if (C.nbatch == 1 || timer_remaining(&C.commit_timer) < 0)
		timer_set(&C.commit_timer, A.cfg.cron_log_commit_ms);
}

/* The last CRON_OUTPUT_MAX bytes of s, not cutting a UTF-8 sequence. */
static const char *
output_tail(const char *s)
{
	size_t n = strlen(s);
	const char *p;

	if (n <= CRON_OUTPUT_MAX)
		return s;
	p = s + (n - CRON_OUTPUT_MAX);
	while (*p != '\0' && ((unsigned char)*p & 0xc0) == 0x80)
		p++;
	return p;
}

/* Build the design note's record of one run. */
static cJSON *
log_record(const char *name, const char *command, const char *error,
    const char *output, int64_t plan, int64_t sched, int64_t start, int64_t end)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "jobName", name);
	cJSON_AddStringToObject(o, "command", command);
	cJSON_AddStringToObject(o, "err", error);
	cJSON_AddStringToObject(o, "output", output_tail(output));
	cJSON_AddNumberToObject(o, "planTime", (double)plan);
	cJSON_AddNumberToObject(o, "scheduleTime", (double)sched);
	cJSON_AddNumberToObject(o, "startTime", (double)start);
	cJSON_AddNumberToObject(o, "endTime", (double)end);
	return o;
}

/* ------------------------------------------------------------ runs */

/* Ignore the answer of a best-effort call. */
static void
ignore_reply(const struct etcd_reply *r, void *arg)
{
	(void)arg;
	if (!r->ok)
		log_debug("cron: %s", r->error);
}

/* Free a run and unlink it; revoke its lease (best effort). */
static void
run_free(struct run *r)
{
	struct run **pp;

	for (pp = &C.runs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	timer_cancel(&r->keep_timer);
	if (r->lease != 0 && etcd_lease_revoke(r->lease, ignore_reply, NULL) == -1)
		log_debug("cron %s: revoke not sent; the lease expires", r->name);
	free(r->name);
	free(r->command);
	free(r);
}

/*
 * The etcd answer of a run's call arrives after the run may have been
 * given up (agent exit): calls carry the run only while it is listed.
 */
static int
run_alive(struct run *r)
{
	struct run *x;

	for (x = C.runs; x != NULL; x = x->next)
		if (x == r)
			return 1;
	return 0;
}

/* Kill a run (exec_kill: SIGTERM to its group, SIGKILL after the grace). */
static void
run_kill(struct run *r, const char *why)
{
	if (r->state != R_RUN)
		return;
	log_info("cron %s: killing the run of %" PRId64 " (%s)", r->name,
	    r->plan_ms, why);
	r->kill_why = why;
	if (exec_kill(C.ex, r->id) == 0)
		log_warnx("cron %s: no process to kill", r->name);
}

/* Keep-alive answer: note success; a gone lease ends the run. */
static void
keep_done(const struct etcd_reply *rep, void *arg)
{
	struct run *r = arg;
	const cJSON *res;

	if (!run_alive(r))
		return;
	r->busy = 0;
	res = rep->ok ? cJSON_GetObjectItemCaseSensitive(rep->json, "result") : NULL;
	if (rep->ok && etcd_int(res, "TTL", 0) > 0) {
		r->lease_ok_ms = mono_ms();
		return;
	}
	if (rep->ok) {
		/* etcd says the lease is gone: another agent may take the lock. */
		r->lock_lost = 1;
		run_kill(r, "its lock lease expired");
		return;
	}
	log_warnx("cron %s: keep-alive failed: %s", r->name, rep->error);
}

/* Keep the lease alive; past the TTL without an answer, the lock is lost. */
static void
keep_fn(void *arg)
{
	struct run *r = arg;
	int64_t ttl_ms = (int64_t)A.cfg.cron_lock_ttl_sec * 1000;

	if (r->state != R_RUN)
		return;
	if (mono_ms() - r->lease_ok_ms >= ttl_ms && !r->lock_lost) {
		r->lock_lost = 1;
		run_kill(r, "no keep-alive for the lock lease within its TTL");
	}
	if (!r->busy && etcd_lease_keepalive(r->lease, keep_done, r) == 0)
		r->busy = 1;
	timer_set(&r->keep_timer, ttl_ms / 3 > 0 ? ttl_ms / 3 : 1);
}

/* The task of a run is over: log it, release the lock. */
static void
task_done(struct exec_result *res, void *arg)
{
	struct run *r = NULL, *x;
	const char *error;
	char ebuf[256];

	(void)arg;
	for (x = C.runs; x != NULL; x = x->next)
		if (strcmp(x->id, res->id) == 0)
			r = x;
	error = res->error != NULL ? res->error : "";
	if (r != NULL && r->killed) {
		snprintf(ebuf, sizeof(ebuf), "killed on request (%s)",
		    r->kill_why != NULL ? r->kill_why : error);
		error = ebuf;
	} else if (r != NULL && r->lock_lost) {
		snprintf(ebuf, sizeof(ebuf), "killed: lock lost (%s)",
		    r->kill_why != NULL ? r->kill_why : error);
		error = ebuf;
	}
	log_info("cron %s: %s%s%s", res->id, exec_status_name(res->status),
	    *error ? ": " : "", error);
	if (r != NULL) {
		log_append(log_record(r->name, r->command, error,
		    res->output ? res->output : "", r->plan_ms, r->sched_ms,
		    res->start_ms ? res->start_ms : r->start_ms,
		    res->end_ms ? res->end_ms : wall_ms()), res->id);
		r->state = R_END;
		run_free(r);
	}
	exec_result_free(res);
}

/* Start the task of a run that holds the lock. */
static void
run_exec(struct run *r)
{
	struct exec_request req;
	char err[1024], planv[64], namev[128];
	char *env[3];
	enum exec_error rc;

	snprintf(planv, sizeof(planv), "CRON_PLAN_TIME_MS=%" PRId64, r->plan_ms);
	snprintf(namev, sizeof(namev), "CRON_JOB_NAME=%s", r->name);
	env[0] = namev;
	env[1] = planv;
	env[2] = NULL;
	memset(&req, 0, sizeof(req));
	req.id = r->id;
	req.tag = TAG;
	req.script = r->command;
	req.env = env;
	req.user = A.cfg.slave_user;
	req.timeout_ms = A.cfg.cron_timeout_sec > INT64_MAX / 1000 ? 0 :
	    A.cfg.cron_timeout_sec * 1000;
	r->state = R_RUN;
	r->start_ms = wall_ms();
	r->lease_ok_ms = mono_ms();
	rc = exec_start(C.ex, &req, task_done, NULL, err, sizeof(err));
	if (rc == EXEC_OK) {
		log_info("cron %s: running fire %" PRId64 " (lock held, lease %"
		    PRId64 ")", r->name, r->plan_ms, r->lease);
		keep_fn(r);
		return;
	}
	if (rc == EXEC_E_EXISTS)
		log_info("cron %s: fire %" PRId64 " already ran here", r->name,
		    r->plan_ms);
	else {
		log_warnx("cron %s: cannot run: %s", r->name, err);
		log_append(log_record(r->name, r->command, err, "", r->plan_ms,
		    r->sched_ms, r->start_ms, wall_ms()), NULL);
	}
	run_free(r);
}

/* Lock answer: run, or skip the fire. */
static void
lock_done(const struct etcd_reply *rep, void *arg)
{
	struct run *r = arg;
	const cJSON *resps, *it;
	int fired_seen = 0;

	if (!run_alive(r))
		return;
	r->busy = 0;
	if (!rep->ok) {
		log_warnx("cron %s: fire %" PRId64 " skipped: no lock: %s", r->name,
		    r->plan_ms, rep->error);
		run_free(r);
		return;
	}
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep->json, "succeeded"))) {
		run_exec(r);
		return;
	}
	/* Lost: the failure branch read the fired key; absent -> ensure again. */
	resps = cJSON_GetObjectItemCaseSensitive(rep->json, "responses");
	cJSON_ArrayForEach(it, resps) {
		const cJSON *rr = cJSON_GetObjectItemCaseSensitive(it, "response_range");
		if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(rr, "kvs")) > 0)
			fired_seen = 1;
	}
	if (!fired_seen) {
		struct job *j = job_find(r->name);
		if (j != NULL)
			j->fired_ok = 0;
	}
	log_info("cron %s: fire %" PRId64 " skipped: locked or already run "
	    "by another agent", r->name, r->plan_ms);
	run_free(r);
}

/* A compare of a txn. */
static cJSON *
cmp_new(const char *key, const char *target, const char *result,
    const char *field, const char *value, int b64)
{
	cJSON *c = cJSON_CreateObject();
	char *k = etcd_b64(key), *v = b64 ? etcd_b64(value) : NULL;

	cJSON_AddStringToObject(c, "key", k);
	cJSON_AddStringToObject(c, "target", target);
	cJSON_AddStringToObject(c, "result", result);
	cJSON_AddStringToObject(c, field, v != NULL ? v : value);
	free(k);
	free(v);
	return c;
}

/* A put request of a txn. */
static cJSON *
put_new(const char *key, const char *value, int64_t lease)
{
	cJSON *o = cJSON_CreateObject(), *p = cJSON_AddObjectToObject(o, "request_put");
	char *k = etcd_b64(key), *v = etcd_b64(value), buf[32];

	cJSON_AddStringToObject(p, "key", k);
	cJSON_AddStringToObject(p, "value", v);
	if (lease != 0) {
		snprintf(buf, sizeof(buf), "%" PRId64, lease);
		cJSON_AddStringToObject(p, "lease", buf);
	}
	free(k);
	free(v);
	return o;
}

/* A range request of a txn. */
static cJSON *
range_new(const char *key)
{
	cJSON *o = cJSON_CreateObject(), *p = cJSON_AddObjectToObject(o, "request_range");
	char *k = etcd_b64(key);

	cJSON_AddStringToObject(p, "key", k);
	free(k);
	return o;
}

/* Lease granted: try the lock transaction. */
static void
grant_done(const struct etcd_reply *rep, void *arg)
{
	struct run *r = arg;
	char *lock, *fired, plan[32];
	cJSON *txn, *cmp, *ok, *ko;

	if (!run_alive(r))
		return;
	r->busy = 0;
	if (!rep->ok || (r->lease = etcd_int(rep->json, "ID", 0)) == 0) {
		log_warnx("cron %s: fire %" PRId64 " skipped: no lease: %s", r->name,
		    r->plan_ms, rep->ok ? "answer without ID" : rep->error);
		r->lease = 0;
		run_free(r);
		return;
	}
	lock = xasprintf("%s%s", C.lock_prefix, r->name);
	fired = xasprintf("%s%s", C.fired_prefix, r->name);
	plan_text(r->plan_ms, plan);
	txn = cJSON_CreateObject();
	cmp = cJSON_AddArrayToObject(txn, "compare");
	cJSON_AddItemToArray(cmp, cmp_new(lock, "CREATE", "EQUAL",
	    "create_revision", "0", 0));
	cJSON_AddItemToArray(cmp, cmp_new(fired, "VALUE", "LESS", "value", plan, 1));
	ok = cJSON_AddArrayToObject(txn, "success");
	cJSON_AddItemToArray(ok, put_new(lock, A.cfg.agent_id ? A.cfg.agent_id :
	    "", r->lease));
	cJSON_AddItemToArray(ok, put_new(fired, plan, 0));
	ko = cJSON_AddArrayToObject(txn, "failure");
	cJSON_AddItemToArray(ko, range_new(fired));
	free(lock);
	free(fired);
	r->state = R_LOCK;
	if (etcd_call("/v3/kv/txn", txn, lock_done, r) == 0)
		r->busy = 1;
	else {
		log_warnx("cron %s: fire %" PRId64 " skipped: cannot send the lock",
		    r->name, r->plan_ms);
		run_free(r);
	}
}

/* Step 2 of a fire: a lease for the lock. */
static void
run_grant(struct run *r)
{
	r->state = R_GRANT;
	if (etcd_lease_grant(A.cfg.cron_lock_ttl_sec, grant_done, r) == 0)
		r->busy = 1;
	else {
		log_warnx("cron %s: fire %" PRId64 " skipped: etcd unreachable",
		    r->name, r->plan_ms);
		run_free(r);
	}
}

/* The fired key exists (or could not be made: the lock then fails). */
static void
ensure_done(const struct etcd_reply *rep, void *arg)
{
	struct run *r = arg;
	struct job *j;

	if (!run_alive(r))
		return;
	r->busy = 0;
	if (!rep->ok) {
		log_warnx("cron %s: fire %" PRId64 " skipped: %s", r->name,
		    r->plan_ms, rep->error);
		run_free(r);
		return;
	}
	if ((j = job_find(r->name)) != NULL)
		j->fired_ok = 1;
	run_grant(r);
}

/* Step 1 (once per job): create <prefix>fired/<name> if absent. */
static void
run_prepare(struct run *r)
{
	char *fired = xasprintf("%s%s", C.fired_prefix, r->name), zero[32];
	cJSON *txn = cJSON_CreateObject(), *a;

	plan_text(0, zero);
	a = cJSON_AddArrayToObject(txn, "compare");
	cJSON_AddItemToArray(a, cmp_new(fired, "CREATE", "EQUAL",
	    "create_revision", "0", 0));
	a = cJSON_AddArrayToObject(txn, "success");
	cJSON_AddItemToArray(a, put_new(fired, zero, 0));
	free(fired);
	if (etcd_call("/v3/kv/txn", txn, ensure_done, r) == 0)
		r->busy = 1;
	else {
		log_warnx("cron %s: fire %" PRId64 " skipped: etcd unreachable",
		    r->name, r->plan_ms);
		run_free(r);
	}
}

/* A fire of job j at plan time plan: skip on overlap, else lock and run. */
static void
job_fire(struct job *j, int64_t plan, int64_t now)
{
	struct run *r;

	if ((r = run_find(j->def.name)) != NULL) {
		log_info("cron %s: fire %" PRId64 " skipped: the previous run (%"
		    PRId64 ") is still running", j->def.name, plan, r->plan_ms);
		return;
	}
	if (plan <= state_get(j->def.name)) {
		log_info("cron %s: fire %" PRId64 " skipped: already fired",
		    j->def.name, plan);
		return;
	}
	/* Persisted first: after a crash this fire is never tried again. */
	if (state_set(j->def.name, plan) == -1) {
		log_warnx("cron %s: fire %" PRId64 " skipped: cannot persist it",
		    j->def.name, plan);
		return;
	}
	r = xcalloc(1, sizeof(*r));
	r->name = xstrdup(j->def.name);
	r->command = xstrdup(j->def.command);
	r->plan_ms = plan;
	r->sched_ms = now;
	r->start_ms = now;
	snprintf(r->id, sizeof(r->id), "cron-%s-%" PRId64, r->name, plan);
	timer_init(&r->keep_timer, "cron keep-alive", keep_fn, r);
	r->next = C.runs;
	C.runs = r;
	if (j->fired_ok)
		run_grant(r);
	else
		run_prepare(r);
}

/* ------------------------------------------------------------ schedule */

/* Next plan time of j after t. */
static int64_t
job_next(const struct job *j, int64_t t)
{
	return cronexpr_next(&j->def.cx, t, A.cfg.cron_utc);
}

/* Fire what is due, then sleep until the next plan time (at most 1 s). */
static void
tick_fn(void *arg)
{
	int64_t now = wall_ms(), wait = TICK_MAX_MS;
	struct job *j;

	(void)arg;
	if (C.stopping)
		return;
	for (j = C.jobs; j != NULL; j = j->next) {
		if (j->next_ms > 0 && j->next_ms <= now) {
			job_fire(j, j->next_ms, now);
			/* Fires missed while busy are skipped, as in the note. */
			j->next_ms = job_next(j, now);
		}
		if (j->next_ms > 0 && j->next_ms - now < wait)
			wait = j->next_ms - now;
	}
	timer_set(&C.tick, wait > 0 ? wait : 0);
}

/* Add or change a job from a decoded definition (owned by the table after). */
static void
job_upsert(struct cron_job *def)
{
	struct job *j = job_find(def->name);
	int64_t now = wall_ms(), last = state_get(def->name);

	if (j != NULL) {
		j->seen = 1;
		if (strcmp(j->def.expr, def->expr) == 0 &&
		    strcmp(j->def.command, def->command) == 0) {
			cron_job_free(def);
			return;
		}
		log_info("cron %s: changed (%s)", def->name, def->expr);
		if (strcmp(j->def.expr, def->expr) != 0) {
			cron_job_free(&j->def);
			j->def = *def;
			j->next_ms = job_next(j, now > last ? now : last);
		} else {
			cron_job_free(&j->def);
			j->def = *def;
		}
	} else {
		j = xcalloc(1, sizeof(*j));
		j->def = *def;
		j->seen = 1;
		j->next_ms = job_next(j, now > last ? now : last);
		j->next = C.jobs;
		C.jobs = j;
		log_info("cron %s: added (%s)", def->name, def->expr);
	}
	memset(def, 0, sizeof(*def));
	if (j->next_ms < 0)
		log_warnx("cron %s: '%s' never fires again", j->def.name, j->def.expr);
	timer_set(&C.tick, 0);
}

/* Remove job name (a running fire goes on to its end). */
static void
job_remove(const char *name, const char *why)
{
	struct job **pp, *j;

	for (pp = &C.jobs; (j = *pp) != NULL; pp = &j->next)
		if (strcmp(j->def.name, name) == 0) {
			*pp = j->next;
			log_info("cron %s: removed (%s)", name, why);
			cron_job_free(&j->def);
			free(j);
			return;
		}
}

/* Name of a job key (after the jobs prefix), or NULL. */
static const char *
key_name(const char *key)
{
	size_t n = strlen(C.jobs_prefix);

	return strncmp(key, C.jobs_prefix, n) == 0 ? key + n : NULL;
}

/* Decode one kv of the jobs prefix and apply it. */
static void
job_kv(const cJSON *kv, int deleted)
{
	char *key = etcd_b64_member(kv, "key", NULL), *val;
	const char *name;
	struct cron_job def;
	char err[300];
	size_t len;

	if (key == NULL || (name = key_name(key)) == NULL) {
		free(key);
		return;
	}
	if (deleted) {
		job_remove(name, "key deleted");
		free(key);
		return;
	}
	val = etcd_b64_member(kv, "value", &len);
	if (val == NULL) {
		log_warnx("cron: job key %.200s refused: value is not base64", key);
		job_remove(name, "bad value");
	} else if (cron_job_parse(name, val, len, &def, err, sizeof(err)) == -1) {
		char shown[256];
		size_t i;

		/* The key is outside data: print it without control bytes. */
		snprintf(shown, sizeof(shown), "%s", key);
		for (i = 0; shown[i] != '\0'; i++)
			if ((unsigned char)shown[i] < 0x20 || shown[i] == 0x7f)
				shown[i] = '?';
		log_warnx("cron: job key %s refused: %s", shown, err);
		job_remove(name, "refused definition");
	} else {
		job_upsert(&def);
	}
	free(val);
	free(key);
}

/* ------------------------------------------------------------ list + watch */

/*
 * The jobs: a range read of <prefix>jobs/, then a watch from the next
 * revision. A broken watch starts again from the revision after the last
 * one seen (after a backoff when etcd failed), so no change is missed; a
 * compacted revision (etcd no longer has that history) or a watch etcd
 * cancelled leads to a new list, which replaces the table. Fires follow the
 * plan times of the table, never events, so a list cannot double or drop
 * one: a job whose expression did not change keeps its next plan time.
 */

/* The next backoff delay, ms. */
static int64_t
backoff_next(void)
{
	C.backoff = C.backoff == 0 ? BACKOFF_MIN_MS : C.backoff * 2;
	if (C.backoff > BACKOFF_MAX_MS)
		C.backoff = BACKOFF_MAX_MS;
	return C.backoff;
}

/* Retry the list after a growing delay. */
static void
list_retry(const char *why)
{
	int64_t d = backoff_next();

	log_warnx("cron: %s; listing the jobs again in %" PRId64 " ms (keeping "
	    "the %s known jobs)", why, d, C.jobs ? "last" : "no");
	timer_set(&C.list_timer, d);
}

/* One watch message of the jobs prefix. */
static void
watch_msg(const cJSON *res, void *arg)
{
	const cJSON *ev;
	int64_t compact = etcd_int(res, "compact_revision", 0);

	(void)arg;
	if (compact > 0 || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(res,
	    "canceled"))) {
		/* The loop, not this stream callback, cancels the stream. */
		log_warnx("cron: watch from revision %" PRId64 " %s; listing again",
		    C.rev + 1, compact > 0 ? "was compacted" : "cancelled by etcd");
		C.relist = 1;
		timer_set(&C.list_timer, 0);
		return;
	}
	if (C.relist)
		return;
	cJSON_ArrayForEach(ev, cJSON_GetObjectItemCaseSensitive(res, "events")) {
		const cJSON *t = cJSON_GetObjectItemCaseSensitive(ev, "type");
		const cJSON *kv = cJSON_GetObjectItemCaseSensitive(ev, "kv");
		int del = cJSON_IsString(t) && strcmp(t->valuestring, "DELETE") == 0;
		int64_t mr = etcd_int(kv, "mod_revision", 0);

		job_kv(kv, del);
		if (mr > C.rev)
			C.rev = mr;
	}
	C.backoff = 0;
}

static void watch_done(const struct etcd_reply *r, void *arg);

/* (Re)start the jobs watch after the last revision seen. */
static void
watch_start(void *arg)
{
	(void)arg;
	if (C.stopping || C.watch_id > 0)
		return;
	if (C.relist || C.rev == 0) {
		list_start(NULL);
		return;
	}
	C.watch_id = etcd_watch(C.jobs_prefix, C.rev + 1, WATCH_MAX_MS, watch_msg,
	    watch_done, NULL);
	if (C.watch_id == -1) {
		C.watch_id = 0;
		timer_set(&C.watch_timer, backoff_next());
		return;
	}
	if (C.killer_id == 0)
		killer_watch_start();
}

/* The jobs watch ended: watch again from where it stopped, or list again. */
static void
watch_done(const struct etcd_reply *r, void *arg)
{
	(void)arg;
	C.watch_id = 0;
	if (C.stopping)
		return;
	if (C.relist) {
		timer_set(&C.list_timer, 0);
		return;
	}
	if (strstr(r->error, "time bound") != NULL) {
		log_debug("cron: %s; watching again", r->error);
		timer_set(&C.watch_timer, 0);
		return;
	}
	log_warnx("cron: %s; watching again in %" PRId64 " ms (keeping the last "
	    "known jobs)", r->error, backoff_next());
	timer_set(&C.watch_timer, C.backoff);
}

/* Ask for the next page of the list (after the key C.list_after). */
static int
list_page(void)
{
	if (etcd_range_page(C.jobs_prefix, C.list_after, C.list_after_len,
	    C.list_rev, list_done, NULL) == -1)
		return -1;
	C.listing = 1;
	return 0;
}

/*
 * A page of the list: apply its jobs; after the last page drop the jobs no
 * longer listed and watch from the next revision. Pages are read at the
 * revision of the first, so the list is one consistent snapshot; they are
 * small (ETCD_PAGE_KEYS keys) so that large values cannot make an answer
 * too big to read.
 */
static void
list_done(const struct etcd_reply *r, void *arg)
{
	const cJSON *kv, *kvs;
	struct job *j, *next;
	char *last = NULL;
	size_t last_len = 0;

	(void)arg;
	C.listing = 0;
	if (C.stopping)
		return;
	if (!r->ok) {
		list_retry(r->error);
		return;
	}
	if (C.list_rev == 0) {
		C.list_rev = etcd_int(cJSON_GetObjectItemCaseSensitive(r->json,
		    "header"), "revision", 0);
		C.list_keys = 0;
		for (j = C.jobs; j != NULL; j = j->next)
			j->seen = 0;
	}
	kvs = cJSON_GetObjectItemCaseSensitive(r->json, "kvs");
	cJSON_ArrayForEach(kv, kvs) {
		job_kv(kv, 0);
		C.list_keys++;
		free(last);
		last = etcd_b64_member(kv, "key", &last_len);
	}
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r->json, "more")) &&
	    last != NULL && last_len > 0) {
		free(C.list_after);
		C.list_after = last;
		C.list_after_len = last_len;
		if (list_page() == -1)
			list_retry("cannot read the next page of the list");
		return;
	}
	free(last);
	for (j = C.jobs; j != NULL; j = next) {
		next = j->next;
		if (!j->seen)
			job_remove(j->def.name, "no longer in etcd");
	}
	C.rev = C.list_rev;
	C.relist = 0;
	log_info("cron: %d job key(s) at revision %" PRId64 " from %s",
	    C.list_keys, C.rev, etcd_endpoint());
	watch_start(NULL);
}

/* List every job (at start and after a compaction). */
static void
list_start(void *arg)
{
	(void)arg;
	if (C.stopping || C.listing)
		return;
	if (C.watch_id > 0) {
		etcd_watch_cancel(C.watch_id);
		C.watch_id = 0;
	}
	timer_cancel(&C.watch_timer);
	C.list_rev = 0;
	free(C.list_after);
	C.list_after = NULL;
	C.list_after_len = 0;
	if (list_page() == -1)
		list_retry("cannot start the list");
}

/* One message of the killer watch: a PUT kills the local run of that name. */
static void
killer_msg(const cJSON *res, void *arg)
{
	const cJSON *ev;
	size_t n = strlen(C.killer_prefix);

	(void)arg;
	if (etcd_int(res, "compact_revision", 0) > 0 ||
	    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(res, "canceled"))) {
		/* Kills are live orders: start again from now. */
		C.killer_rev = 0;
		C.killer_restart = 1;
		timer_set(&C.killer_timer, 0);
		return;
	}
	cJSON_ArrayForEach(ev, cJSON_GetObjectItemCaseSensitive(res, "events")) {
		const cJSON *t = cJSON_GetObjectItemCaseSensitive(ev, "type");
		const cJSON *kv = cJSON_GetObjectItemCaseSensitive(ev, "kv");
		char *key;
		struct run *r;
		int64_t mr = etcd_int(kv, "mod_revision", 0);

		if (mr > C.killer_rev)
			C.killer_rev = mr;
		if (cJSON_IsString(t) && strcmp(t->valuestring, "DELETE") == 0)
			continue;
		key = etcd_b64_member(kv, "key", NULL);
		if (key != NULL && strncmp(key, C.killer_prefix, n) == 0 &&
		    (r = run_find(key + n)) != NULL && r->state == R_RUN) {
			r->killed = 1;
			run_kill(r, "killer key");
		}
		free(key);
	}
}

/* The killer watch ended: start it again (after a pause on errors). */
static void
killer_done(const struct etcd_reply *r, void *arg)
{
	(void)arg;
	C.killer_id = 0;
	if (C.stopping)
		return;
	log_debug("cron: killer watch: %s", r->error);
	timer_set(&C.killer_timer, strstr(r->error, "time bound") != NULL ?
	    0 : BACKOFF_MIN_MS * 4);
}

/* Timer: restart the killer watch. */
static void
killer_timer_fn(void *arg)
{
	(void)arg;
	if (C.killer_restart && C.killer_id > 0) {
		etcd_watch_cancel(C.killer_id);
		C.killer_id = 0;
	}
	C.killer_restart = 0;
	if (C.killer_id == 0 && !C.stopping)
		killer_watch_start();
}

/* Watch <prefix>killer/ from the last revision seen (else from now). */
static void
killer_watch_start(void)
{
	int64_t from = C.killer_rev > 0 ? C.killer_rev + 1 : 0;

	C.killer_id = etcd_watch(C.killer_prefix, from, WATCH_MAX_MS, killer_msg,
	    killer_done, NULL);
	if (C.killer_id == -1) {
		C.killer_id = 0;
		timer_set(&C.killer_timer, BACKOFF_MIN_MS * 4);
	}
}

/* ------------------------------------------------------------ start/stop */

/* A result the previous agent did not log: log it now. */
static void
recovered(struct exec_result *res, void *arg)
{
	char name[CRON_NAME_MAX + 1] = "";
	const char *p = res->id + 5, *dash = strrchr(res->id, '-');
	long long plan = 0;
	struct job *j;

	(void)arg;
	if (str_starts(res->id, "cron-") && dash != NULL && dash > p &&
	    (size_t)(dash - p) <= CRON_NAME_MAX) {
		memcpy(name, p, (size_t)(dash - p));
		name[dash - p] = '\0';
		(void)str_to_ll(dash + 1, &plan);
	}
	j = job_find(name);
	log_info("cron %s: logging the result left by the previous agent", res->id);
	log_append(log_record(name, j != NULL ? j->def.command : "",
	    res->error ? res->error : "", res->output ? res->output : "",
	    plan, plan, res->start_ms, res->end_ms), res->id);
	exec_result_free(res);
}

/* Remove old logged task dirs now and then. */
static void
prune_fn(void *arg)
{
	int n;

	(void)arg;
	if ((n = exec_prune(C.ex, PRUNE_AGE_SEC)) > 0)
		log_info("cron: pruned %d old task dir(s)", n);
	timer_set(&C.prune_timer, PRUNE_PERIOD_MS);
}

/*
 * Add the Redis-stream sink when the queue source's Redis is configured;
 * describe the active sinks in text (len bytes).
 */
static void
sink_redis_add(char *text, size_t len)
{
	struct redis_url u;
	char err[300];

	snprintf(text, len, "jsonl " LOG_FILE);
	if (A.cfg.queue_redis == NULL || str_blank(A.cfg.queue_redis))
		return;
	if (redis_url_parse(A.cfg.queue_redis, &u, err, sizeof(err)) == -1) {
		log_warnx("cron log: no redis stream: devops.queue.redis: %s", err);
		return;
	}
	log_add_secret(u.password);
	C.sinks[C.nsinks++] = cron_sink_redis_new(&u, A.cfg.cron_log_stream,
	    A.cfg.cron_log_stream_maxlen, CRON_STREAM_KEEP_MAX,
	    CRON_STREAM_KEEP_BYTES);
	snprintf(text, len, "jsonl " LOG_FILE " and redis stream %s on %s:%d "
	    "db %d (about %lld entries kept)", A.cfg.cron_log_stream, u.host,
	    u.port, u.db, A.cfg.cron_log_stream_maxlen);
	redis_url_clear(&u);
}

/* Start the cron source (see cron.h). */
void
cron_start(void)
{
	struct exec_config ec;
	struct etcd_config cc;
	char err[512], *ws, *logpath, sinks_text[600];
	size_t pl;

	if (A.cfg.cron_etcd == NULL || str_blank(A.cfg.cron_etcd)) {
		log_info("cron: off (devops.cron.etcd is empty)");
		return;
	}
	memset(&cc, 0, sizeof(cc));
	cc.endpoints = A.cfg.cron_etcd;
	cc.ca_file = A.cfg.cron_tls_ca;
	cc.cert_file = A.cfg.cron_tls_cert;
	cc.key_file = A.cfg.cron_tls_key;
	cc.timeout_ms = 5000;
	if (etcd_init(&cc, err, sizeof(err)) == -1) {
		log_warnx("cron: off: devops.cron.etcd: %s", err);
		return;
	}
	ws = A.cfg.cron_workspace[0] == '/' ? xstrdup(A.cfg.cron_workspace) :
	    xasprintf("%s/%s", A.workdir, A.cfg.cron_workspace);
	memset(&ec, 0, sizeof(ec));
	ec.workspace = ws;
	ec.kill_grace_ms = KILL_GRACE_MS;
	C.ex = exec_new(&ec, err, sizeof(err));
	free(ws);
	if (C.ex == NULL) {
		log_warnx("cron: off: devops.cron.workspace: %s", err);
		etcd_shutdown();
		return;
	}
	pl = strlen(A.cfg.cron_prefix);
	C.prefix = pl > 0 && A.cfg.cron_prefix[pl - 1] == '/' ?
	    xstrdup(A.cfg.cron_prefix) : xasprintf("%s/", A.cfg.cron_prefix);
	C.jobs_prefix = xasprintf("%sjobs/", C.prefix);
	C.lock_prefix = xasprintf("%slock/", C.prefix);
	C.killer_prefix = xasprintf("%skiller/", C.prefix);
	C.fired_prefix = xasprintf("%sfired/", C.prefix);
	C.state_path = xasprintf("%s/" STATE_FILE, exec_workspace(C.ex));
	state_load();
	(void)fs_mkdir_p("logs", 0755);
	logpath = xasprintf("%s/" LOG_FILE, A.workdir);
	C.sinks[C.nsinks++] = cron_sink_jsonl_new(logpath,
	    A.cfg.cron_log_file_max, LOG_KEEP);
	free(logpath);
	sink_redis_add(sinks_text, sizeof(sinks_text));
	timer_init(&C.list_timer, "cron list", list_start, NULL);
	timer_init(&C.watch_timer, "cron watch", watch_start, NULL);
	timer_init(&C.killer_timer, "cron killer", killer_timer_fn, NULL);
	timer_init(&C.tick, "cron tick", tick_fn, NULL);
	timer_init(&C.commit_timer, "cron log commit", log_commit, NULL);
	timer_init(&C.prune_timer, "cron prune", prune_fn, NULL);
	C.on = 1;
	(void)exec_recover(C.ex, TAG, recovered, NULL);
	timer_set(&C.prune_timer, PRUNE_PERIOD_MS);
	log_info("cron: on: etcd %s, jobs under %s, lock TTL %d s, %s time; "
	    "job log to %s", A.cfg.cron_etcd, C.jobs_prefix,
	    A.cfg.cron_lock_ttl_sec, A.cfg.cron_utc ? "UTC" : "local", sinks_text);
	list_start(NULL);
	timer_set(&C.tick, 0);
}

/* Stop the cron source (see cron.h). */
void
cron_stop(int64_t budget_ms)
{
	struct job *j;
	int64_t end;
	int s;

	if (!C.on)
		return;
	C.stopping = 1;
	timer_cancel(&C.tick);
	timer_cancel(&C.list_timer);
	timer_cancel(&C.watch_timer);
	timer_cancel(&C.killer_timer);
	timer_cancel(&C.prune_timer);
	if (C.watch_id > 0)
		etcd_watch_cancel(C.watch_id);
	if (C.killer_id > 0)
		etcd_watch_cancel(C.killer_id);
	C.watch_id = C.killer_id = 0;
	/* Running tasks end as "stopped" and are logged by task_done. */
	exec_shutdown(C.ex, budget_ms);
	/* Fires still locking: give them up (their leases expire). */
	while (C.runs != NULL)
		run_free(C.runs);
	/* Let the revokes leave (bounded). */
	end = mono_ms() + 1000;
	while (http_in_flight() > 0 && mono_ms() < end)
		ev_run_once(100);
	log_commit(NULL);
	for (s = 0; s < C.nsinks; s++)
		C.sinks[s]->free(C.sinks[s]);
	C.nsinks = 0;
	if (C.nbatch > 0)
		log_warnx("cron log: %zu record(s) not written at exit (logged "
		    "again at the next start)", C.nbatch);
	while (C.nbatch > 0)
		free(C.batch[--C.nbatch].text);
	free(C.batch);
	C.batch = NULL;
	while ((j = C.jobs) != NULL) {
		C.jobs = j->next;
		cron_job_free(&j->def);
		free(j);
	}
	exec_free(C.ex);
	C.ex = NULL;
	cJSON_Delete(C.state);
	free(C.state_path);
	free(C.prefix);
	free(C.jobs_prefix);
	free(C.lock_prefix);
	free(C.killer_prefix);
	free(C.fired_prefix);
	free(C.list_after);
	etcd_shutdown();
	C.on = 0;
}
