/*
 * fuzz_build_info.c - the build pull answer (protocol §7.7
 * ThirdPartyBuildInfo; build.h build_info_check) behind its envelope, and
 * what the agent derives from an accepted build: the worker's base64 JSON
 * (Appendix B), the finish report (§7.8) and the start script (§6.4).
 */
#include <string.h>

#include "base64.h"
#include "build.h"
#include "fuzz.h"
#include "json.h"
#include "util.h"

FUZZ_QUIET_INIT

/* The string member key of o, or "" (as build_info_json writes it). */
static const char *
str_or_empty(const cJSON *o, const char *key)
{
	const cJSON *it = json_get(o, key);

	return cJSON_IsString(it) ? it->valuestring : "";
}

/* One input through the parser, then the invariants. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *keys[] = { "projectId", "buildId", "vmSeqId",
	    "workspace", "pipelineId", "containerHashId" };
	struct envelope env;
	struct build b;
	char err[300], *json, *b64, *script, *fin;
	unsigned char *dec = NULL;
	size_t declen = 0, i;
	cJSON *back;

	if (envelope_parse((const char *)data, size, &env, err, sizeof(err)) == -1)
		return 0;
	if (env.data == NULL || !cJSON_IsObject(env.data) ||
	    build_info_check(env.data, err, sizeof(err)) == -1) {
		envelope_free(&env);
		return 0;
	}
	/*
	 * Accepted ids name files and appear unquoted in the start script
	 * (-DAGENT_LOG_PREFIX=<buildId>_<vmSeqId>_agent): only characters
	 * that are inert in a path and in a shell word, and no "..".
	 */
	for (i = 0; i < 3; i++) {
		const char *v = str_or_empty(env.data, keys[i]);
		FUZZ_ASSERT(*v != '\0' && strstr(v, "..") == NULL);
		FUZZ_ASSERT(strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "abcdefghijklmnopqrstuvwxyz0123456789._-") == strlen(v));
	}

	/* The worker's argument: base64 of the JSON, and back again. */
	json = build_info_json(env.data);
	b64 = base64_encode(json, strlen(json));
	FUZZ_ASSERT(base64_decode(b64, &dec, &declen) == 0);
	FUZZ_ASSERT(declen == strlen(json) && memcmp(dec, json, declen) == 0);
	back = cJSON_ParseWithLength((const char *)dec, declen);
	FUZZ_ASSERT(back != NULL && build_info_check(back, err, sizeof(err)) == 0);
	for (i = 0; i < nitems(keys); i++)
		FUZZ_ASSERT(strcmp(str_or_empty(back, keys[i]),
		    str_or_empty(env.data, keys[i])) == 0);
	cJSON_Delete(back);
	free(dec);

	/* What build.c derives from it must stay well-formed. */
	memset(&b, 0, sizeof(b));
	b.info = cJSON_Duplicate(env.data, 1);
	b.project_id = str_or_empty(env.data, "projectId");
	b.build_id = str_or_empty(env.data, "buildId");
	b.vm_seq_id = str_or_empty(env.data, "vmSeqId");
	b.workspace = str_or_empty(env.data, "workspace");
	b.key = xasprintf("%s_%s", b.build_id, b.vm_seq_id);
	b.error_file = xasprintf("/ws/build_tmp/%s_build_msg.log", b.key);
	b.start_script = xasprintf("/ws/devops_agent_start_%s_%s.sh",
	    b.project_id, b.key);
	b.prepare_script = xasprintf("/ws/devops_agent_prepare_start_%s_%s.sh",
	    b.project_id, b.key);
	b.message = xstrdup("Builder process was killed");
	b.error_code = 2128040;
	fin = build_finish_json(&b);
	back = cJSON_Parse(fin);
	FUZZ_ASSERT(back != NULL && cJSON_IsObject(back));
	cJSON_Delete(back);
	free(fin);
	script = build_start_script("/bin/bash", "/ws/jdk/bin/java", "/ws", &b, b64);
	/* Exactly three lines: a newline in an id would add a command. */
	FUZZ_ASSERT(strchr(script, '\n') != NULL);
	FUZZ_ASSERT(strchr(strchr(strchr(script, '\n') + 1, '\n') + 1, '\n') == NULL);
	free(script);
	free(b.key);
	free(b.error_file);
	free(b.start_script);
	free(b.prepare_script);
	free(b.message);
	cJSON_Delete(b.info);
	free(json);
	free(b64);
	envelope_free(&env);
	return 0;
}
