/*
 * heartbeat.c - the startup call (retried until it succeeds) and the 10 s
 * heartbeat (protocol §7.1, §7.3; agent-behaviour §5.1, §5.4).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "ev.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "util.h"

static struct timer startup_timer, heartbeat_timer;
static int64_t startup_backoff;
static int heartbeat_busy;
static int heartbeat_reported;	/* the heartbeat in flight carries errorExitData */

static void startup_send(void *arg);

/* Log a failed call in one line: transport error, HTTP code, or envelope. */
static void
log_call_failure(const char *what, const struct http_result *r,
    const struct envelope *env, const char *err)
{
	if (!r->ok)
		log_warnx("%s failed: %s", what, r->error);
	else if (err != NULL)
		log_warnx("%s failed: HTTP %ld, %s", what, r->code, err);
	else
		log_warnx("%s failed: HTTP %ld, status %lld: %s", what, r->code,
		    env->status, env->message ? env->message : "(no message)");
}

/* Startup answered: done, or retry with backoff (1 s doubling to 60 s). */
static void
startup_done(struct http_result *r, void *arg)
{
	char err[300], *st = NULL;

	(void)arg;
	if (r->ok && envelope_data_str(r->body, r->len, &st, err, sizeof(err)) == 0) {
		log_info("startup reported: agent status %s", st ? st : "");
		free(st);
		A.started = 1;
		build_kick();
		return;
	}
	log_call_failure("startup", r, NULL, r->ok ? err : NULL);
	startup_backoff = startup_backoff ? startup_backoff * 2 : 1000;
	if (startup_backoff > 60000)
		startup_backoff = 60000;
	if (A.fast && startup_backoff > 1000)
		startup_backoff = 1000;
	log_info("startup: retrying in %lld ms", (long long)startup_backoff);
	timer_set(&startup_timer, startup_backoff);
}

/* POST startup (hostname, IP, OS, versions). */
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
	if (http_json("POST", EP_STARTUP, body, startup_done, NULL) == -1) {
		log_warnx("startup: cannot start request");
		timer_set(&startup_timer, 1000);
	}
	free(body);
}

/* The newHeartbeat request body (§7.3). */
static char *
heartbeat_body(void)
{
	cJSON *b = cJSON_CreateObject(), *props, *dock, *tasks;
	char *body;

	json_add_str(b, "masterVersion", AGENT_VERSION);
	json_add_str(b, "slaveVersion", A.worker_version);
	json_add_str(b, "hostName", A.hostname);
	json_add_str(b, "agentIp", A.ip);
	cJSON_AddNumberToObject(b, "parallelTaskCount", A.cfg.parallel_task_count);
	json_add_str(b, "agentInstallPath", A.workdir);
	json_add_str(b, "startedUser", A.user);
	tasks = build_task_list();
	if (tasks != NULL)
		cJSON_AddItemToObject(b, "taskList", tasks);
	else
		cJSON_AddNullToObject(b, "taskList");
	props = cJSON_AddObjectToObject(b, "props");
	json_add_str(props, "arch", A.arch);
	cJSON_AddItemToObject(props, "jdkVersion", host_jdk_json());
	dock = cJSON_AddObjectToObject(props, "dockerInitFileMd5");
	json_add_str(dock, "fileMd5", "");
	cJSON_AddBoolToObject(dock, "needUpgrade", 0);
	cJSON_AddNumberToObject(b, "dockerParallelTaskCount",
	    A.cfg.docker_parallel_task_count);
	cJSON_AddArrayToObject(b, "dockerTaskList");
	if (A.exit_error_enum != NULL) {
		cJSON *e = cJSON_AddObjectToObject(b, "errorExitData");
		json_add_str(e, "errorEnum", A.exit_error_enum);
		json_add_str(e, "message", A.exit_error_msg);
	} else {
		cJSON_AddNullToObject(b, "errorExitData");
	}
	body = json_print(b);
	cJSON_Delete(b);
	return body;
}

/* Free a decoded heartbeat answer. */
void
heartbeat_response_free(struct hb_response *r)
{
	free(r->agent_status);
	free(r->gateway);
	free(r->file_gateway);
	free(r->language);
	free(r->ignore_local_ips);
	cJSON_Delete(r->envs);
	memset(r, 0, sizeof(*r));
}

/* Decode a heartbeat answer with Go's rules (agent.h). */
int
heartbeat_parse(const cJSON *d, struct hb_response *r)
{
	const cJSON *props = NULL, *envs = NULL, *it;

	memset(r, 0, sizeof(*r));
	if (d == NULL || !cJSON_IsObject(d))
		return -1;
	if (json_get_str(d, "agentStatus", &r->agent_status) == -1 ||
	    json_get_int(d, "parallelTaskCount", &r->parallel, &r->has_parallel) == -1 ||
	    json_get_int(d, "dockerParallelTaskCount", &r->docker_parallel,
	    &r->has_docker_parallel) == -1 ||
	    json_get_str(d, "gateway", &r->gateway) == -1 ||
	    json_get_str(d, "fileGateway", &r->file_gateway) == -1 ||
	    json_get_str(d, "language", &r->language) == -1 ||
	    json_get_obj(d, "props", &props) == -1 ||
	    json_get_obj(d, "envs", &envs) == -1 ||
	    json_get_int(props, "keepLogsHours", &r->keep_hours, &r->has_keep_hours) == -1 ||
	    json_get_str(props, "ignoreLocalIps", &r->ignore_local_ips) == -1)
		goto fail;
	if (envs != NULL) {
		cJSON_ArrayForEach(it, envs)
			if (!cJSON_IsString(it) && !cJSON_IsNull(it))
				goto fail;
		r->envs = cJSON_Duplicate(envs, 1);
	}
	return 0;
fail:
	heartbeat_response_free(r);
	return -1;
}

