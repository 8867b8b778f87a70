/*
 * pipeline.c - the pipeline part of the poll (agent-behaviour §8; protocol
 * §7.9, §7.10) on the safe executor (common/executor.h, docs/pipeline.md).
 *
 * poll.c fetches an item (the ask's pipeline part, or GET agents/pipelines
 * every 30 s in legacy mode, the first after 10 s) while no task runs
 * (pipeline_wanted). A COMMAND item gets PUT EXECUTING, runs on the
 * executor, then PUT SUCCESS, FAILURE or TIMEOUT.
 * Unlike GoAgent (W16): a blank command or a wrong type is a FAILURE and the
 * loop lives on; scripts have a timeout, a bounded output and run as
 * devops.slave.user; results are persisted and every PUT goes through an
 * ordered outbox that retries until the server answers, so a restarted
 * agent reports a finished task exactly once and never runs it again.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "ev.h"
#include "executor.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "pipeline.h"
#include "tree.h"
#include "util.h"

#define TAG			"pipeline"
#define PUT_MAX_REJECTS		5	/* well-formed refusals before giving up */

/* One status update waiting in the outbox (protocol §7.10). */
struct put {
	char		*seq_id;
	const char	*status;	/* EXECUTING, SUCCESS, FAILURE, TIMEOUT */
	char		*response;
	int		 persisted;	/* the executor holds its result: mark reported */
	int		 rejects;
	struct put	*next;
};

static struct executor *ex;
static struct timer put_timer;
static struct put *outbox;
static int put_busy, stopping, start_failed;
static int64_t put_backoff;

/*
 * The final results the server acknowledged lately, and when (mono ms): an
 * answer to a request sent before that still serves the item pending, and
 * must not make the agent report it again.
 */
#define ACKED_MAX	64
static struct acked {
	char		*seq_id;
	int64_t		 at;
} acked[ACKED_MAX];
static unsigned int acked_next;

/* ------------------------------------------------------------ outbox */

/* Send the head of the outbox now unless a PUT is in flight. */
static void
put_kick(void)
{
	if (!put_busy && outbox != NULL && A.started)
		timer_set(&put_timer, 0);
}

/* Startup acknowledged: the queued updates may go (agent.h). */
void
pipeline_kick_reports(void)
{
	if (ex != NULL)
		put_kick();
}

/*
 * Queue a status update; updates leave in the order they were queued. A
 * final result already waiting for the same task is not queued twice: after
 * a restart the recovered result and the server serving the still-pending
 * item again would otherwise both report it.
 */
static void
put_queue(const char *seq_id, const char *status, const char *response,
    int persisted)
{
	struct put *p, **pp;

	for (p = outbox; persisted && p != NULL; p = p->next)
		if (p->persisted && strcmp(p->seq_id, seq_id) == 0) {
			log_debug("pipeline %s: result already queued", seq_id);
			return;
		}
	p = xcalloc(1, sizeof(*p));
	p->seq_id = xstrdup(seq_id);
	p->status = status;
	p->response = xstrdup(response ? response : "");
	p->persisted = persisted;
	for (pp = &outbox; *pp != NULL; pp = &(*pp)->next)
		;
	*pp = p;
	put_kick();
}

/* Remove the head of the outbox. */
static void
put_pop(void)
{
	struct put *p = outbox;

	outbox = p->next;
	free(p->seq_id);
	free(p->response);
	free(p);
}

/* Remember that seq_id's final result was acknowledged now (ring). */
static void
acked_note(const char *seq_id)
{
	struct acked *a = &acked[acked_next++ % ACKED_MAX];

	free(a->seq_id);
	a->seq_id = xstrdup(seq_id);
	a->at = mono_ms();
}

/* Mono ms at which seq_id's final result was acknowledged lately, or -1. */
static int64_t
acked_at(const char *seq_id)
{
	unsigned int i;

	for (i = 0; i < ACKED_MAX; i++)
		if (acked[i].seq_id != NULL && strcmp(acked[i].seq_id, seq_id) == 0)
			return acked[i].at;
	return -1;
}

/* The head was delivered (or given up): a final result is marked reported. */
static void
put_delivered(const struct put *p)
{
	if (p->persisted)
		acked_note(p->seq_id);
	if (p->persisted && exec_mark_reported(ex, p->seq_id) == -1) {
		log_warn("pipeline %s: cannot mark the result reported; it may be "
		    "reported again after a restart", p->seq_id);
		agent_check_io_error(errno, "pipeline result");
	}
}

