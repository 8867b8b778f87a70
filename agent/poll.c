/*
 * poll.c - the server poll: the startup call, then either the single `ask`
 * call of BK-CI since late 2023 or the legacy loops of older servers, behind
 * one interface. It builds each request from the parts the handlers offer
 * and hands each part of each answer to the handler that owns it:
 *
 *   part        request side                   answer side
 *   heartbeat   heartbeat_request()            heartbeat_handle()
 *   build       build_ask_type()/build_gate()  build_handle()
 *   upgrade     upgrade_wanted/_request()      upgrade_handle()
 *   pipeline    pipeline_wanted()              pipeline_handle()
 *
 * The handlers never know which transport brought their part.
 *
 * ask mode (bk-ci src/agent/agent/src/pkg/agent/agent.go, ask.go;
 * DB/service/ThirdPartyAgentService.kt ask): POST .../thirdPartyAgent/ask
 * 5 s (+-10 %) after the previous answer, or as soon as the server's 3 s
 * window allows when a slot freed or a build was just claimed; while the
 * server cannot be reached, 5 s doubling to 20 s (ask_delay()).
 *
 * legacy mode (bk-ci bb566049dd1): newHeartbeat every 10 s; GET status then
 * GET startup?buildType= every 5 s, again as soon as the 3 s status window
 * allows after a claim; upgradeNew every 20 s; GET agents/pipelines every
 * 30 s.
 *
 * Mode choice (devops.agent.poll.mode): "auto" starts with ask; an HTTP 404
 * or an envelope status 404 to an ask means the server predates it (bk-ci
 * NotFoundExceptionMapper), so the legacy loops run and an ask is tried
 * again every 10 min; a server that answers it switches the agent back.
 * "ask" and "legacy" force a mode.
 *
 * Nothing but the startup call reaches the server until startup is
 * acknowledged (poll_on_started() then lets the rest go).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "ev.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "ops.h"
#include "util.h"

#define TOO_FREQUENT	"request too frequently"	/* bk-ci rate-limit text */
#define ASK_BACKOFF_MAX	4	/* periods: 20 s between asks at most while down */

static struct {
	enum poll_mode	 mode;
	int		 forced;		/* devops.agent.poll.mode not auto */
	int		 announced;		/* the mode was logged once */
	int64_t		 startup_backoff;
	struct timer	 startup_timer;
	/* ask */
	struct timer	 ask_timer;
	int		 ask_busy;
	int64_t		 ask_sent;		/* mono ms of the last ask */
	int		 ask_carried_exit;	/* the ask in flight reports an exit error */
	int64_t		 ask_backoff;		/* ms; 0 while the server answers */
	/* legacy */
	struct timer	 hb_timer, pull_timer, upgrade_timer, pipeline_timer;
	struct timer	 probe_timer;		/* tries ask again */
	int		 hb_busy, pull_busy, upgrade_busy, pipeline_busy;
	int		 hb_carried_exit;
	int64_t		 status_sent;		/* mono ms of the last GET status */
	int64_t		 pipeline_sent;		/* mono ms of the last GET pipelines */
	/* DEVOPS_AGENT_TIMEOUT_EXIT_TIME: consecutive poll timeouts */
	int		 timeouts;
} P;

static void ask_send(void *arg);
static void legacy_start(void);
static void legacy_stop(void);

/* ------------------------------------------------------------------ common */

/* Log a failed call in one line: transport error, HTTP code, or envelope. */
static void
log_call_failure(const char *what, const struct http_result *r,
    const struct envelope *env, const char *err)
{
	char msg[400];

	if (!r->ok)
		snprintf(msg, sizeof(msg), "%s", r->error);
	else if (err != NULL)
		snprintf(msg, sizeof(msg), "HTTP %ld, %s", r->code, err);
	else
		snprintf(msg, sizeof(msg), "HTTP %ld, status %lld: %s", r->code,
		    env->status, env->message ? env->message : "(no message)");
	log_warnx("%s failed: %s", what, msg);
	ops_note_error(what, msg);
}

