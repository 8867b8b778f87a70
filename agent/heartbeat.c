/*
 * heartbeat.c - the heartbeat part of the poll: the body the agent sends
 * (legacy newHeartbeat, or the ask's heartbeat part) and what the server's
 * answer changes (protocol §7.3; agent-behaviour §5.4; bk-ci
 * src/agent/agent/src/pkg/agent/heartbeat.go, ask.go). poll.c decides when
 * and how it travels.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "docker.h"
#include "ev.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "ops.h"
#include "util.h"
#include "validate.h"

/* The heartbeat body (agent.h). */
cJSON *
heartbeat_request(void)
{
	cJSON *b = cJSON_CreateObject(), *props, *dock, *tasks;

	host_jdk_sync(0);

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
	json_add_str(props, "osVersion", A.os_version ? A.os_version : "");
	cJSON_AddNumberToObject(b, "dockerParallelTaskCount",
	    A.cfg.docker_parallel_task_count);
	cJSON_AddItemToObject(b, "dockerTaskList", docker_task_list());
	if (A.exit_error_enum != NULL) {
		cJSON *e = cJSON_AddObjectToObject(b, "errorExitData");
		json_add_str(e, "errorEnum", A.exit_error_enum);
		json_add_str(e, "message", A.exit_error_msg);
	} else {
		cJSON_AddNullToObject(b, "errorExitData");
	}
	return b;
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
	    json_get_bool(props, "enablePipeline", &r->enable_pipeline) == -1 ||
	    json_get_str(props, "ignoreLocalIps", &r->ignore_local_ips) == -1)
		goto fail;
	/* HEAD reads a missing key as false; we change nothing then. */
	r->has_enable_pipeline = props != NULL &&
	    json_get(props, "enablePipeline") != NULL &&
	    !cJSON_IsNull(json_get(props, "enablePipeline"));
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

/*
 * Replace *field with value when value is non-empty, differs and passes
 * check (NULL = none); a value that fails is logged with the key name and
 * the running value stays. Returns 1 when *field changed.
 */
static int
adopt_str(char **field, const char *value, const char *key,
    int (*check)(const char *, char *, size_t))
{
	char why[160];

	if (value == NULL || *value == '\0' ||
	    (*field != NULL && strcmp(*field, value) == 0))
		return 0;
	if (check != NULL && check(value, why, sizeof(why)) == -1) {
		log_warnx("heartbeat: refusing %s from the server (%s); keeping "
		    "%s", key, why, *field != NULL && **field != '\0' ? *field :
		    "the current value");
		return 0;
	}
	free(*field);
	*field = xstrdup(value);
	return 1;
}

/*
 * A count of the answer: 1 when it is within lo..hi and differs from *cur
 * (then *cur takes it); a value out of range is logged and ignored. A
 * zero or negative count means "unlimited" to GoAgent (W9); we keep ours.
 */
static int
adopt_count(int *cur, int has, int value, int hi, const char *key)
{
	char why[96];

	if (!has || value == *cur)
		return 0;
	if (validate_range(value, 1, hi, why, sizeof(why)) == -1) {
		log_warnx("heartbeat: ignoring %s %d (%s; keeping %d)", key,
		    value, why, *cur);
		return 0;
	}
	log_info("heartbeat: %s %d -> %d", key, *cur, value);
	*cur = value;
	return 1;
}

/*
 * Drop the entries of the server's envs that must not reach a worker's
 * environment (a bad name, a value with control bytes), each with a log
 * line; the others are applied. A map too large is refused whole.
 */
static void
envs_filter(struct hb_response *r)
{
	cJSON *it = r->envs->child, *next;
	char why[160];

	if (cJSON_GetArraySize(r->envs) > VALIDATE_ENVS_MAX) {
		log_warnx("heartbeat: refusing envs from the server (more than %d "
		    "entries); keeping the current ones", VALIDATE_ENVS_MAX);
		cJSON_Delete(r->envs);
		r->envs = NULL;
		return;
	}
	for (; it != NULL; it = next) {
		next = it->next;
		if (validate_env_name(it->string, why, sizeof(why)) == 0 &&
		    (cJSON_IsNull(it) || validate_env_value(it->valuestring, why,
		    sizeof(why)) == 0))
			continue;
		log_warnx("heartbeat: refusing envs entry '%.40s' from the server "
		    "(%s); the other entries apply", it->string ? it->string : "",
		    why);
		cJSON_Delete(cJSON_DetachItemViaPointer(r->envs, it));
	}
}

