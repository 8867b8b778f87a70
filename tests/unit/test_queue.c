/*
 * test_queue.c - the Redis task queue's pure parts: the redis:// address
 * (common/redis.h) and the task and control decoders (agent/queue.h).
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "queue.h"
#include "redis.h"
#include "t.h"

/* Full address with password, port and db. */
TEST(url_full)
{
	struct redis_url u;
	char err[128];

	CHECK(redis_url_parse("redis://:p%40ss:w@10.0.0.5:6380/3", &u, err, sizeof(err)) == 0);
	CHECK_STR(u.host, "10.0.0.5");
	CHECK(u.port == 6380 && u.db == 3);
	CHECK(u.password != NULL && strcmp(u.password, "p%40ss:w") == 0);
	redis_url_clear(&u);
	CHECK(u.password == NULL);
}

/* Defaults, IPv6, and refusals whose message never holds the password. */
TEST(url_defaults_and_errors)
{
	struct redis_url u;
	char err[128];

	CHECK(redis_url_parse("redis://localhost", &u, err, sizeof(err)) == 0);
	CHECK_STR(u.host, "localhost");
	CHECK(u.port == 6379 && u.db == 0 && u.password == NULL);
	CHECK(redis_url_parse("redis://[::1]:7000/", &u, err, sizeof(err)) == 0);
	CHECK_STR(u.host, "::1");
	CHECK(u.port == 7000);
	CHECK(redis_url_parse("http://h:1", &u, err, sizeof(err)) == -1);
	CHECK(redis_url_parse("redis://:topsecret@h:99999", &u, err, sizeof(err)) == -1);
	CHECK(strstr(err, "topsecret") == NULL);
	CHECK(u.password == NULL);
	CHECK(redis_url_parse("redis://:pw@", &u, err, sizeof(err)) == -1);
	CHECK(redis_url_parse("redis://h/x", &u, err, sizeof(err)) == -1);
	CHECK(redis_url_parse("redis://user@h", &u, err, sizeof(err)) == -1);
}

/* The note's task: cmdline words, then cmd_args as argv words. */
TEST(task_decode_ok)
{
	const char *m = "{\"id\":\"101\",\"type\":\"test\",\"task\":{\"cmdline\":"
	    "\" install.sh  -v\",\"cmd_args\":[\"a b\",\"$X;rm\"],\"timeout\":1.5}}";
	struct queue_task t;
	char err[256];

	CHECK(queue_task_decode(m, strlen(m), &t, err, sizeof(err)) == 0);
	CHECK_STR(t.id, "101");
	CHECK_STR(t.type, "test");
	CHECK_STR(t.argv[0], "install.sh");
	CHECK_STR(t.argv[1], "-v");
	CHECK_STR(t.argv[2], "a b");
	CHECK_STR(t.argv[3], "$X;rm");
	CHECK(t.argv[4] == NULL);
	CHECK(t.timeout_ms == 1500);
	queue_task_free(&t);
}

/* Refusals: with an id (-1, a done can be sent) or without (-2). */
TEST(task_decode_bad)
{
	struct queue_task t;
	char err[256], *big;
	size_t n = QUEUE_MSG_MAX + 100;
	const char *with_id[] = {
		"{\"id\":7}",
		"{\"id\":\"a\",\"task\":{\"cmdline\":\"  \"}}",
		"{\"id\":\"a\",\"task\":{\"cmdline\":\"x\",\"cmd_args\":[1]}}",
		"{\"id\":\"a\",\"task\":{\"cmdline\":\"x\",\"timeout\":\"3\"}}",
		"{\"id\":\"a\",\"type\":5,\"task\":{\"cmdline\":\"x\"}}",
	};
	const char *no_id[] = { "nope", "[]", "{\"id\":\"../x\"}", "{\"id\":-1}",
	    "{\"task\":{\"cmdline\":\"x\"}}", "{\"id\":\"a\0b\"}" };
	size_t i;

	for (i = 0; i < sizeof(with_id) / sizeof(*with_id); i++) {
		CHECK(queue_task_decode(with_id[i], strlen(with_id[i]), &t, err,
		    sizeof(err)) == -1);
		CHECK(t.id != NULL && err[0] != '\0');
		queue_task_free(&t);
	}
	for (i = 0; i < sizeof(no_id) / sizeof(*no_id); i++) {
		CHECK(queue_task_decode(no_id[i], strlen(no_id[i]) + (i == 5 ? 4 : 0),
		    &t, err, sizeof(err)) == -2);
		CHECK(t.id == NULL);
		queue_task_free(&t);
	}
	/* Oversized, but the id can be read: refused with a reason. */
	big = malloc(n + 1);
	memset(big, ' ', n);
	memcpy(big, "{\"id\":\"big\"", 11);
	big[n - 1] = '}';
	big[n] = '\0';
	CHECK(queue_task_decode(big, n, &t, err, sizeof(err)) == -1);
	CHECK(t.id != NULL && strcmp(t.id, "big") == 0);
	CHECK(strstr(err, "larger") != NULL);
	queue_task_free(&t);
	free(big);
}

/* Kill messages. */
TEST(control_decode)
{
	char err[128], *id;

	CHECK(queue_control_decode("{\"id\":\"101\", \"type\":\"kill\"}", 27, &id,
	    err, sizeof(err)) == 0);
	CHECK_STR(id, "101");
	free(id);
	CHECK(queue_control_decode("{\"id\":\"101\",\"type\":\"stop\"}", 26, &id,
	    err, sizeof(err)) == -1 && id == NULL);
	CHECK(queue_control_decode("{\"type\":\"kill\"}", 15, &id, err,
	    sizeof(err)) == -1 && id == NULL);
}

int
main(void)
{
	log_set_level(LOG_ERROR);
	RUN(url_full);
	RUN(url_defaults_and_errors);
	RUN(task_decode_ok);
	RUN(task_decode_bad);
	RUN(control_decode);
	return t_done();
}