/*
 * DEVOPS_AGENT_TIMEOUT_EXIT_TIME=N (heartbeat envs first, then the process
 * environment; bk-ci A/pkg/util/httputil/httputil.go, exiterror.go): N
 * poll calls in a row that time out record THIRD_AGENT_EXIT_TIMEOUT_ERROR;
 * the next poll reports it and the agent exits 1, so the daemon starts a
 * fresh one. Unlike GoAgent, only the poll counts and any answer resets the
 * count (GoAgent's shared counter rarely reaches N).
 */
static void
poll_count_timeout(const struct http_result *r)
{
	const cJSON *e = json_get(A.envs, "DEVOPS_AGENT_TIMEOUT_EXIT_TIME");
	const char *v = cJSON_IsString(e) ? e->valuestring :
	    getenv("DEVOPS_AGENT_TIMEOUT_EXIT_TIME");
	long long n;

	if (!r->timed_out) {
		P.timeouts = 0;
		return;
	}
	P.timeouts++;
	if (v == NULL || str_to_ll(v, &n) == -1 || n <= 0 || P.timeouts < n ||
	    A.exit_error_enum != NULL)
		return;
	agent_set_exit_error("THIRD_AGENT_EXIT_TIMEOUT_ERROR", "the server "
	    "did not answer in time for DEVOPS_AGENT_TIMEOUT_EXIT_TIME polls "
	    "in a row");
}

/* A poll that carried errorExitData ended: exit as HEAD does (§ agent.h). */
static void
poll_exit_reported(void)
{
	A.exit_code = strcmp(A.exit_error_enum, "THIRD_AGENT_EXIT_TIMEOUT_ERROR") == 0 ?
	    1 : EXIT_DAEMON_STOP;
	log_error("exit error %s reported; exiting with %d", A.exit_error_enum,
	    A.exit_code);
	agent_set_mode(MODE_STOP);
}

/* Log the poll mode once, and on every change. */
static void
poll_announce(const char *why)
{
	ops_dirty();
	log_info("poll mode: %s (%s)", P.mode == POLL_ASK ? "ask" : "legacy", why);
	P.announced = 1;
}

/* Milliseconds until window ms have passed since sent (0 when they have). */
static int64_t
until_window(int64_t sent, enum period window)
{
	int64_t left = sent + agent_period(window) - mono_ms();

	return sent == 0 || left < 0 ? 0 : left;
}

/* ------------------------------------------------------------------ ask */

/*
 * Milliseconds until the next regular ask. GoAgent asks exactly 5 s after
 * each answer, so agents that started together (a mass upgrade, a power
 * cut) or lost the server together ask in step for ever, and a server
 * that was down gets the whole fleet in one wave. Here every delay is
 * drawn at random from +-10 % of the period (the mean rate is unchanged),
 * so such a wave spreads out within a few periods. While the server
 * cannot be reached (failed: no HTTP answer, or HTTP 5xx from a gateway
 * without its backend) the delay doubles from the period up to
 * ASK_BACKOFF_MAX periods, so a fleet does not hammer a server on its way
 * back. The shortest delay, 4.5 s, stays above the server's 3 s ask window.
 */
static int64_t
ask_delay(int failed)
{
	int64_t period = agent_period(P_ASK);

	if (!failed)
		P.ask_backoff = 0;
	else if (P.ask_backoff == 0)
		P.ask_backoff = period;
	else if (P.ask_backoff < period * ASK_BACKOFF_MAX)
		P.ask_backoff = P.ask_backoff * 2 < period * ASK_BACKOFF_MAX ?
		    P.ask_backoff * 2 : period * ASK_BACKOFF_MAX;
	if (P.ask_backoff > 0)
		period = P.ask_backoff;
	return period * (90 + random() % 21) / 100;
}

