/* test_validate.c - checks of server-sent values (common/validate.h). */
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "validate.h"

/* validate_gateway(s) == 0, with the reason printed on a surprise. */
static int
gw_ok(const char *s)
{
	char why[160] = "";
	int rc = validate_gateway(s, why, sizeof(why));

	if (rc != 0)
		fprintf(stderr, "  gateway %s: %s\n", s, why);
	return rc == 0;
}

TEST(gateway_good)
{
	CHECK(gw_ok("devops.example.com"));
	CHECK(gw_ok("devops.example.com:8080"));
	CHECK(gw_ok("127.0.0.1:1"));
	CHECK(gw_ok("[::1]:443"));
	CHECK(gw_ok("http://devops.example.com"));
	CHECK(gw_ok("https://devops.example.com:8443/"));
	CHECK(gw_ok("https://devops.example.com/prefix/ms"));
	CHECK(gw_ok("http://[2001:db8::1]"));
	CHECK(gw_ok("bk_ci-gw.internal"));
}

TEST(gateway_bad)
{
	static const char *bad[] = {
		"", "devops.example.com\n", "devops\x01.example.com",
		"devops example.com", "ftp://devops.example.com",
		"file:///etc/passwd", "javascript://x", "HTTP://x",
		"httpevil.com", "devops.example.com/path",
		"http://user:pw@evil.com", "http://evil.com@good.com",
		"http://x/?a=1", "http://x/#f", "http://", "https://:80",
		"x:0", "x:65536", "x:80a", "x:123456", "[::1", "[zz]:80",
		"http://x:8080:9", "devops.example.com\t", "a;rm -rf /",
		"$(id)", "x\x7f",
	};
	char why[160];
	size_t i;
	char *longest = malloc(VALIDATE_GATEWAY_MAX + 2);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		if (validate_gateway(bad[i], why, sizeof(why)) != -1)
			fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
		CHECK(validate_gateway(bad[i], why, sizeof(why)) == -1);
		CHECK(why[0] != '\0');
	}
	CHECK(validate_gateway(NULL, NULL, 0) == -1);
	memset(longest, 'a', VALIDATE_GATEWAY_MAX + 1);
	longest[VALIDATE_GATEWAY_MAX + 1] = '\0';
	CHECK(validate_gateway(longest, why, sizeof(why)) == -1);
	free(longest);
}

TEST(ip_list)
{
	char why[160];

	CHECK(validate_ip_list("127.0.0.1", why, sizeof(why)) == 0);
	CHECK(validate_ip_list("127.0.0.1, 10.0.0.1 ,::1,", why, sizeof(why)) == 0);
	CHECK(validate_ip_list("", why, sizeof(why)) == 0);
	CHECK(validate_ip_list("127.0.0.1,evil", why, sizeof(why)) == -1);
	CHECK(validate_ip_list("10.0.0.256", why, sizeof(why)) == -1);
	CHECK(validate_ip_list("10.0.0.1\n", why, sizeof(why)) == -1);
	CHECK(validate_ip_list("10.0.0.0/8", why, sizeof(why)) == -1);
	CHECK(validate_ip_list("1111111111111111111111111111111111111111111111111",
	    why, sizeof(why)) == -1);
}

TEST(env_names_and_values)
{
	char why[160];

	CHECK(validate_env_name("JAVA_HOME", why, sizeof(why)) == 0);
	CHECK(validate_env_name("_x1", why, sizeof(why)) == 0);
	CHECK(validate_env_name("", why, sizeof(why)) == -1);
	CHECK(validate_env_name("1X", why, sizeof(why)) == -1);
	CHECK(validate_env_name("A=B", why, sizeof(why)) == -1);
	CHECK(validate_env_name("A B", why, sizeof(why)) == -1);
	CHECK(validate_env_name("a.b", why, sizeof(why)) == -1);
	CHECK(validate_env_name("X\n", why, sizeof(why)) == -1);
	CHECK(validate_env_value("", why, sizeof(why)) == 0);
	CHECK(validate_env_value("/opt/tools:/usr/bin\tx=y", why, sizeof(why)) == 0);
	CHECK(validate_env_value("a\nb", why, sizeof(why)) == -1);
	CHECK(validate_env_value("a\rb", why, sizeof(why)) == -1);
	CHECK(validate_env_value("\x1b[31m", why, sizeof(why)) == -1);
}

TEST(envs_object)
{
	cJSON *ok = cJSON_Parse("{\"TOOLS_HOME\":\"/opt/tools\",\"X\":null}");
	cJSON *name = cJSON_Parse("{\"BAD NAME\":\"v\"}");
	cJSON *value = cJSON_Parse("{\"GOOD\":\"a\\nexport EVIL=1\"}");
	cJSON *type = cJSON_Parse("{\"GOOD\":5}");
	char why[160];

	CHECK(validate_envs(NULL, why, sizeof(why)) == 0);
	CHECK(validate_envs(ok, why, sizeof(why)) == 0);
	CHECK(validate_envs(name, why, sizeof(why)) == -1);
	CHECK(validate_envs(value, why, sizeof(why)) == -1);
	CHECK(strstr(why, "GOOD") != NULL);
	CHECK(validate_envs(type, why, sizeof(why)) == -1);
	cJSON_Delete(ok);
	cJSON_Delete(name);
	cJSON_Delete(value);
	cJSON_Delete(type);
}

TEST(language_and_ranges)
{
	char why[160];

	CHECK(validate_language("zh_CN", why, sizeof(why)) == 0);
	CHECK(validate_language("en-US", why, sizeof(why)) == 0);
	CHECK(validate_language("zh-Hans-CN", why, sizeof(why)) == 0);
	CHECK(validate_language("x", why, sizeof(why)) == -1);
	CHECK(validate_language("../../etc", why, sizeof(why)) == -1);
	CHECK(validate_language("en_US\n", why, sizeof(why)) == -1);
	CHECK(validate_language("", why, sizeof(why)) == -1);
	CHECK(validate_range(4, 1, VALIDATE_PARALLEL_MAX, why, sizeof(why)) == 0);
	CHECK(validate_range(0, 1, VALIDATE_PARALLEL_MAX, why, sizeof(why)) == -1);
	CHECK(validate_range(VALIDATE_PARALLEL_MAX + 1, 1, VALIDATE_PARALLEL_MAX,
	    why, sizeof(why)) == -1);
	CHECK(validate_range(2147483647LL, 1, VALIDATE_KEEP_HOURS_MAX, why,
	    sizeof(why)) == -1);
}

int
main(void)
{
	RUN(gateway_good);
	RUN(gateway_bad);
	RUN(ip_list);
	RUN(env_names_and_values);
	RUN(envs_object);
	RUN(language_and_ranges);
	return t_done();
}
