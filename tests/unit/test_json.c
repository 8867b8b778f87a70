/* test_json.c - envelope decoding and Go-style typed getters (protocol §1, §5). */
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "t.h"

static int
parse(const char *body, struct envelope *env, char *err)
{
	return envelope_parse(body, strlen(body), env, err, 160);
}

TEST(result_ok)
{
	struct envelope e;
	char err[160];

	CHECK(parse("{\"status\":0,\"data\":\"IMPORT_OK\"}", &e, err) == 0);
	CHECK(e.status == 0);
	CHECK(cJSON_IsString(e.data));
	CHECK_STR(e.data->valuestring, "IMPORT_OK");
	CHECK(e.message == NULL && e.agent_status == NULL);
	envelope_free(&e);
}

TEST(agent_result)
{
	struct envelope e;
	char err[160];

	CHECK(parse("{\"status\":0,\"agentStatus\":\"DELETE\",\"data\":{\"agent\":false}}",
	    &e, err) == 0);
	CHECK_STR(e.agent_status, "DELETE");
	CHECK(cJSON_IsObject(e.data));
	envelope_free(&e);
}

TEST(absent_and_null_are_the_same)
{
	struct envelope e;
	char err[160];

	CHECK(parse("{\"status\":0,\"data\":null,\"message\":null}", &e, err) == 0);
	CHECK(e.data == NULL && e.message == NULL);
	envelope_free(&e);
	/* No status at all reads as 0, as Go's zero value. */
	CHECK(parse("{}", &e, err) == 0);
	CHECK(e.status == 0 && e.data == NULL);
	envelope_free(&e);
}

TEST(case_insensitive_keys)
{
	struct envelope e;
	char err[160];

	CHECK(parse("{\"Status\":7,\"MESSAGE\":\"x\",\"AgentStatus\":\"IMPORT_OK\"}",
	    &e, err) == 0);
	CHECK(e.status == 7);
	CHECK_STR(e.message, "x");
	CHECK_STR(e.agent_status, "IMPORT_OK");
	envelope_free(&e);
	/* An exact-case match wins over a folded one. */
	CHECK(parse("{\"STATUS\":1,\"status\":2}", &e, err) == 0);
	CHECK(e.status == 2);
	envelope_free(&e);
}

TEST(malformed_bodies_fail)
{
	static const char *bad[] = {
		"", "<html>502 Bad Gateway</html>", "{\"status\":0,", "[1,2]",
		"\"str\"", "{\"status\":\"0\"}", "{\"status\":1.5}",
		"{\"status\":0,\"message\":5}", "{\"status\":0,\"agentStatus\":[]}",
		"null", "{\"status\":0,\"data\":{}} trailing",
	};
	struct envelope e;
	char err[160];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		int rc = envelope_parse(bad[i], strlen(bad[i]), &e, err, sizeof(err));
		if (rc != -1)
			fprintf(stderr, "  accepted: %s\n", bad[i]);
		CHECK(rc == -1);
		CHECK(err[0] != '\0');
		CHECK(e.root == NULL);
	}
}

TEST(not_nul_terminated)
{
	struct envelope e;
	char err[160];
	const char body[] = "{\"status\":3}XXXX";

	CHECK(envelope_parse(body, 12, &e, err, sizeof(err)) == 0);
	CHECK(e.status == 3);
	envelope_free(&e);
}

TEST(typed_getters)
{
	cJSON *o = cJSON_Parse("{\"s\":\"v\",\"i\":4,\"f\":4.5,\"b\":true,"
	    "\"n\":null,\"o\":{},\"a\":[],\"big\":1e12}");
	char *s = NULL;
	int i = -1, p = 0, b = 0;
	long long ll = 0;
	const cJSON *x;

	CHECK(json_get_str(o, "S", &s) == 0);
	CHECK_STR(s, "v");
	free(s);
	CHECK(json_get_str(o, "i", &s) == -1);
	CHECK(json_get_str(o, "n", &s) == 0 && s == NULL);
	CHECK(json_get_str(o, "missing", &s) == 0 && s == NULL);
	CHECK(json_get_int(o, "i", &i, &p) == 0 && i == 4 && p == 1);
	CHECK(json_get_int(o, "f", &i, &p) == -1);
	CHECK(json_get_int(o, "s", &i, &p) == -1);
	CHECK(json_get_int(o, "big", &i, &p) == -1);
	CHECK(json_get_ll(o, "big", &ll, NULL) == 0 && ll == 1000000000000LL);
	CHECK(json_get_int(o, "n", &i, &p) == 0 && p == 0);
	CHECK(json_get_bool(o, "b", &b) == 0 && b == 1);
	CHECK(json_get_bool(o, "i", &b) == -1);
	CHECK(json_get_obj(o, "o", &x) == 0 && x != NULL);
	CHECK(json_get_obj(o, "a", &x) == -1);
	CHECK(json_get_arr(o, "a", &x) == 0 && x != NULL);
	CHECK(json_get_arr(o, "n", &x) == 0 && x == NULL);
	cJSON_Delete(o);
}

int
main(void)
{
	RUN(result_ok);
	RUN(agent_result);
	RUN(absent_and_null_are_the_same);
	RUN(case_insensitive_keys);
	RUN(malformed_bodies_fail);
	RUN(not_nul_terminated);
	RUN(typed_getters);
	return t_done();
}