/* The ThirdPartyAskInfo body (bk-ci A/pkg/api/type.go ThirdPartyAskInfo). */
static char *
ask_body(int *upgrade_asked)
{
	cJSON *b = cJSON_CreateObject(), *en, *hb;
	char *s;

	/* The heartbeat first: it refreshes the JDK version the upgrade needs. */
	hb = heartbeat_request();
	*upgrade_asked = upgrade_wanted();
	en = cJSON_AddObjectToObject(b, "askEnable");
	json_add_str(en, "build", build_ask_type());
	cJSON_AddBoolToObject(en, "upgrade", *upgrade_asked);
	/* No image-debug sessions: this agent does not run them. */
	cJSON_AddBoolToObject(en, "dockerDebug", 0);
	cJSON_AddBoolToObject(en, "pipeline", pipeline_wanted());
	cJSON_AddItemToObject(b, "heartbeat", hb);
	if (*upgrade_asked)
		cJSON_AddItemToObject(b, "upgrade", upgrade_request());
	else
		cJSON_AddNullToObject(b, "upgrade");
	s = json_print(b);
	cJSON_Delete(b);
	return s;
}

/* The server has no ask: run the legacy loops, try ask again later. */
static void
ask_unsupported(void)
{
	timer_cancel(&P.ask_timer);
	if (P.forced) {
		log_error("ask: the server has no ask endpoint (HTTP 404), but "
		    "devops.agent.poll.mode=ask; asking again in %lld s",
		    (long long)agent_period(P_ASK_PROBE) / 1000);
		timer_set(&P.ask_timer, agent_period(P_ASK_PROBE));
		return;
	}
	if (P.mode == POLL_ASK || !P.announced) {
		P.mode = POLL_LEGACY;
		poll_announce("the server answers 404 to ask: it predates it; "
		    "trying ask again every 10 min");
		legacy_start();
	}
	timer_set(&P.probe_timer, agent_period(P_ASK_PROBE));
}

/* Decode an ask answer without side effects (agent.h). */
int
ask_answer_parse(long http_code, const char *body, size_t len,
    struct ask_answer *a, char *err, size_t errlen)
{
	static const char *parts[ASK_PARTS] = { "heartbeat", "build", "upgrade",
	    "pipeline", "debug" };
	const cJSON *d;
	int i;

	memset(a, 0, sizeof(*a));
	if (http_code == 404)
		return ASK_UNSUPPORTED;
	if (envelope_parse(body, len, &a->env, err, errlen) == -1)
		return ASK_BAD;
	if (a->env.status == 404)
		return ASK_UNSUPPORTED;
	if (a->env.status != 0) {
		snprintf(err, errlen, "status %lld: %s", a->env.status,
		    a->env.message ? a->env.message : "(no message)");
		return a->env.message != NULL &&
		    strstr(a->env.message, TOO_FREQUENT) != NULL ?
		    ASK_TOO_FREQUENT : ASK_REFUSED;
	}
	d = a->env.data;
	if (d != NULL && !cJSON_IsObject(d)) {
		snprintf(err, errlen, "data is not an object");
		return ASK_BAD;
	}
	for (i = 0; i < ASK_PARTS; i++) {
		const cJSON *p = json_get(d, parts[i]);
		a->part[i] = p != NULL && !cJSON_IsNull(p) ? p : NULL;
	}
	return ASK_OK;
}

/* Free what ask_answer_parse holds (agent.h). */
void
ask_answer_free(struct ask_answer *a)
{
	envelope_free(&a->env);
	memset(a, 0, sizeof(*a));
}

/*
 * Hand the parts of an ask answer to their handlers. A part of the wrong
 * type costs that part only. A build is always taken, whatever agentStatus
 * says: the server already marked it running (HEAD drops it, quirk Q1).
 * Returns 1 when a build was claimed.
 */
