/*
 * fuzz_pipeline.c - the pipeline task (protocol §7.9; agent/pipeline.h
 * pipeline_item_parse) behind its envelope, and the script the executor
 * writes for an accepted COMMAND (common/executor.h exec_wrap_script,
 * agent-behaviour §8 step 5): the server hands the agent a shell script.
 */
#include <string.h>

#include "executor.h"
#include "fuzz.h"
#include "json.h"
#include "pipeline.h"
#include "util.h"

FUZZ_QUIET_INIT

/* One input through the parser, then the invariants. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct envelope env;
	struct pipeline_item pi;
	enum pipeline_verdict v;
	char err[160], *script, *p;

	if (envelope_parse((const char *)data, size, &env, err, sizeof(err)) == -1)
		return 0;
	if (env.data == NULL || !cJSON_IsObject(env.data)) {
		envelope_free(&env);
		return 0;
	}
	v = pipeline_item_parse(env.data, &pi);
	/* The decoded item owns its strings: nothing points into the tree. */
	envelope_free(&env);
	switch (v) {
	case PI_SKIP_TYPE:
		FUZZ_ASSERT(pi.seq_id == NULL && pi.command == NULL);
		FUZZ_ASSERT(pi.type == NULL || strcmp(pi.type, "COMMAND") != 0);
		break;
	case PI_SKIP_SEQ:
		FUZZ_ASSERT(pi.seq_id == NULL && strcmp(pi.type, "COMMAND") == 0);
		break;
	case PI_REFUSE:
		FUZZ_ASSERT(pi.seq_id != NULL && *pi.seq_id != '\0');
		FUZZ_ASSERT(pi.refusal != NULL);
		break;
	case PI_RUN:
		/* A task name becomes a directory and a file name. */
		FUZZ_ASSERT(exec_id_valid(pi.seq_id) && strchr(pi.seq_id, '/') == NULL &&
		    strcmp(pi.seq_id, ".") != 0 && strcmp(pi.seq_id, "..") != 0);
		FUZZ_ASSERT(pi.command != NULL && !str_blank(pi.command));
		script = exec_wrap_script(pi.command, "/w s'");
		/* Shebang first, then set -e and a quoted cd before any command. */
		FUZZ_ASSERT(strncmp(script, "#!", 2) == 0);
		p = strchr(script, '\n');
		FUZZ_ASSERT(p != NULL);
		FUZZ_ASSERT(strncmp(p + 1, "set -e\n", 7) == 0 ||
		    strncmp(p + 1, "\nset -e\n", 8) == 0);
		FUZZ_ASSERT(strstr(script, "\ncd '/w s'\\'''\n") != NULL);
		FUZZ_ASSERT(script[strlen(script) - 1] == '\n');
		free(script);
		break;
	}
	pipeline_item_free(&pi);
	return 0;
}
