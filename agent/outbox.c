/*
 * outbox.c - finish reports (POST workerBuildFinish) until the server
 * acknowledges them (docs/durability.md).
 *
 * A finished build stays in the table and in its journal until its report is
 * answered with status 0; failures are retried with backoff and jitter. No
 * report goes out before the startup call was acknowledged, nor while the
 * build's leftover processes are still being ended.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "build.h"
#include "fsutil.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "ops.h"
#include "util.h"

#define UNINSTALL_REPORT_TRIES 5	/* finish reports of a deleted agent */
#define REFUSED_REPORT_TRIES	10	/* refusals in a row before a dead letter */
#define DEAD_LETTER_DIR		"runtime/deadletter"

/* The workerBuildFinish body (build.h). */
char *
build_finish_json(const struct build *b)
{
	cJSON *o = build_info_obj(b->info), *e, *dbi;
	char *s;

	/* The registry credential goes back to no one (docs/docker.md). */
	dbi = cJSON_GetObjectItemCaseSensitive(o, "dockerBuildInfo");
	if (cJSON_IsObject(dbi))
		cJSON_DeleteItemFromObjectCaseSensitive(dbi, "credential");

	cJSON_AddBoolToObject(o, "success", b->success);
	json_add_str(o, "message", b->message ? b->message : "");
	if (b->success || b->error_code == 0) {
		cJSON_AddNullToObject(o, "error");
	} else {
		e = cJSON_AddObjectToObject(o, "error");
		json_add_str(e, "errorType", "USER");
		json_add_str(e, "errorMessage", b->message ? b->message : "");
		cJSON_AddNumberToObject(e, "errorCode", b->error_code);
	}
	s = json_print(o);
	cJSON_Delete(o);
	return s;
}

/* The report of b is acknowledged or abandoned: forget the build. */
static void
outbox_drop(struct build *b)
{
	journal_remove(b);
	build_free(b);
	ops_dirty();
	agent_maybe_finish();
}

/*
 * 1 when an answer is a refusal that a retry will not change: an HTTP 4xx
 * other than 408 (timeout) and 429 (too many requests), or a well-formed
 * envelope with a status other than 0. Transport errors, 5xx and bodies
 * that are not an envelope (a proxy's error page) are worth retrying.
 */
static int
report_refused(const struct http_result *r, int envelope_ok, long long status)
{
	if (!r->ok)
		return 0;
	if (r->code >= 400 && r->code < 500 && r->code != 408 && r->code != 429)
		return 1;
	return r->code < 500 && envelope_ok && status != 0;
}

/*
 * Set the report of b aside as runtime/deadletter/<journal name> (the
 * journal entry with the reason added) and forget the build, so that a
 * server that refuses it forever cannot hold the agent: drain, uninstall and
 * the upgrade check go on (docs/durability.md).
 */
static void
outbox_dead_letter(struct build *b, const char *why)
{
	const char *base = strrchr(b->journal, '/');
	char *path, *text = NULL;
	cJSON *j;

	(void)fs_mkdir_p(DEAD_LETTER_DIR, 0700);
	path = xasprintf(DEAD_LETTER_DIR "/%s", base != NULL ? base + 1 : b->journal);
	if (fs_read_file(b->journal, 1 << 20, &text, NULL) == 0 &&
	    (j = cJSON_Parse(text)) != NULL) {
		char *out;
		json_add_str(j, "deadLetter", why);
		cJSON_AddNumberToObject(j, "reportsSent", b->reports_sent);
		out = json_print(j);
		cJSON_Delete(j);
		if (fs_write_atomic(path, out, strlen(out), 0600) == -1)
			log_warn("build %s: cannot write the dead letter %s", b->key, path);
		free(out);
	}
	free(text);
	log_error("build %s: the server refused its finish report %d times (%s); "
	    "set aside as %s and no longer reported", b->key, b->reports_sent,
	    why, path);
	ops_note_build(OPS_DEAD_LETTER);
	free(path);
	outbox_drop(b);
}