/* 1 when a later update for the same task waits behind the head. */
static int
put_superseded(const struct put *head)
{
	const struct put *p;

	for (p = head->next; p != NULL; p = p->next)
		if (strcmp(p->seq_id, head->seq_id) == 0)
			return 1;
	return 0;
}

/* PUT answered: pop on success; otherwise retry with backoff. */
static void
put_done(struct http_result *r, void *arg)
{
	struct put *p = outbox;
	struct envelope env;
	char err[300];
	int64_t delay;
	int rejected = 0;

	(void)arg;
	put_busy = 0;
	if (p == NULL)
		return;
	if (r->ok && envelope_parse(r->body, r->len, &env, err, sizeof(err)) == 0) {
		if (env.status == 0 && r->code >= 200 && r->code < 300) {
			envelope_free(&env);
			log_info("pipeline %s: %s reported", p->seq_id, p->status);
			put_delivered(p);
			put_pop();
			put_backoff = 0;
			put_kick();
			return;
		}
		snprintf(err, sizeof(err), "HTTP %ld, status %lld: %s", r->code,
		    env.status, env.message ? env.message : "(no message)");
		envelope_free(&env);
		rejected = 1;
	} else if (!r->ok) {
		snprintf(err, sizeof(err), "%s", r->error);
	}
	if (rejected && ++p->rejects >= PUT_MAX_REJECTS) {
		log_error("pipeline %s: the server refused %s %d times (%s); giving "
		    "up on it", p->seq_id, p->status, p->rejects, err);
		put_delivered(p);
		put_pop();
		put_kick();
		return;
	}
	if (strcmp(p->status, "EXECUTING") == 0 && put_superseded(p)) {
		/* The outcome is known: it matters more than EXECUTING. */
		log_warnx("pipeline %s: EXECUTING not delivered (%s); sending the "
		    "result instead", p->seq_id, err);
		put_pop();
		put_kick();
		return;
	}
	/* Exponential backoff 1 s .. 60 s with +-20 % jitter. */
	put_backoff = put_backoff ? put_backoff * 2 : 1000;
	if (put_backoff > 60000)
		put_backoff = 60000;
	if (A.fast && put_backoff > 1000)
		put_backoff = 1000;
	delay = put_backoff * (80 + random() % 41) / 100;
	log_warnx("pipeline %s: %s not reported (%s); retry in %lld ms",
	    p->seq_id, p->status, err, (long long)delay);
	timer_set(&put_timer, delay);
}

/* Timer: PUT the head of the outbox. */
static void
put_send(void *arg)
{
	struct put *p = outbox;
	cJSON *o;
	char *body;

	(void)arg;
	if (p == NULL || put_busy || !A.started)
		return;
	o = cJSON_CreateObject();
	json_add_str(o, "seqId", p->seq_id);
	json_add_str(o, "status", p->status);
	json_add_str(o, "response", p->response);
	body = json_print(o);
	cJSON_Delete(o);
	if (http_json("PUT", EP_PIPELINES, body, put_done, NULL) == -1)
		timer_set(&put_timer, 1000);
	else
		put_busy = 1;
	free(body);
}

/* ------------------------------------------------------------ results */

/* The PUT of a finished task: §7.10's status and response text. */
static void
report_result(const struct exec_result *res)
{
	char *text;

	if (res->status == EXEC_SUCCESS) {
		put_queue(res->id, "SUCCESS", res->output, 1);
		return;
	}
	text = xasprintf("run pipeline failed: %s\noutput: %s", res->error, res->output);
	put_queue(res->id, res->status == EXEC_TIMEOUT ? "TIMEOUT" : "FAILURE", text, 1);
	free(text);
}

/* Executor callback: a task is over (result.json says done). */
static void
task_done(struct exec_result *res, void *arg)
{
	(void)arg;
	log_info("pipeline %s: %s (%s), %lld output bytes", res->id,
	    exec_status_name(res->status), *res->error ? res->error : "exit 0",
	    res->output_bytes);
	report_result(res);
	exec_result_free(res);
	if (!stopping)
		poll_kick();
}

/* Recovery callback: a result from before the restart, not reported yet. */
static void
task_recovered(struct exec_result *res, void *arg)
{
	(void)arg;
	log_info("pipeline %s: reporting the %s result of a task that ended "
	    "before the restart", res->id, exec_status_name(res->status));
	report_result(res);
	exec_result_free(res);
}