static int
ask_dispatch(const struct ask_answer *a, int upgrade_asked)
{
	const cJSON *hb = a->part[ASK_HEARTBEAT], *up = a->part[ASK_UPGRADE];
	int claimed = 0, hb_ok = 0;

	if (hb != NULL) {
		if (heartbeat_handle(hb) == -1)
			log_warnx("ask: heartbeat part malformed; ignored");
		else
			hb_ok = 1;
	}
	if (!hb_ok && a->env.agent_status != NULL &&
	    strcmp(a->env.agent_status, "DELETE") == 0)
		heartbeat_deleted();
	if (a->part[ASK_BUILD] != NULL)
		claimed = build_handle(a->part[ASK_BUILD]) == 1;
	if (up != NULL) {
		if (!upgrade_asked)
			log_warnx("ask: upgrade part that was not asked for; ignored");
		else
			upgrade_handle(up, claimed ? "a build arrived in the same "
			    "answer" : NULL);
	}
	if (a->part[ASK_PIPELINE] != NULL)
		pipeline_handle(a->part[ASK_PIPELINE], P.ask_sent);
	if (a->part[ASK_DEBUG] != NULL)
		log_warnx("ask: image-debug part ignored (not supported)");
	return claimed;
}

/* The ask answered (bk-ci A/pkg/agent/agent.go doAsk). */
static void
ask_done(struct http_result *r, void *arg)
{
	struct ask_answer a;
	char err[300];
	int carried = P.ask_carried_exit, claimed = 0, upgrade_asked, rc;
	/* No answer, or the gateway's 5xx: back off (ask_delay). */
	int64_t next = ask_delay(!r->ok || r->code >= 500);

	upgrade_asked = (int)(intptr_t)arg;
	P.ask_busy = 0;
	P.ask_carried_exit = 0;
	poll_count_timeout(r);
	if (!r->ok) {
		log_warnx("ask failed: %s", r->error);
		ops_note_error("ask", r->error);
		rc = ASK_BAD;
		memset(&a, 0, sizeof(a));
	} else {
		rc = ask_answer_parse(r->code, r->body, r->len, &a, err, sizeof(err));
	}
	switch (rc) {
	case ASK_UNSUPPORTED:
		ask_unsupported();
		ask_answer_free(&a);
		goto out;
	case ASK_BAD:
		if (r->ok) {
			log_warnx("ask failed: HTTP %ld, %s", r->code, err);
			ops_note_error("ask", err);
		}
		break;
	case ASK_TOO_FREQUENT:
		next = agent_period(P_ASK_WINDOW);
		/* FALLTHROUGH */
	case ASK_REFUSED:
		log_warnx("ask refused: HTTP %ld, %s", r->code, err);
		ops_note_error("ask", err);
		break;
	default:
		if (P.mode != POLL_ASK || !P.announced) {
			if (P.mode != POLL_ASK)
				legacy_stop();
			P.mode = POLL_ASK;
			poll_announce("the server answers ask");
		}
		ops_note_ok(OPS_ASK);
		claimed = ask_dispatch(&a, upgrade_asked);
		break;
	}
	ask_answer_free(&a);
	/* Claimed, and room for more: again as soon as the window allows. */
	if (claimed && build_gate() == NULL)
		next = until_window(P.ask_sent, P_ASK_WINDOW);
	if (P.mode == POLL_ASK)
		timer_set(&P.ask_timer, next);
	else
		timer_set(&P.probe_timer, agent_period(P_ASK_PROBE));
out:
	if (carried && A.exit_error_enum != NULL)
		poll_exit_reported();
}

/* Send one ask (also the legacy mode's probe). */
static void
ask_send(void *arg)
{
	char *body;
	int upgrade_asked;

	(void)arg;
	if (P.ask_busy || A.mode == MODE_STOP)
		return;
	body = ask_body(&upgrade_asked);
	log_debug("ask: %s", body);
	P.ask_carried_exit = A.exit_error_enum != NULL;
	if (http_json("POST", EP_ASK, body, ask_done,
	    (void *)(intptr_t)upgrade_asked) == -1) {
		log_warnx("ask: cannot start the request");
		P.ask_carried_exit = 0;
		timer_set(P.mode == POLL_ASK ? &P.ask_timer : &P.probe_timer,
		    agent_period(P.mode == POLL_ASK ? P_ASK : P_ASK_PROBE));
	} else {
		P.ask_busy = 1;
		P.ask_sent = mono_ms();
	}
	free(body);
}

