/*
 * fuzz_properties.c - .agent.properties (agent-behaviour §2; common/config.h
 * config_load/config_save): the file an operator or installer writes and
 * every start reads and rewrites.
 *
 * Invariants: a rejected file gets a one-line reason; an accepted one holds
 * the required keys; config_save either writes a file that loads back with
 * the new values and every other key unchanged, or fails and leaves the
 * file byte for byte as it was.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fsutil.h"
#include "fuzz.h"
#include "util.h"

static const char *dir;
static char *path;

/* One-time set-up before the first input. */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	dir = fuzz_scratch_dir("properties");	/* config_save fsyncs each run */
	path = xasprintf("%s/.agent.properties", dir);
	return 0;
}

/* Equal strings, NULL counting as "". */
static int
same(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

/* A new gateway value made from the input: its first bytes, printable. */
static char *
gateway_from(const uint8_t *data, size_t size)
{
	size_t n = size < 24 ? size : 24, i;
	char *g = xmalloc(n + 8);

	memcpy(g, "gw.", 3);
	for (i = 0; i < n; i++)
		g[3 + i] = (char)data[i];
	g[3 + n] = '\0';
	return g;
}

/* One input through the parser, then the invariants. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config c, back;
	char err[512], *before = NULL, *after = NULL, *gw;
	size_t blen = 0, alen = 0;
	int rc;

	if (fs_write_atomic(path, data, size, 0600) == -1)
		abort();
	err[0] = '\0';
	if (config_load(&c, path, "/nonexistent-workdir", err, sizeof(err)) == -1) {
		FUZZ_ASSERT(err[0] != '\0' && strchr(err, '\n') == NULL);
		return 0;
	}
	FUZZ_ASSERT(!str_blank(c.project_id) && c.agent_id && *c.agent_id &&
	    !str_blank(c.secret_key) && !str_blank(c.gateway) && !str_blank(c.env));
	FUZZ_ASSERT(c.parallel_task_count >= 0 && c.docker_parallel_task_count >= 0);
	FUZZ_ASSERT(c.request_timeout_sec > 0 && c.jdk_dir_resolved != NULL);

	/* Change two values; the write-back must be all or nothing. */
	if (fs_read_file(path, (size_t)8 << 20, &before, &blen) == -1)
		abort();
	gw = gateway_from(data, size);
	free(c.gateway);
	c.gateway = gw;
	c.parallel_task_count = c.parallel_task_count == 7 ? 8 : 7;
	rc = config_save(&c, err, sizeof(err));
	if (fs_read_file(path, (size_t)8 << 20, &after, &alen) == -1)
		abort();
	if (rc == -1) {
		FUZZ_ASSERT(errno == EINVAL);
		FUZZ_ASSERT(strchr(err, '\n') == NULL);
		FUZZ_ASSERT(alen == blen && memcmp(before, after, blen) == 0);
	} else {
		FUZZ_ASSERT(config_load(&back, path, "/nonexistent-workdir", err,
		    sizeof(err)) == 0);
		FUZZ_ASSERT(same(back.gateway, c.gateway));
		FUZZ_ASSERT(back.parallel_task_count == c.parallel_task_count);
		FUZZ_ASSERT(same(back.project_id, c.project_id) &&
		    same(back.agent_id, c.agent_id) &&
		    same(back.secret_key, c.secret_key) && same(back.env, c.env) &&
		    same(back.file_gateway, c.file_gateway) &&
		    same(back.slave_user, c.slave_user) &&
		    same(back.language, c.language) &&
		    same(back.jdk_dir, c.jdk_dir));
		FUZZ_ASSERT(back.docker_parallel_task_count ==
		    c.docker_parallel_task_count &&
		    back.request_timeout_sec == c.request_timeout_sec &&
		    back.logs_keep_hours == c.logs_keep_hours &&
		    back.collector_on == c.collector_on &&
		    back.detect_shell == c.detect_shell &&
		    back.docker_enable == c.docker_enable);
		config_free(&back);
	}
	free(before);
	free(after);
	config_free(&c);
	return 0;
}