/* FAILURE for an item that cannot run (W16: reported, and the loop goes on). */
static void
report_refusal(const char *seq_id, const char *prefix, const char *why)
{
	char *text = xasprintf("%s: %s", prefix, why);

	log_warnx("pipeline %s: %s", seq_id, text);
	put_queue(seq_id, "FAILURE", text, 0);
	free(text);
}

/* ------------------------------------------------------------ the loop */

/* The seqId of an item as a string: new string, or NULL when unusable. */
static char *
item_seq_id(const cJSON *data, int *was_number)
{
	const cJSON *it = json_get(data, "seqId");

	*was_number = 0;
	if (cJSON_IsString(it) && it->valuestring[0] != '\0')
		return xstrdup(it->valuestring);
	/*
	 * A number is a type error, but one that can still be answered. The
	 * range check keeps the cast to long long defined (fuzz_pipeline).
	 */
	if (cJSON_IsNumber(it) && isfinite(it->valuedouble) &&
	    it->valuedouble >= -9.2e18 && it->valuedouble <= 9.2e18 &&
	    it->valuedouble == (double)(long long)it->valuedouble) {
		*was_number = 1;
		return xasprintf("%lld", (long long)it->valuedouble);
	}
	return NULL;
}

/* Decode one item without side effects (pipeline.h). */
enum pipeline_verdict
pipeline_item_parse(const cJSON *data, struct pipeline_item *it)
{
	memset(it, 0, sizeof(*it));
	if (json_get_str(data, "type", &it->type) == -1 || it->type == NULL ||
	    strcmp(it->type, "COMMAND") != 0)
		return PI_SKIP_TYPE;
	if ((it->seq_id = item_seq_id(data, &it->seq_was_number)) == NULL)
		return PI_SKIP_SEQ;
	if (json_get_str(data, "command", &it->command) == -1)
		it->refusal = "command is not a string";
	else if (str_blank(it->command))
		it->refusal = "the command is blank";
	else if (!exec_id_valid(it->seq_id))
		it->refusal = "seqId is not a safe task name ([A-Za-z0-9._-], "
		    "at most 128 characters)";
	return it->refusal != NULL ? PI_REFUSE : PI_RUN;
}

/* Free a decoded item. */
void
pipeline_item_free(struct pipeline_item *it)
{
	free(it->type);
	free(it->seq_id);
	free(it->command);
	memset(it, 0, sizeof(*it));
}

/* Start a valid COMMAND on the executor; 1 when it runs. */
static int
item_start(const char *seq_id, const char *command)
{
	char *name = xasprintf("devops_pipeline_%s_COMMAND.sh", seq_id);
	char *env[] = { "DEVOPS_AGENT_TEST_FAST", NULL };	/* unset: agent knob */
	struct exec_request req;
	struct exec_result *res = NULL;
	char err[1024];
	enum exec_error rc;

	memset(&req, 0, sizeof(req));
	req.id = seq_id;
	req.tag = TAG;
	req.script = command;
	req.script_name = name;
	req.env = env;
	req.user = A.cfg.slave_user;
	/* Clamped: a huge value must not overflow into "no timeout". */
	req.timeout_ms = A.cfg.pipeline_timeout_sec > INT64_MAX / 1000 ?
	    INT64_MAX / 1000 * 1000 : A.cfg.pipeline_timeout_sec * 1000;
	rc = exec_start(ex, &req, task_done, NULL, err, sizeof(err));
	free(name);
	switch (rc) {
	case EXEC_OK:
		log_info("pipeline %s: running (%zu byte command, timeout %lld s)",
		    seq_id, strlen(command), A.cfg.pipeline_timeout_sec);
		return 1;
	case EXEC_E_EXISTS:
		if (exec_load(ex, seq_id, &res) == 1) {
			report_result(res);
			exec_result_free(res);
		}
		return 0;
	case EXEC_E_PREPARE:
		agent_check_io_error(errno, "pipeline task files");
		report_refusal(seq_id, "write pipeline script file failed", err);
		return 0;
	default:
		report_refusal(seq_id, "run pipeline failed", err);
		return 0;
	}
}

/* Handle one pending item (§8 steps 2-8), served by a request sent at
 * sent_ms (mono). 1 when a task started. */
