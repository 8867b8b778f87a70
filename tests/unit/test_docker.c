/* test_docker.c - dockerBuildInfo checks and the registry of an image (docker.h). */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "docker.h"
#include "t.h"

/* docker_info_check of a JSON text with workspace ws: 0 or -1. */
static int
check(const char *json, const char *ws)
{
	cJSON *o = cJSON_Parse(json);
	char err[300];
	int rc;

	rc = docker_info_check(o, ws, err, sizeof(err));
	if (rc == -1 && err[0] == '\0')
		rc = -2;	/* a refusal must say why */
	cJSON_Delete(o);
	return rc;
}

#define OK_BASE "\"agentId\":\"a\",\"secretKey\":\"s\""

TEST(accepts_what_the_server_sends)
{
	CHECK(check("{" OK_BASE ",\"image\":\"mirrors.example.com/ci/env:1.4\"}", "") == 0);
	CHECK(check("{" OK_BASE ",\"image\":\"https://127.0.0.1:5000/x/y:latest\","
	    "\"credential\":{\"user\":\"u\",\"password\":\"p\",\"errMsg\":null},"
	    "\"options\":{\"volumes\":[\"./cache:/cache\"],\"mounts\":[\"type=tmpfs,"
	    "target=/t\"],\"gpus\":\"all\",\"privileged\":true,\"network\":[\"host\"],"
	    "\"user\":\"1000:1000\"},\"imagePullPolicy\":\"always\"}", "/data/ws") == 0);
	CHECK(check("{" OK_BASE ",\"image\":\"debian@sha256:abc\",\"options\":null,"
	    "\"credential\":null}", "__NO_MOUNT__") == 0);
}

TEST(refuses_hostile_values)
{
	CHECK(check("{" OK_BASE ",\"image\":\"--privileged\"}", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"a b\"}", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"   \"}", "") == -1);
	CHECK(check("{" OK_BASE "}", "") == -1);
	CHECK(check("{\"secretKey\":\"s\",\"image\":\"x\"}", "") == -1);
	CHECK(check("{\"agentId\":\"a\\nb\",\"secretKey\":\"s\",\"image\":\"x\"}", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\",\"credential\":\"u:p\"}", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\",\"credential\":{\"user\":\"-u\"}}", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\",\"credential\":{\"password\":1}}", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\",\"options\":[]}", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\",\"options\":{\"volumes\":[1]}}", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\",\"options\":{\"volumes\":\"/a:/b\"}}", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\",\"options\":{\"mounts\":[\" \"]}}", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\",\"options\":{\"network\":[\"a;b\"]}}", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\",\"options\":{\"user\":\"--privileged\"}}", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\",\"options\":{\"gpus\":\"\"}}", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\",\"options\":{\"privileged\":\"yes\"}}", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\",\"imagePullPolicy\":1}", "") == -1);
	CHECK(check("\"x\"", "") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\"}", "relative/ws") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\"}", "/ws,target=/etc") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\"}", "/ws/../etc") == -1);
	CHECK(check("{" OK_BASE ",\"image\":\"x\"}", "/ws\n") == -1);
}

TEST(registry_of_an_image)
{
	char *r;

	r = docker_registry_of("mirrors.example.com/ci/env:1");
	CHECK_STR(r, "mirrors.example.com");
	free(r);
	r = docker_registry_of("https://127.0.0.1:5000/x:1");
	CHECK_STR(r, "127.0.0.1:5000");
	free(r);
	r = docker_registry_of("localhost/x");
	CHECK_STR(r, "localhost");
	free(r);
	r = docker_registry_of("library/debian:12");
	CHECK_STR(r, "");
	free(r);
	r = docker_registry_of("debian");
	CHECK_STR(r, "");
	free(r);
}

int
main(void)
{
	RUN(accepts_what_the_server_sends);
	RUN(refuses_hostile_values);
	RUN(registry_of_an_image);
	return t_done();
}