/* ------------------------------------------------------------------ legacy */

/* Decode a legacy answer into env: 0, or -1 (logged, env empty) when it failed. */
static int
legacy_envelope(const char *what, struct http_result *r, struct envelope *env)
{
	char err[300];

	if (!r->ok || envelope_parse(r->body, r->len, env, err, sizeof(err)) == -1) {
		log_call_failure(what, r, NULL, r->ok ? err : NULL);
		return -1;
	}
	if (env->status != 0) {
		log_call_failure(what, r, env, NULL);
		envelope_free(env);
		return -1;
	}
	return 0;
}

/* newHeartbeat answered. */
static void
hb_done(struct http_result *r, void *arg)
{
	struct envelope env;
	int carried = P.hb_carried_exit;

	(void)arg;
	P.hb_busy = 0;
	P.hb_carried_exit = 0;
	poll_count_timeout(r);
	if (P.mode == POLL_LEGACY)
		timer_set(&P.hb_timer, agent_period(P_HEARTBEAT));
	if (legacy_envelope("heartbeat", r, &env) == -1)
		return;
	if (env.data == NULL || !cJSON_IsObject(env.data))
		log_warnx("heartbeat: response without a data object");
	else if (heartbeat_handle(env.data) == -1)
		log_warnx("heartbeat: response has a field of the wrong type; ignored");
	envelope_free(&env);
	if (carried && A.exit_error_enum != NULL)
		poll_exit_reported();
}

/* POST newHeartbeat. */
static void
hb_send(void *arg)
{
	cJSON *b;
	char *body;

	(void)arg;
	if (P.hb_busy)
		return;
	b = heartbeat_request();
	body = json_print(b);
	cJSON_Delete(b);
	P.hb_carried_exit = A.exit_error_enum != NULL;
	if (http_json("POST", EP_HEARTBEAT, body, hb_done, NULL) == -1) {
		P.hb_carried_exit = 0;
		timer_set(&P.hb_timer, agent_period(P_HEARTBEAT));
	} else {
		P.hb_busy = 1;
	}
	free(body);
}

/* Next pull: the period, or sooner (within the status window) after a claim. */
static void
pull_again(int claimed)
{
	P.pull_busy = 0;
	if (P.mode != POLL_LEGACY)
		return;
	timer_set(&P.pull_timer, claimed && build_gate() == NULL ?
	    until_window(P.status_sent, P_STATUS_WINDOW) :
	    agent_period(P_BUILD_PULL));
}

/* GET startup?buildType= answered. */
static void
pull_done(struct http_result *r, void *arg)
{
	struct envelope env;
	int claimed = 0;

	(void)arg;
	if (legacy_envelope("build pull", r, &env) == 0) {
		if (env.data != NULL && !cJSON_IsNull(env.data))
			claimed = build_handle(env.data) == 1;
		envelope_free(&env);
	}
	pull_again(claimed);
}

/* GET status answered: claim only when IMPORT_OK. */
static void
status_done(struct http_result *r, void *arg)
{
	char err[300], *st = NULL, *path;
	const char *gate;

	(void)arg;
	/* The same decoder as the startup answer (json.h, fuzz_status). */
	if (!r->ok || envelope_data_str(r->body, r->len, &st, err, sizeof(err)) == -1) {
		log_warnx("status check failed: %s", r->ok ? err : r->error);
		pull_again(0);
		return;
	}
	if (st == NULL || strcmp(st, "IMPORT_OK") != 0) {
		log_info("status check: %s; not claiming", st ? st : "no status");
		free(st);
		pull_again(0);
		return;
	}
	free(st);
	if ((gate = build_gate()) != NULL) {
		log_debug("build pull: %s", gate);
		pull_again(0);
		return;
	}
	path = xasprintf("%s?buildType=%s", EP_PULL, build_ask_type());
	if (http_json("GET", path, NULL, pull_done, NULL) == -1)
		pull_again(0);
	free(path);
}

