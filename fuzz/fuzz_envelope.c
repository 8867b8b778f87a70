/*
 * fuzz_envelope.c - the response envelopes, Result and AgentResult
 * (protocol §5.1-5.3; common/json.h envelope_parse): every JSON answer of
 * the server goes through this parser first.
 */
#include <string.h>

#include "fuzz.h"
#include "json.h"

FUZZ_QUIET_INIT

/* One input through the parser, then the invariants. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct envelope env;
	char err[160];

	err[0] = '\0';
	if (envelope_parse((const char *)data, size, &env, err, sizeof(err)) == -1) {
		/* A failure leaves nothing to free and always says why. */
		FUZZ_ASSERT(env.root == NULL && env.message == NULL &&
		    env.agent_status == NULL && env.data == NULL);
		FUZZ_ASSERT(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
		return 0;
	}
	FUZZ_ASSERT(env.root != NULL && cJSON_IsObject(env.root));
	/* data is borrowed from the tree and never a JSON null. */
	FUZZ_ASSERT(env.data == NULL || !cJSON_IsNull(env.data));
	if (env.message != NULL)
		(void)strlen(env.message);
	if (env.agent_status != NULL)
		(void)strlen(env.agent_status);
	if (env.data != NULL) {
		char *s = json_print(env.data);
		free(s);
	}
	envelope_free(&env);
	/* envelope_free leaves a zeroed envelope: a second call is harmless. */
	envelope_free(&env);
	return 0;
}
