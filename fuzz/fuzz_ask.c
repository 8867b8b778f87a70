/*
 * fuzz_ask.c - the ask answer (bk-ci ThirdPartyAskResp in an AgentResult;
 * agent.h ask_answer_parse), then each part through the decoder of the
 * handler that owns it: heartbeat_parse, build_info_check,
 * upgrade_item_parse and pipeline_item_parse. One answer carries the
 * settings, a build, an upgrade decision and a pipeline item at once.
 */
#include <string.h>

#include "agent.h"
#include "build.h"
#include "fuzz.h"
#include "json.h"
#include "pipeline.h"

FUZZ_QUIET_INIT

/* One input as a 200 and as a 404 answer, then the invariants. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ask_answer a;
	struct hb_response hb;
	struct pipeline_item pi;
	char err[300];
	int rc, want[4], i, any = 0, up;

	/* A 404 is "no ask on this server", whatever the body says. */
	rc = ask_answer_parse(404, (const char *)data, size, &a, err, sizeof(err));
	FUZZ_ASSERT(rc == ASK_UNSUPPORTED);
	ask_answer_free(&a);

	err[0] = '\0';
	rc = ask_answer_parse(200, (const char *)data, size, &a, err, sizeof(err));
	FUZZ_ASSERT(rc >= ASK_OK && rc <= ASK_BAD);
	FUZZ_ASSERT(memchr(err, '\0', sizeof(err)) != NULL);
	if (rc == ASK_BAD || rc == ASK_REFUSED || rc == ASK_TOO_FREQUENT)
		FUZZ_ASSERT(err[0] != '\0');
	for (i = 0; i < ASK_PARTS; i++)
		if (rc != ASK_OK)
			FUZZ_ASSERT(a.part[i] == NULL);
		else if (a.part[i] != NULL)
			FUZZ_ASSERT(!cJSON_IsNull(a.part[i]));
	if (rc != ASK_OK) {
		ask_answer_free(&a);
		return 0;
	}
	FUZZ_ASSERT(a.env.status == 0);
	if (a.part[ASK_HEARTBEAT] != NULL &&
	    heartbeat_parse(a.part[ASK_HEARTBEAT], &hb) == 0)
		heartbeat_response_free(&hb);
	if (a.part[ASK_BUILD] != NULL && cJSON_IsObject(a.part[ASK_BUILD]) &&
	    build_info_check(a.part[ASK_BUILD], err, sizeof(err)) == 0) {
		char *json = build_info_json(a.part[ASK_BUILD]);
		FUZZ_ASSERT(json != NULL && strstr(json, "\"buildId\"") != NULL);
		free(json);
	}
	if (a.part[ASK_UPGRADE] != NULL) {
		up = upgrade_item_parse(a.part[ASK_UPGRADE], want, err, sizeof(err));
		FUZZ_ASSERT(up >= -1 && up <= 1);
		for (i = 0; i < 4; i++)
			any |= want[i];
		FUZZ_ASSERT((up == 1) == (any == 1));
	}
	if (a.part[ASK_PIPELINE] != NULL) {
		(void)pipeline_item_parse(a.part[ASK_PIPELINE], &pi);
		pipeline_item_free(&pi);
	}
	ask_answer_free(&a);
	FUZZ_ASSERT(a.env.root == NULL);
	return 0;
}