/* Pull tick: gates, then GET status. */
static void
pull_tick(void *arg)
{
	const char *gate;

	(void)arg;
	if (P.pull_busy)
		return;
	if ((gate = build_gate()) != NULL) {
		log_debug("build pull: %s", gate);
		timer_set(&P.pull_timer, agent_period(P_BUILD_PULL));
		return;
	}
	P.pull_busy = 1;
	P.status_sent = mono_ms();
	if (http_json("GET", EP_STATUS, NULL, status_done, NULL) == -1)
		pull_again(0);
}

/* upgradeNew answered. */
static void
upgrade_done(struct http_result *r, void *arg)
{
	struct envelope env;
	const char *st;

	(void)arg;
	P.upgrade_busy = 0;
	if (P.mode == POLL_LEGACY)
		timer_set(&P.upgrade_timer, agent_period(P_UPGRADE));
	if (legacy_envelope("upgrade check", r, &env) == -1)
		return;
	/* A deleted agent upgrades nothing (the heartbeat uninstalls it). */
	st = env.agent_status;
	if (st == NULL || strcmp(st, "DELETE") != 0)
		upgrade_handle(env.data, NULL);
	envelope_free(&env);
}

/* Upgrade tick: POST upgradeNew when an upgrade may run now. */
static void
upgrade_tick(void *arg)
{
	cJSON *b;
	char *body;

	(void)arg;
	if (P.upgrade_busy || !upgrade_wanted()) {
		timer_set(&P.upgrade_timer, agent_period(P_UPGRADE));
		return;
	}
	b = upgrade_request();
	body = json_print(b);
	cJSON_Delete(b);
	if (http_json("POST", EP_UPGRADE_NEW, body, upgrade_done, NULL) == -1) {
		timer_set(&P.upgrade_timer, agent_period(P_UPGRADE));
	} else {
		P.upgrade_busy = 1;
	}
	free(body);
}

/* GET agents/pipelines answered. */
static void
pipeline_done(struct http_result *r, void *arg)
{
	struct envelope env;

	(void)arg;
	P.pipeline_busy = 0;
	if (P.mode == POLL_LEGACY)
		timer_set(&P.pipeline_timer, agent_period(P_PIPELINE));
	if (legacy_envelope("pipeline fetch", r, &env) == -1)
		return;
	if (env.data != NULL && !cJSON_IsNull(env.data))
		pipeline_handle(env.data, P.pipeline_sent);
	envelope_free(&env);
}

/* Pipeline tick: GET agents/pipelines when a task may start. */
static void
pipeline_tick(void *arg)
{
	(void)arg;
	if (P.pipeline_busy || !pipeline_wanted()) {
		timer_set(&P.pipeline_timer, agent_period(P_PIPELINE));
		return;
	}
	P.pipeline_sent = mono_ms();
	if (http_json("GET", EP_PIPELINES, NULL, pipeline_done, NULL) == -1)
		timer_set(&P.pipeline_timer, agent_period(P_PIPELINE));
	else
		P.pipeline_busy = 1;
}

/* Arm the legacy loops (the first pipeline fetch after 10 s, as GoAgent). */
static void
legacy_start(void)
{
	timer_set(&P.hb_timer, 0);
	timer_set(&P.pull_timer, 0);
	timer_set(&P.upgrade_timer, agent_period(P_UPGRADE));
	timer_set(&P.pipeline_timer, agent_period(P_PIPELINE_FIRST));
}

/* Disarm the legacy loops (answers in flight only re-arm in legacy mode). */
static void
legacy_stop(void)
{
	timer_cancel(&P.hb_timer);
	timer_cancel(&P.pull_timer);
	timer_cancel(&P.upgrade_timer);
	timer_cancel(&P.pipeline_timer);
	timer_cancel(&P.probe_timer);
}

/* ------------------------------------------------------------------ startup */

static void startup_send(void *arg);

/* Startup acknowledged: the rest of the traffic may go now. */
static void
poll_on_started(void)
{
	A.started = 1;
	outbox_kick();
	pipeline_kick_reports();
	metrics_start();
	if (P.mode == POLL_ASK) {
		timer_set(&P.ask_timer, 0);
	} else {
		poll_announce("devops.agent.poll.mode=legacy");
		legacy_start();
	}
}