/*
 * Apply a parsed heartbeat response. Every value is checked
 * (validate.h) before it is kept in memory and in .agent.properties; one
 * that fails is logged and the running value stays.
 */
static void
heartbeat_apply(struct hb_response *r)
{
	int changed = 0, ip_changed = 0;

	if (adopt_count(&A.cfg.parallel_task_count, r->has_parallel,
	    r->parallel, VALIDATE_PARALLEL_MAX, "parallelTaskCount")) {
		changed = 1;
		poll_kick();
	}
	if (adopt_count(&A.cfg.docker_parallel_task_count,
	    r->has_docker_parallel, r->docker_parallel, VALIDATE_PARALLEL_MAX,
	    "dockerParallelTaskCount"))
		changed = 1;
	if (adopt_str(&A.cfg.gateway, r->gateway, "gateway", validate_gateway)) {
		log_info("heartbeat: gateway -> %s", A.cfg.gateway);
		http_set_gateway(A.cfg.gateway);
		changed = ip_changed = 1;
	}
	if (adopt_str(&A.cfg.file_gateway, r->file_gateway, "fileGateway",
	    validate_gateway)) {
		log_info("heartbeat: fileGateway -> %s", A.cfg.file_gateway);
		changed = 1;
	}
	if (adopt_count(&A.cfg.logs_keep_hours, r->has_keep_hours,
	    r->keep_hours, VALIDATE_KEEP_HOURS_MAX, "props.keepLogsHours"))
		changed = 1;
	if (adopt_str(&A.cfg.ignore_local_ips, r->ignore_local_ips,
	    "props.ignoreLocalIps", validate_ip_list))
		changed = ip_changed = 1;
	if (adopt_str(&A.cfg.language, r->language, "language",
	    validate_language))
		changed = 1;
	/* HEAD: props.enablePipeline turns the pipeline part on or off. */
	if (r->has_enable_pipeline && r->enable_pipeline != A.cfg.pipeline_enable) {
		log_info("heartbeat: devops.pipeline.enable -> %s",
		    r->enable_pipeline ? "true" : "false");
		A.cfg.pipeline_enable = r->enable_pipeline;
		changed = 1;
		if (A.cfg.pipeline_enable)
			pipeline_start();
	}
	if (r->envs != NULL)
		envs_filter(r);
	if (host_proxy_from_envs(r->envs))
		changed = 1;
	/* An answer without envs keeps the map (as HEAD): only "{}" clears it. */
	if (r->envs != NULL) {
		cJSON_Delete(A.envs);
		A.envs = r->envs;
		r->envs = NULL;
	}
	if (changed)
		agent_save_config();
	if (ip_changed)
		host_detect_ip();
}

/* The server deleted this agent (agent.h). */
void
heartbeat_deleted(void)
{
	if (A.mode == MODE_UNINSTALL || A.mode == MODE_STOP)
		return;
	log_warnx("heartbeat: the server deleted this agent; uninstalling "
	    "once running builds are done");
	agent_set_mode(MODE_UNINSTALL);
}

/* Apply a heartbeat answer (agent.h). */
int
heartbeat_handle(const cJSON *data)
{
	struct hb_response hb;

	if (heartbeat_parse(data, &hb) == -1)
		return -1;
	log_debug("heartbeat ok: status %s", hb.agent_status ? hb.agent_status : "-");
	ops_note_ok(OPS_HEARTBEAT);
	ops_note_agent_status(hb.agent_status);
	if (hb.agent_status != NULL && strcmp(hb.agent_status, "DELETE") == 0)
		heartbeat_deleted();
	else
		heartbeat_apply(&hb);
	heartbeat_response_free(&hb);
	return 0;
}
