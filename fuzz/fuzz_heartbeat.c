/*
 * fuzz_heartbeat.c - the heartbeat answer (protocol §7.3 HeartbeatResponse;
 * agent.h heartbeat_parse) behind its envelope: the one answer that changes
 * the agent's settings, its build environment and can uninstall it.
 */
#include <string.h>

#include "agent.h"
#include "fuzz.h"
#include "json.h"

FUZZ_QUIET_INIT

/* One input through the parser, then the invariants. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct envelope env;
	struct hb_response hb;
	const cJSON *it;
	char err[160];

	if (envelope_parse((const char *)data, size, &env, err, sizeof(err)) == -1)
		return 0;
	if (heartbeat_parse(env.data, &hb) == -1) {
		/* A failed decode leaves nothing behind (Go: whole answer dropped). */
		FUZZ_ASSERT(hb.agent_status == NULL && hb.gateway == NULL &&
		    hb.file_gateway == NULL && hb.language == NULL &&
		    hb.ignore_local_ips == NULL && hb.envs == NULL);
		envelope_free(&env);
		return 0;
	}
	FUZZ_ASSERT(env.data != NULL && cJSON_IsObject(env.data));
	/* The decoded copy must not borrow from the parse tree. */
	envelope_free(&env);
	if (hb.agent_status != NULL)
		(void)strlen(hb.agent_status);
	FUZZ_ASSERT(hb.has_parallel || hb.parallel == 0);
	FUZZ_ASSERT(hb.has_docker_parallel || hb.docker_parallel == 0);
	FUZZ_ASSERT(hb.has_keep_hours || hb.keep_hours == 0);
	/* envs reach execve(): only strings (or null) may be left in it. */
	if (hb.envs != NULL) {
		FUZZ_ASSERT(cJSON_IsObject(hb.envs));
		cJSON_ArrayForEach(it, hb.envs)
			FUZZ_ASSERT(cJSON_IsString(it) || cJSON_IsNull(it));
	}
	heartbeat_response_free(&hb);
	return 0;
}
