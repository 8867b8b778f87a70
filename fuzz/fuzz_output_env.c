/*
 * fuzz_output_env.c - output.env, the KEY=VALUE file a pipeline script
 * leaves behind (common/executor.h exec_parse_env): written by whatever the
 * server's command ran, read back by the agent.
 */
#include <string.h>

#include "executor.h"
#include "fuzz.h"

FUZZ_QUIET_INIT

/* One input through the parser, then the invariants. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_cstr(data, size);
	cJSON *out = NULL, *it, *other;
	int bad, n = 0;

	bad = exec_parse_env(text, &out);
	FUZZ_ASSERT(bad >= 0 && out != NULL && cJSON_IsObject(out));
	cJSON_ArrayForEach(it, out) {
		const char *k = it->string;
		size_t i;

		/* Keys are shell-style names; values single-line strings. */
		FUZZ_ASSERT(k != NULL && *k != '\0' &&
		    (*k == '_' || (*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z')));
		for (i = 0; k[i] != '\0'; i++)
			FUZZ_ASSERT(k[i] == '_' || (k[i] >= 'A' && k[i] <= 'Z') ||
			    (k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9'));
		FUZZ_ASSERT(cJSON_IsString(it) && strchr(it->valuestring, '\n') == NULL);
		/* A later KEY wins: no key twice. */
		for (other = it->next; other != NULL; other = other->next)
			FUZZ_ASSERT(strcmp(other->string, k) != 0);
		n++;
	}
	FUZZ_ASSERT(n <= EXEC_PARAMS_MAX);
	cJSON_Delete(out);
	free(text);
	return 0;
}