/* workerBuildFinish answered: status 0 ends the build; else retry later. */
static void
report_done(struct http_result *r, void *arg)
{
	struct build *b = arg;
	struct envelope env;
	char err[300];
	int64_t delay;
	int parsed = 0;
	long long status = 0;

	b->report_busy = 0;
	b->reports_sent++;
	if (r->ok && envelope_parse(r->body, r->len, &env, err, sizeof(err)) == 0) {
		parsed = 1;
		status = env.status;
		if (env.status == 0 && r->code < 300) {
			envelope_free(&env);
			log_info("build %s: finish report acknowledged", b->key);
			outbox_drop(b);
			return;
		}
		snprintf(err, sizeof(err), "HTTP %ld, status %lld: %s", r->code,
		    env.status, env.message ? env.message : "(no message)");
		envelope_free(&env);
	} else if (!r->ok) {
		snprintf(err, sizeof(err), "%s", r->error);
	} else {
		char detail[300];
		snprintf(detail, sizeof(detail), "%s", err);
		snprintf(err, sizeof(err), "HTTP %ld, %.200s", r->code, detail);
	}
	b->refusals = report_refused(r, parsed, status) ? b->refusals + 1 : 0;
	if (b->refusals >= REFUSED_REPORT_TRIES) {
		outbox_dead_letter(b, err);
		return;
	}
	/*
	 * A deleted agent: the real server answers 404 to finish reports once
	 * the agent is gone, so retrying forever would keep the agent from ever
	 * uninstalling. Give up after a few tries; the server already ended
	 * these builds when it deleted the agent.
	 */
	if (A.mode == MODE_UNINSTALL && b->reports_sent >= UNINSTALL_REPORT_TRIES) {
		log_error("build %s: finish report failed %d times while the agent "
		    "is being uninstalled (%s); giving up on it", b->key,
		    b->reports_sent, err);
		ops_note_build(OPS_DEAD_LETTER);
		outbox_drop(b);
		return;
	}
	/* Exponential backoff 1 s .. 60 s with +-20 % jitter. */
	b->report_backoff = b->report_backoff ? b->report_backoff * 2 : 1000;
	if (b->report_backoff > 60000)
		b->report_backoff = 60000;
	if (A.fast && b->report_backoff > 1000)
		b->report_backoff = 1000;
	delay = b->report_backoff * (80 + random() % 41) / 100;
	log_warnx("build %s: finish report failed (%s); retry in %lld ms",
	    b->key, err, (long long)delay);
	ops_note_build(OPS_REPORT_RETRY);
	ops_note_error("finish report", err);
	timer_set(&b->report_timer, delay);
}

/* POST workerBuildFinish for b (the report timer's callback). */
void
outbox_send(void *arg)
{
	struct build *b = arg;
	char *body;

	/*
	 * tree_gone() sends it once the leftovers are gone; outbox_kick()
	 * once the startup call is acknowledged (nothing goes out before).
	 */
	if (b->report_busy || b->state != B_FINISHED || b->tree_busy || !A.started)
		return;
	body = build_finish_json(b);
	if (http_json("POST", EP_FINISH, body, report_done, b) == -1)
		timer_set(&b->report_timer, 1000);
	else
		b->report_busy = 1;
	free(body);
}

/* Send every report that waits for nothing but a chance (after startup). */
void
outbox_kick(void)
{
	struct build *b;

	for (b = build_first(); b != NULL; b = b->next)
		if (b->state == B_FINISHED && !b->report_busy && !b->tree_busy &&
		    timer_remaining(&b->report_timer) < 0)
			timer_set(&b->report_timer, 0);
}

/* On exit: try each pending report once within budget_ms. */
void
outbox_flush(int budget_ms)
{
	int64_t end = mono_ms() + budget_ms;
	struct build *b;
	int pending;

	for (b = build_first(); b != NULL; b = b->next)
		if (b->state == B_FINISHED && !b->report_busy && !b->tree_busy) {
			timer_cancel(&b->report_timer);
			outbox_send(b);
		}
	do {
		pending = 0;
		for (b = build_first(); b != NULL; b = b->next)
			if (b->report_busy)
				pending = 1;
		if (pending)
			ev_run_once(50);
	} while (pending && mono_ms() < end);
}
