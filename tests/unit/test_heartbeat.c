/* test_heartbeat.c - heartbeat response decoding (protocol §7.3). */
#include <string.h>

#include "agent.h"
#include "t.h"

static int
parse(const char *text, struct hb_response *r)
{
	cJSON *d = cJSON_Parse(text);
	int rc = heartbeat_parse(d, r);

	cJSON_Delete(d);
	return rc;
}

TEST(full_response)
{
	struct hb_response r;

	CHECK(parse("{\"masterVersion\":\"v1\",\"agentStatus\":\"IMPORT_OK\","
	    "\"parallelTaskCount\":4,\"envs\":{\"TOOLS_HOME\":\"/opt/tools\"},"
	    "\"gateway\":\"devops.example.com\",\"fileGateway\":\"f.example.com\","
	    "\"props\":{\"keepLogsHours\":72,\"ignoreLocalIps\":\"127.0.0.1,10.0.0.1\"},"
	    "\"dockerParallelTaskCount\":2,\"language\":\"en_US\",\"createMod\":false}",
	    &r) == 0);
	CHECK_STR(r.agent_status, "IMPORT_OK");
	CHECK(r.has_parallel && r.parallel == 4);
	CHECK(r.has_docker_parallel && r.docker_parallel == 2);
	CHECK_STR(r.gateway, "devops.example.com");
	CHECK_STR(r.file_gateway, "f.example.com");
	CHECK_STR(r.language, "en_US");
	CHECK(r.has_keep_hours && r.keep_hours == 72);
	CHECK_STR(r.ignore_local_ips, "127.0.0.1,10.0.0.1");
	CHECK(r.envs != NULL && cJSON_GetArraySize(r.envs) == 1);
	heartbeat_response_free(&r);
}

TEST(capitalised_keys_match)
{
	struct hb_response r;

	/* The Kotlin class spells them AgentStatus / ParallelTaskCount. */
	CHECK(parse("{\"AgentStatus\":\"DELETE\",\"ParallelTaskCount\":-1}", &r) == 0);
	CHECK_STR(r.agent_status, "DELETE");
	CHECK(r.has_parallel && r.parallel == -1);
	heartbeat_response_free(&r);
}

TEST(missing_count_is_not_zero)
{
	struct hb_response r;

	CHECK(parse("{\"agentStatus\":\"IMPORT_OK\"}", &r) == 0);
	CHECK(!r.has_parallel && !r.has_docker_parallel && !r.has_keep_hours);
	CHECK(r.gateway == NULL && r.envs == NULL);
	heartbeat_response_free(&r);
}

TEST(type_mismatch_fails_whole_decode)
{
	static const char *bad[] = {
		"{\"parallelTaskCount\":\"4\"}",
		"{\"props\":{\"keepLogsHours\":\"72\"}}",
		"{\"envs\":{\"A\":1}}",
		"{\"envs\":[]}",
		"{\"gateway\":5}",
		"{\"props\":[]}",
		"{\"parallelTaskCount\":1.5}",
		"[]",
	};
	struct hb_response r;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(parse(bad[i], &r) == -1);
		CHECK(r.agent_status == NULL && r.envs == NULL);
	}
	CHECK(heartbeat_parse(NULL, &r) == -1);
}

int
main(void)
{
	RUN(full_response);
	RUN(capitalised_keys_match);
	RUN(missing_count_is_not_zero);
	RUN(type_mismatch_fails_whole_decode);
	return t_done();
}