/* Startup answered: done, or retry with backoff (1 s doubling to 60 s, jittered). */
static void
startup_done(struct http_result *r, void *arg)
{
	char err[300], *st = NULL;
	int64_t next;

	(void)arg;
	if (r->ok && envelope_data_str(r->body, r->len, &st, err, sizeof(err)) == 0) {
		log_info("startup reported: agent status %s", st ? st : "");
		ops_note_ok(OPS_STARTUP);
		ops_note_agent_status(st);
		free(st);
		poll_on_started();
		return;
	}
	log_call_failure("startup", r, NULL, r->ok ? err : NULL);
	P.startup_backoff = P.startup_backoff ? P.startup_backoff * 2 : 1000;
	if (P.startup_backoff > 60000)
		P.startup_backoff = 60000;
	if (A.fast && P.startup_backoff > 1000)
		P.startup_backoff = 1000;
	/* +-20 % jitter: agents started together do not retry in step. */
	next = P.startup_backoff * (80 + random() % 41) / 100;
	log_info("startup: retrying in %lld ms", (long long)next);
	timer_set(&P.startup_timer, next);
}

/* POST startup (hostname, IP, OS, versions; protocol §7.2). */
static void
startup_send(void *arg)
{
	cJSON *b = cJSON_CreateObject();
	char *body;

	(void)arg;
	json_add_str(b, "hostname", A.hostname);
	json_add_str(b, "hostIp", A.ip);
	json_add_str(b, "detectOS", A.os);
	json_add_str(b, "masterVersion", AGENT_VERSION);
	json_add_str(b, "version", A.worker_version);
	body = json_print(b);
	cJSON_Delete(b);
	log_debug("startup: POST %s", EP_STARTUP);
	if (http_json("POST", EP_STARTUP, body, startup_done, NULL) == -1) {
		log_warnx("startup: cannot start request");
		timer_set(&P.startup_timer, 1000);
	}
	free(body);
}

/* ------------------------------------------------------------------ public */

/* Arm the startup call; the rest follows its acknowledgement. */
void
poll_start(void)
{
	const char *m = A.cfg.poll_mode != NULL ? A.cfg.poll_mode : "auto";

	timer_init(&P.startup_timer, "startup", startup_send, NULL);
	timer_init(&P.ask_timer, "ask", ask_send, NULL);
	timer_init(&P.probe_timer, "ask-probe", ask_send, NULL);
	timer_init(&P.hb_timer, "heartbeat", hb_send, NULL);
	timer_init(&P.pull_timer, "build-pull", pull_tick, NULL);
	timer_init(&P.upgrade_timer, "upgrade-check", upgrade_tick, NULL);
	timer_init(&P.pipeline_timer, "pipeline-fetch", pipeline_tick, NULL);
	P.mode = strcmp(m, "legacy") == 0 ? POLL_LEGACY : POLL_ASK;
	P.forced = strcmp(m, "auto") != 0;
	timer_set(&P.startup_timer, 0);
}

/* A slot freed or a gate opened: poll again as soon as allowed. */
void
poll_kick(void)
{
	if (!A.started || A.mode != MODE_RUN)
		return;
	if (P.mode == POLL_ASK) {
		int64_t when = until_window(P.ask_sent, P_ASK_WINDOW);
		if (!P.ask_busy && (timer_remaining(&P.ask_timer) < 0 ||
		    timer_remaining(&P.ask_timer) > when))
			timer_set(&P.ask_timer, when);
	} else if (!P.pull_busy && build_gate() == NULL) {
		int64_t when = until_window(P.status_sent, P_STATUS_WINDOW);
		if (timer_remaining(&P.pull_timer) < 0 ||
		    timer_remaining(&P.pull_timer) > when)
			timer_set(&P.pull_timer, when);
	}
}

/* The mode in use. */
enum poll_mode
poll_mode(void)
{
	return P.mode;
}