/* Replace *field with value when value is non-empty and differs. */
static int
adopt_str(char **field, const char *value)
{
	if (value == NULL || *value == '\0' ||
	    (*field != NULL && strcmp(*field, value) == 0))
		return 0;
	free(*field);
	*field = xstrdup(value);
	return 1;
}

/*
 * Apply a parsed heartbeat response (§5.4 step 5). A missing, zero or
 * negative count is ignored: GoAgent turns it into "unlimited" (W9).
 */
static void
heartbeat_apply(struct hb_response *r)
{
	int changed = 0, ip_changed = 0;

	if (r->has_parallel && r->parallel > 0 &&
	    r->parallel != A.cfg.parallel_task_count) {
		log_info("heartbeat: parallelTaskCount %d -> %d",
		    A.cfg.parallel_task_count, r->parallel);
		A.cfg.parallel_task_count = r->parallel;
		changed = 1;
		build_kick();
	} else if (r->has_parallel && r->parallel <= 0 &&
	    r->parallel != A.cfg.parallel_task_count) {
		log_warnx("heartbeat: ignoring parallelTaskCount %d (keeping %d)",
		    r->parallel, A.cfg.parallel_task_count);
	}
	if (r->has_docker_parallel && r->docker_parallel > 0 &&
	    r->docker_parallel != A.cfg.docker_parallel_task_count) {
		A.cfg.docker_parallel_task_count = r->docker_parallel;
		changed = 1;
	}
	if (adopt_str(&A.cfg.gateway, r->gateway)) {
		log_info("heartbeat: gateway -> %s", A.cfg.gateway);
		http_set_gateway(A.cfg.gateway);
		changed = ip_changed = 1;
	}
	if (adopt_str(&A.cfg.file_gateway, r->file_gateway)) {
		log_info("heartbeat: fileGateway -> %s", A.cfg.file_gateway);
		changed = 1;
	}
	if (r->has_keep_hours && r->keep_hours > 0 &&
	    r->keep_hours != A.cfg.logs_keep_hours) {
		A.cfg.logs_keep_hours = r->keep_hours;
		changed = 1;
	}
	if (adopt_str(&A.cfg.ignore_local_ips, r->ignore_local_ips))
		changed = ip_changed = 1;
	if (adopt_str(&A.cfg.language, r->language))
		changed = 1;
	if (host_proxy_from_envs(r->envs))
		changed = 1;
	cJSON_Delete(A.envs);
	A.envs = r->envs;
	r->envs = NULL;
	if (changed)
		agent_save_config();
	if (ip_changed)
		host_detect_ip();
}

/* Heartbeat answered: DELETE -> uninstall; else merge the settings. */
static void
heartbeat_done(struct http_result *r, void *arg)
{
	struct envelope env;
	struct hb_response hb;
	char err[160];
	int reported_error = heartbeat_reported;

	(void)arg;
	heartbeat_busy = 0;
	timer_set(&heartbeat_timer, agent_period(P_HEARTBEAT));
	if (!r->ok || envelope_parse(r->body, r->len, &env, err, sizeof(err)) == -1) {
		log_call_failure("heartbeat", r, NULL, r->ok ? err : NULL);
		return;
	}
	if (env.status != 0 || env.data == NULL || !cJSON_IsObject(env.data)) {
		if (env.status == 0)
			log_warnx("heartbeat: response without a data object");
		else
			log_call_failure("heartbeat", r, &env, NULL);
		envelope_free(&env);
		return;
	}
	if (heartbeat_parse(env.data, &hb) == -1) {
		log_warnx("heartbeat: response has a field of the wrong type; ignored");
		envelope_free(&env);
		return;
	}
	envelope_free(&env);
	log_debug("heartbeat ok: status %s", hb.agent_status ? hb.agent_status : "-");
	if (hb.agent_status != NULL && strcmp(hb.agent_status, "DELETE") == 0) {
		log_warnx("heartbeat: the server deleted this agent; uninstalling "
		    "once running builds are done");
		heartbeat_response_free(&hb);
		agent_set_mode(MODE_UNINSTALL);
		return;
	}
	heartbeat_apply(&hb);
	heartbeat_response_free(&hb);
	if (reported_error) {
		/* HEAD's rule (§5.6): report the fatal condition once, then stop. */
		log_error("exit error %s reported; exiting with %d",
		    A.exit_error_enum, EXIT_DAEMON_STOP);
		A.exit_code = EXIT_DAEMON_STOP;
		agent_set_mode(MODE_STOP);
	}
}

/* Send one heartbeat (first run also syncs the JDK version). */
static void
heartbeat_send(void *arg)
{
	static int first = 1;
	char *body;

	(void)arg;
	if (heartbeat_busy)
		return;
	host_jdk_sync(first);
	first = 0;
	body = heartbeat_body();
	/* At most one heartbeat is in flight (heartbeat_busy): no heap arg,
	 * which a shutdown with the request pending would leak. */
	heartbeat_reported = A.exit_error_enum != NULL;
	if (http_json("POST", EP_HEARTBEAT, body, heartbeat_done, NULL) == -1) {
		timer_set(&heartbeat_timer, agent_period(P_HEARTBEAT));
	} else {
		heartbeat_busy = 1;
	}
	free(body);
}

/* Arm the startup call and the heartbeat loop. */
void
heartbeat_start(void)
{
	timer_init(&startup_timer, "startup", startup_send, NULL);
	timer_init(&heartbeat_timer, "heartbeat", heartbeat_send, NULL);
	timer_set(&startup_timer, 0);
	timer_set(&heartbeat_timer, 0);
}
