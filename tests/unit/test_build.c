/* test_build.c - worker launch text and report bodies (agent-behaviour §6). */
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "base64.h"
#include "build.h"
#include "envlist.h"
#include "t.h"
#include "util.h"

static struct build *
fake_build(void)
{
	struct build *b = xcalloc(1, sizeof(*b));

	b->info = cJSON_Parse("{\"projectId\":\"demo\",\"buildId\":\"b-1\","
	    "\"vmSeqId\":\"2\",\"workspace\":\"\",\"pipelineId\":\"p-9\","
	    "\"executeCount\":3,\"containerHashId\":\"c-7\",\"extra\":1}");
	b->project_id = "demo";
	b->build_id = "b-1";
	b->vm_seq_id = "2";
	b->workspace = "";
	b->key = xstrdup("b-1_2");
	b->error_file = xstrdup("/opt/my agent/build_tmp/b-1_2_build_msg.log");
	b->start_script = xstrdup("/opt/my agent/devops_agent_start_demo_b-1_2.sh");
	b->prepare_script = xstrdup("/opt/my agent/devops_agent_prepare_start_demo_b-1_2.sh");
	return b;
}

static void
free_build(struct build *b)
{
	cJSON_Delete(b->info);
	free(b->key);
	free(b->error_file);
	free(b->start_script);
	free(b->prepare_script);
	free(b->message);
	free(b);
}

TEST(shell_quote_handles_quotes)
{
	char *q = shell_quote("it's a dir");

	CHECK_STR(q, "'it'\\''s a dir'");
	free(q);
	q = shell_quote("");
	CHECK_STR(q, "''");
	free(q);
}

TEST(start_script_text)
{
	struct build *b = fake_build();
	char *s = build_start_script("/bin/bash", "/opt/my agent/jdk/bin/java",
	    "/opt/my agent", b, "QUJD");

	CHECK_STR(s, "#!/bin/bash\n"
	    "cd '/opt/my agent'\n"
	    "'/opt/my agent/jdk/bin/java' "
	    "-Ddevops.slave.agent.start.file='/opt/my agent/devops_agent_start_demo_b-1_2.sh' "
	    "-Ddevops.slave.agent.prepare.start.file='/opt/my agent/devops_agent_prepare_start_demo_b-1_2.sh' "
	    "-Ddevops.agent.error.file='/opt/my agent/build_tmp/b-1_2_build_msg.log' "
	    "-Dbuild.type=AGENT -DAGENT_LOG_PREFIX=b-1_2_agent -Xmx2g "
	    "-Djava.io.tmpdir='/opt/my agent/build_tmp' "
	    "-jar '/opt/my agent/worker-agent.jar' QUJD");
	free(s);
	free_build(b);
}

TEST(prepare_script_text)
{
	char *s = build_prepare_script("/bin/bash", "/w/start.sh");

	CHECK_STR(s, "#!/bin/bash\nexec /bin/bash -l '/w/start.sh'\n");
	free(s);
	s = build_prepare_script("/bin/tcsh", "/w/start.sh");
	CHECK_STR(s, "#!/bin/tcsh\nexec /bin/tcsh '/w/start.sh' -l\n");
	free(s);
}

TEST(info_json_has_the_eight_keys_in_order)
{
	struct build *b = fake_build();
	char *s = build_info_json(b->info);

	CHECK_STR(s, "{\"projectId\":\"demo\",\"buildId\":\"b-1\",\"vmSeqId\":\"2\","
	    "\"workspace\":\"\",\"pipelineId\":\"p-9\",\"dockerBuildInfo\":null,"
	    "\"executeCount\":3,\"containerHashId\":\"c-7\"}");
	free(s);
	free_build(b);
}

TEST(info_json_fills_absent_values)
{
	cJSON *info = cJSON_Parse("{\"projectId\":\"p\",\"buildId\":\"b\",\"vmSeqId\":\"1\"}");
	char *s = build_info_json(info);

	CHECK_STR(s, "{\"projectId\":\"p\",\"buildId\":\"b\",\"vmSeqId\":\"1\","
	    "\"workspace\":\"\",\"pipelineId\":\"\",\"dockerBuildInfo\":null,"
	    "\"executeCount\":null,\"containerHashId\":\"\"}");
	free(s);
	cJSON_Delete(info);
}

TEST(finish_json_success_and_failure)
{
	struct build *b = fake_build();
	char *s;

	b->success = 1;
	b->message = xstrdup("worker process 12 exited");
	s = build_finish_json(b);
	CHECK(strstr(s, "\"success\":true,\"message\":\"worker process 12 exited\","
	    "\"error\":null}") != NULL);
	CHECK(strstr(s, "\"buildId\":\"b-1\"") != NULL);
	free(s);
	b->success = 0;
	b->error_code = 2128040;
	free(b->message);
	b->message = xstrdup("step failed");
	s = build_finish_json(b);
	CHECK(strstr(s, "\"success\":false,\"message\":\"step failed\",\"error\":"
	    "{\"errorType\":\"USER\",\"errorMessage\":\"step failed\","
	    "\"errorCode\":2128040}}") != NULL);
	free(s);
	free_build(b);
}

TEST(worker_environment)
{
	struct build *b = fake_build();
	struct envlist e;

	A.worker_version = "v1.15.2";
	A.cfg.gateway = "127.0.0.1:8080";
	A.cfg.file_gateway = "files.example";
	A.cfg.language = "en_US";
	A.envs = cJSON_Parse("{\"TOOLS_HOME\":\"/opt/tools\",\"DEVOPS_BUILD_ID\":\"over\"}");
	setenv("DEVOPS_AGENT_TEST_FAST", "1", 1);
	build_env(b, &e);
	CHECK_STR(envlist_get(&e, "DEVOPS_AGENT_VERSION"), AGENT_VERSION);
	CHECK_STR(envlist_get(&e, "DEVOPS_WORKER_VERSION"), "v1.15.2");
	CHECK_STR(envlist_get(&e, "DEVOPS_SLAVE_VERSION"), "v1.15.2");
	CHECK_STR(envlist_get(&e, "DEVOPS_PROJECT_ID"), "demo");
	CHECK_STR(envlist_get(&e, "PROJECT_ID"), "demo");
	CHECK_STR(envlist_get(&e, "VM_SEQ_ID"), "2");
	CHECK_STR(envlist_get(&e, "BUILD_ID"), "b-1");
	CHECK_STR(envlist_get(&e, "DEVOPS_GATEWAY"), "http://127.0.0.1:8080");
	CHECK_STR(envlist_get(&e, "DEVOPS_FILE_GATEWAY"), "files.example");
	CHECK_STR(envlist_get(&e, "BK_CI_LOCALE_LANGUAGE"), "en_US");
	CHECK_STR(envlist_get(&e, "TOOLS_HOME"), "/opt/tools");
	/* Heartbeat envs win over the built-in variables (§6.6). */
	CHECK_STR(envlist_get(&e, "DEVOPS_BUILD_ID"), "over");
	CHECK(envlist_get(&e, "DEVOPS_AGENT_TEST_FAST") == NULL);
	envlist_free(&e);
	cJSON_Delete(A.envs);
	A.envs = NULL;
	free_build(b);
}

int
main(void)
{
	RUN(shell_quote_handles_quotes);
	RUN(start_script_text);
	RUN(prepare_script_text);
	RUN(info_json_has_the_eight_keys_in_order);
	RUN(info_json_fills_absent_values);
	RUN(finish_json_success_and_failure);
	RUN(worker_environment);
	return t_done();
}