static int
item_handle(const cJSON *data, int64_t sent_ms)
{
	struct pipeline_item pi;
	enum pipeline_verdict v = pipeline_item_parse(data, &pi);
	const char *seq_id = pi.seq_id;
	struct exec_result *res = NULL;
	int started = 0;

	if (v == PI_SKIP_TYPE) {
		/* FILE and others: warning only; the item stays pending (§7.9). */
		log_warnx("pipeline: item of type %s is not supported (only "
		    "COMMAND); skipped", pi.type ? pi.type : "(none or not a string)");
		goto out;
	}
	if (v == PI_SKIP_SEQ) {
		log_error("pipeline: COMMAND item without a usable seqId; it "
		    "cannot be answered and is skipped");
		goto out;
	}
	if (pi.seq_was_number)
		log_warnx("pipeline: seqId %s is a number, not a string; "
		    "answering it as \"%s\"", seq_id, seq_id);
	if (exec_is_running(ex, seq_id))
		goto out;
	/* Served again after it ran: report the stored result, never re-run. */
	if (exec_id_valid(seq_id) && exec_load(ex, seq_id, &res) == 1) {
		if (res->reported && acked_at(seq_id) >= sent_ms) {
			/* The request crossed our report: the server has it. */
			log_info("pipeline %s: served by a request sent before its "
			    "result was acknowledged; not reported again", seq_id);
			exec_result_free(res);
			goto out;
		}
		log_warnx("pipeline %s: ran already (%s); reporting its result "
		    "again instead of running it twice", seq_id,
		    exec_status_name(res->status));
		report_result(res);
		exec_result_free(res);
		goto out;
	}
	put_queue(seq_id, "EXECUTING", "Executing", 0);
	if (v == PI_REFUSE)
		report_refusal(seq_id, "run pipeline failed", pi.refusal);
	else
		started = item_start(seq_id, pi.command);
out:
	pipeline_item_free(&pi);
	return started;
}

/* 1 when a pipeline item may be taken now (agent.h). */
int
pipeline_wanted(void)
{
	if (!A.cfg.pipeline_enable || stopping || A.mode != MODE_RUN)
		return 0;
	if (ex == NULL)
		pipeline_start();
	return ex != NULL && exec_running(ex) == 0;
}

/* A pending pipeline item arrived (agent.h). */
void
pipeline_handle(const cJSON *data, int64_t sent_ms)
{
	if (ex == NULL || stopping) {
		log_warnx("pipeline: item received while the pipeline executor is "
		    "off; ignored (the server serves it again)");
		return;
	}
	if (!cJSON_IsObject(data)) {
		log_warnx("pipeline: fetch: data is not an object; skipped");
		return;
	}
	(void)item_handle(data, sent_ms);
}

/* Open the executor and recover its results (agent.h); idempotent. */
void
pipeline_start(void)
{
	struct exec_config c;
	char err[512];
	int n;

	if (ex != NULL || start_failed)
		return;
	if (!A.cfg.pipeline_enable) {
		log_info("pipeline executor off (devops.pipeline.enable=false)");
		return;
	}
	memset(&c, 0, sizeof(c));
	c.workspace = str_blank(A.cfg.pipeline_workspace) ? "pipeline_tasks" :
	    A.cfg.pipeline_workspace;
	c.allowlist = A.cfg.pipeline_allowlist;
	c.tree = tree_exec_hooks();	/* escaped processes: cgroup */
	c.kill_grace_ms = agent_period(P_KILL_GRACE);
	if ((ex = exec_new(&c, err, sizeof(err))) == NULL) {
		log_error("pipeline loop off: %s", err);
		start_failed = 1;
		return;
	}
	timer_init(&put_timer, "pipeline-put", put_send, NULL);
	n = exec_recover(ex, TAG, task_recovered, NULL);
	log_info("pipeline executor on: workspace %s, timeout %lld s, %s%s; %d "
	    "result(s) from before the restart to report", exec_workspace(ex),
	    A.cfg.pipeline_timeout_sec, c.allowlist && *c.allowlist ?
	    "scripts must be in the allow-list " : "no allow-list",
	    c.allowlist && *c.allowlist ? c.allowlist : "", n);
}

/* Agent exit: stop tasks, one more try at the outbox. */
void
pipeline_stop(int64_t budget_ms)
{
	int64_t end = mono_ms() + budget_ms;

	if (ex == NULL)
		return;
	stopping = 1;
	if (exec_running(ex) > 0) {
		log_info("pipeline: stopping %d running task(s)", exec_running(ex));
		exec_shutdown(ex, budget_ms / 2);
	}
	/* One more try at the outbox; what is left is reported at the next start. */
	put_kick();
	while ((outbox != NULL || put_busy) && mono_ms() < end)
		ev_run_once(50);
}

/* Old reported task dirs go (called by the cleanup loop). */
int
pipeline_prune(long long max_age_sec)
{
	return ex != NULL ? exec_prune(ex, max_age_sec) : 0;
}
