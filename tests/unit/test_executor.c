/* test_executor.c - the safe script executor (common/executor.h). */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "ev.h"
#include "executor.h"
#include "fsutil.h"
#include "http.h"
#include "log.h"
#include "proc.h"
#include "t.h"
#include "util.h"

static char root[1024];	/* real path of a fresh temp dir */
static char ws[2048];	/* root/ws */

static struct exec_result *last;
static int ndone;

/* Keep the delivered result for the test to look at. */
static void
on_done(struct exec_result *r, void *arg)
{
	(void)arg;
	exec_result_free(last);
	last = r;
	ndone++;
}

static char seen[4096];

/* Recovery callback: remember the ids handed out (" id1  id2 "). */
static void
on_seen(struct exec_result *r, void *arg)
{
	size_t n = strlen(seen);

	(void)arg;
	snprintf(seen + n, sizeof(seen) - n, " %s ", r->id);
	exec_result_free(r);
}

static void
on_chld(int signo, void *arg)
{
	(void)signo;
	(void)arg;
	child_reap();
}

/* Turn the loop until a result arrived (or 20 s passed). */
static int
wait_done(int want)
{
	int64_t end = mono_ms() + 20000;

	while (ndone < want && mono_ms() < end)
		ev_run_once(50);
	return ndone >= want;
}

static struct executor *
new_exec(const char *allowlist, int64_t grace)
{
	struct exec_config c = { .workspace = ws, .allowlist = allowlist,
	    .kill_grace_ms = grace };
	char err[256];
	struct executor *e = exec_new(&c, err, sizeof(err));

	if (e == NULL)
		fprintf(stderr, "exec_new: %s\n", err);
	return e;
}

/* Start an inline script task; returns the exec_start code. */
static enum exec_error
run(struct executor *e, const char *id, const char *script, int64_t timeout_ms,
    char *err, size_t errlen)
{
	struct exec_request r;

	memset(&r, 0, sizeof(r));
	r.id = id;
	r.tag = "test";
	r.script = script;
	r.timeout_ms = timeout_ms;
	return exec_start(e, &r, on_done, NULL, err, errlen);
}

static char *
slurp(const char *path)
{
	char *buf = NULL;

	if (fs_read_file(path, 64 * 1024 * 1024, &buf, NULL) == -1)
		return NULL;
	return buf;
}

TEST(id_validation)
{
	CHECK(exec_id_valid("qvzxnbml"));
	CHECK(exec_id_valid("a.b_c-9"));
	CHECK(!exec_id_valid(""));
	CHECK(!exec_id_valid("."));
	CHECK(!exec_id_valid(".."));
	CHECK(!exec_id_valid("a/b"));
	CHECK(!exec_id_valid("../x"));
	CHECK(!exec_id_valid("a b"));
	CHECK(!exec_id_valid(NULL));
}

TEST(resolve_rejects_escapes)
{
	char out[PATH_MAX], err[256], want[PATH_MAX * 2], p[PATH_MAX * 2];

	CHECK(exec_resolve(ws, "a", out, sizeof(out), err, sizeof(err)) == 0);
	snprintf(want, sizeof(want), "%s/a", ws);
	CHECK_STR(out, want);
	CHECK(exec_resolve(ws, "a/b/../c/./", out, sizeof(out), err, sizeof(err)) == 0);
	snprintf(want, sizeof(want), "%s/a/c", ws);
	CHECK_STR(out, want);
	CHECK(exec_resolve(ws, "../x", out, sizeof(out), err, sizeof(err)) == -1);
	CHECK(strstr(err, "leaves the workspace") != NULL);
	CHECK(exec_resolve(ws, "a/../../x", out, sizeof(out), err, sizeof(err)) == -1);
	CHECK(exec_resolve(ws, "/etc", out, sizeof(out), err, sizeof(err)) == -1);
	CHECK(exec_resolve(ws, "", out, sizeof(out), err, sizeof(err)) == -1);

	/* A symlink out of the workspace, used directly or as a parent. */
	snprintf(p, sizeof(p), "%s/out", ws);
	CHECK(symlink(root, p) == 0);
	CHECK(exec_resolve(ws, "out", out, sizeof(out), err, sizeof(err)) == -1);
	CHECK(strstr(err, "symlink") != NULL);
	CHECK(exec_resolve(ws, "out/new/dir", out, sizeof(out), err, sizeof(err)) == -1);
	/* A dangling one (its target could be created later). */
	snprintf(p, sizeof(p), "%s/dangling", ws);
	CHECK(symlink("/nonexistent-exec-test/x", p) == 0);
	CHECK(exec_resolve(ws, "dangling", out, sizeof(out), err, sizeof(err)) == -1);
	/* A symlink that stays inside is fine. */
	snprintf(p, sizeof(p), "%s/sub", ws);
	CHECK(mkdir(p, 0755) == 0);
	snprintf(p, sizeof(p), "%s/in", ws);
	CHECK(symlink("sub", p) == 0);
	CHECK(exec_resolve(ws, "in/x", out, sizeof(out), err, sizeof(err)) == 0);
	snprintf(want, sizeof(want), "%s/sub/x", ws);
	CHECK_STR(out, want);
}

TEST(wrap_script_follows_section_8)
{
	char *s = exec_wrap_script("df -h\nuptime", "/opt/my dir");

	CHECK_STR(s, "#!/bin/bash\n\nset -e\ncd '/opt/my dir'\ndf -h\nuptime\n");
	free(s);
	s = exec_wrap_script("  #!/bin/sh  \necho hi", "/w");
	CHECK_STR(s, "#!/bin/sh\nset -e\ncd '/w'\necho hi\n");
	free(s);
}

TEST(parse_env)
{
	cJSON *p = NULL;
	int bad = exec_parse_env("A=1\n# comment\n\n export B = two words \n"
	    "C=\"quoted\"\nD='single'\nbad line\n9X=no\nA=again\nE=\n", &p);

	CHECK(bad == 2);
	CHECK_STR(cJSON_GetObjectItem(p, "A")->valuestring, "again");
	CHECK_STR(cJSON_GetObjectItem(p, "B")->valuestring, "two words");
	CHECK_STR(cJSON_GetObjectItem(p, "C")->valuestring, "quoted");
	CHECK_STR(cJSON_GetObjectItem(p, "D")->valuestring, "single");
	CHECK_STR(cJSON_GetObjectItem(p, "E")->valuestring, "");
	CHECK(cJSON_GetArraySize(p) == 5);
	cJSON_Delete(p);
}

TEST(allowlist)
{
	char path[PATH_MAX * 2], hex[65], err[256], *text;

	exec_sha256_hex("abc", 3, hex);
	CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	snprintf(path, sizeof(path), "%s/allow.txt", root);
	text = xasprintf("# allowed scripts\nBA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD  abc.sh\n");
	CHECK(fs_write_atomic(path, text, strlen(text), 0644) == 0);
	free(text);
	CHECK(exec_allowed(path, "abc", 3, err, sizeof(err)) == 1);
	CHECK(exec_allowed(path, "abd", 3, err, sizeof(err)) == 0);
	CHECK(strstr(err, "not in the allow-list") != NULL);
	CHECK(exec_allowed("/nonexistent/allow", "abc", 3, err, sizeof(err)) == 0);
}

TEST(success_is_persisted_and_never_rerun)
{
	struct executor *e = new_exec(NULL, 500);
	struct exec_result *r = NULL;
	char err[512], *s, path[PATH_MAX * 2];

	ndone = 0;
	CHECK(run(e, "ok1", "echo hello\necho err >&2\necho \"id=$DEVOPS_TASK_ID\"",
	    0, err, sizeof(err)) == EXEC_OK);
	CHECK(exec_is_running(e, "ok1"));
	CHECK(wait_done(1));
	CHECK(last != NULL && last->status == EXEC_SUCCESS);
	CHECK(last != NULL && last->exit_code == 0);
	CHECK_STR(last ? last->output : NULL, "hello\nerr\nid=ok1\n");
	CHECK_STR(last ? last->error : NULL, "");
	CHECK(last != NULL && last->output_bytes == 17);
	CHECK(exec_running(e) == 0);
	/* Done flag on disk; a second start is refused. */
	CHECK(exec_load(e, "ok1", &r) == 1);
	CHECK(r != NULL && r->done && !r->reported && r->status == EXEC_SUCCESS);
	exec_result_free(r);
	CHECK(run(e, "ok1", "echo again", 0, err, sizeof(err)) == EXEC_E_EXISTS);
	CHECK(exec_mark_reported(e, "ok1") == 0);
	CHECK(exec_load(e, "ok1", &r) == 1);
	CHECK(r != NULL && r->reported);
	exec_result_free(r);
	/* The full output and the debug script. */
	snprintf(path, sizeof(path), "%s/ok1/output.log", ws);
	s = slurp(path);
	CHECK(s != NULL && strstr(s, "=== Execution Started ===") != NULL);
	CHECK(s != NULL && strstr(s, "hello\nerr\n") != NULL);
	CHECK(s != NULL && strstr(s, "Status: SUCCESS") != NULL);
	free(s);
	snprintf(path, sizeof(path), "%s/ok1/debug.sh", ws);
	{
		char *argv[] = { "/bin/sh", path, NULL }, *out = NULL;
		int st = 0;
		CHECK(child_run_capture(argv, "/", 10000, 4096, &out, &st) == 0);
		CHECK_STR(out, "hello\nerr\nid=ok1\n");
		free(out);
	}
	exec_free(e);
}

TEST(failure_reports_exit_status)
{
	struct executor *e = new_exec(NULL, 500);
	char err[512];

	ndone = 0;
	CHECK(run(e, "fail1", "echo before\nexit 3\necho after", 0, err,
	    sizeof(err)) == EXEC_OK);
	CHECK(wait_done(1));
	CHECK(last != NULL && last->status == EXEC_FAILURE);
	CHECK(last != NULL && last->exit_code == 3);
	CHECK_STR(last ? last->error : NULL, "exit status 3");
	CHECK_STR(last ? last->output : NULL, "before\n");
	/* set -e: the first failing command ends the script. */
	CHECK(run(e, "fail2", "false\necho not reached", 0, err, sizeof(err)) == EXEC_OK);
	CHECK(wait_done(2));
	CHECK_STR(last ? last->error : NULL, "exit status 1");
	CHECK_STR(last ? last->output : NULL, "");
	exec_free(e);
}

/* 1 when this process runs under valgrind (its preload library is in). */
static int
under_valgrind(void)
{
	const char *p = getenv("LD_PRELOAD");

	return p != NULL && strstr(p, "vgpreload") != NULL;
}

TEST(exec_failure_is_a_reported_failure)
{
	struct executor *e = new_exec(NULL, 500);
	char err[512];

	ndone = 0;
	/* The kernel cannot run the script: delivered from the loop, persisted. */
	CHECK(run(e, "noexec", "#!/nonexistent/interpreter\necho hi", 0, err,
	    sizeof(err)) == EXEC_OK);
	CHECK(ndone == 0);
	CHECK(wait_done(1));
	CHECK(last != NULL && last->status == EXEC_FAILURE);
	CHECK(last != NULL && strstr(last->error, "start: exec") != NULL);
	CHECK(run(e, "noexec", "echo again", 0, err, sizeof(err)) == EXEC_E_EXISTS);
	exec_free(e);
}

TEST(timeout_kills_the_whole_group)
{
	struct executor *e = new_exec(NULL, 300);
	char err[512], path[PATH_MAX * 2], *pidtext;
	long long pid = 0;

	ndone = 0;
	/* Everything ignores SIGTERM, so only the SIGKILL after the grace works. */
	CHECK(run(e, "slow", "trap '' TERM\nsleep 3001 &\necho $! > grandchild.pid\n"
	    "echo started\nsleep 3002\necho never", 500, err, sizeof(err)) == EXEC_OK);
	CHECK(wait_done(1));
	CHECK(last != NULL && last->status == EXEC_TIMEOUT);
	CHECK_STR(last ? last->error : NULL, "timed out after 0 s");
	CHECK_STR(last ? last->output : NULL, "started\n");
	snprintf(path, sizeof(path), "%s/slow/grandchild.pid", ws);
	pidtext = slurp(path);
	CHECK(pidtext != NULL && str_to_ll(pidtext, &pid) == 0 && pid > 1);
	free(pidtext);
	/* Reported only after the kill: nothing of the task is alive. */
	CHECK(pid > 1 && !proc_alive((pid_t)pid));
	exec_free(e);
}

TEST(leftover_background_process_is_ended)
{
	struct executor *e = new_exec(NULL, 300);
	char err[512], path[PATH_MAX * 2], *pidtext;
	long long pid = 0;

	ndone = 0;
	/* The leader exits at once; its background child holds the pipe. */
	CHECK(run(e, "bg", "sleep 3003 &\necho $! > bg.pid\necho done", 0, err,
	    sizeof(err)) == EXEC_OK);
	CHECK(wait_done(1));
	CHECK(last != NULL && last->status == EXEC_SUCCESS);
	CHECK_STR(last ? last->output : NULL, "done\n");
	snprintf(path, sizeof(path), "%s/bg/bg.pid", ws);
	pidtext = slurp(path);
	CHECK(pidtext != NULL && str_to_ll(pidtext, &pid) == 0 && pid > 1);
	free(pidtext);
	CHECK(pid > 1 && !proc_alive((pid_t)pid));
	exec_free(e);
}

TEST(large_output_keeps_the_tail)
{
	struct executor *e = new_exec(NULL, 500);
	char err[512], path[PATH_MAX * 2], *want, *p;
	struct stat st;
	size_t i, n = 0;
	int k;

	ndone = 0;
	/* 200000 numbered lines: about 1.3 MB. */
	CHECK(run(e, "big", "seq 1 200000", 0, err, sizeof(err)) == EXEC_OK);
	CHECK(wait_done(1));
	CHECK(last != NULL && last->status == EXEC_SUCCESS);
	want = xmalloc(2 * 1024 * 1024);
	for (k = 1; k <= 200000; k++)
		n += (size_t)snprintf(want + n, 2 * 1024 * 1024 - n, "%d\n", k);
	CHECK(last != NULL && last->output_bytes == (long long)n);
	p = want + n - EXEC_TAIL_MAX;
	CHECK(last != NULL && strlen(last->output) == EXEC_TAIL_MAX);
	CHECK(last != NULL && strcmp(last->output, p) == 0);
	snprintf(path, sizeof(path), "%s/big/output.log", ws);
	CHECK(stat(path, &st) == 0 && st.st_size > (off_t)n);
	(void)i;
	free(want);
	exec_free(e);
}

TEST(invalid_utf8_becomes_replacement_char)
{
	struct executor *e = new_exec(NULL, 500);
	char err[512];

	ndone = 0;
	CHECK(run(e, "utf8", "printf 'a\\377b\\303\\251\\000c'", 0, err,
	    sizeof(err)) == EXEC_OK);
	CHECK(wait_done(1));
	CHECK_STR(last ? last->output : NULL, "a\xEF\xBF\xBD" "b\xC3\xA9\xEF\xBF\xBD" "c");
	exec_free(e);
}

TEST(output_env_becomes_params)
{
	struct executor *e = new_exec(NULL, 500);
	char err[512];
	cJSON *v;

	ndone = 0;
	CHECK(run(e, "envout", "echo 'VERSION=1.2.3' > output.env\n"
	    "echo 'export NAME=\"two words\"' >> \"$DEVOPS_TASK_OUTPUT_ENV\"\n"
	    "echo 'broken' >> output.env\nexit 4", 0, err, sizeof(err)) == EXEC_OK);
	CHECK(wait_done(1));
	/* Collected on failure too. */
	CHECK(last != NULL && last->status == EXEC_FAILURE);
	v = last ? cJSON_GetObjectItem(last->params, "VERSION") : NULL;
	CHECK(v != NULL && strcmp(v->valuestring, "1.2.3") == 0);
	v = last ? cJSON_GetObjectItem(last->params, "NAME") : NULL;
	CHECK(v != NULL && strcmp(v->valuestring, "two words") == 0);
	CHECK(last != NULL && cJSON_GetArraySize(last->params) == 2);
	exec_free(e);
}

TEST(requests_that_escape_are_refused)
{
	struct executor *e = new_exec(NULL, 500);
	struct exec_request r;
	char err[512], p[PATH_MAX * 2];

	memset(&r, 0, sizeof(r));
	r.id = "esc1";
	r.script = "echo hi";
	r.workdir = "../../tmp";
	CHECK(exec_start(e, &r, on_done, NULL, err, sizeof(err)) == EXEC_E_REQUEST);
	CHECK(strstr(err, "leaves the workspace") != NULL);
	r.workdir = NULL;
	r.id = "../esc2";
	CHECK(exec_start(e, &r, on_done, NULL, err, sizeof(err)) == EXEC_E_REQUEST);
	/* A task dir planted as a symlink to the outside. */
	snprintf(p, sizeof(p), "%s/esc3", ws);
	CHECK(symlink(root, p) == 0);
	r.id = "esc3";
	CHECK(exec_start(e, &r, on_done, NULL, err, sizeof(err)) == EXEC_E_REQUEST);
	snprintf(p, sizeof(p), "%s/script.sh", root);
	CHECK(!fs_exists(p));
	r.id = "esc4";
	r.script = NULL;
	r.script_path = "../../bin/sh";
	CHECK(exec_start(e, &r, on_done, NULL, err, sizeof(err)) == EXEC_E_REQUEST);
	r.script_path = NULL;
	r.user = "no-such-user-exec-test";
	r.script = "echo hi";
	CHECK(exec_start(e, &r, on_done, NULL, err, sizeof(err)) == EXEC_E_REQUEST);
	CHECK(strstr(err, "not found") != NULL);
	exec_free(e);
}

TEST(script_path_and_allowlist)
{
	char allow[PATH_MAX * 2], script[PATH_MAX * 2], hex[65], err[512], *text;
	const char *body = "#!/bin/sh\necho \"args: $*\"\n";
	char *args[] = { "one", "two words", NULL };
	struct exec_request r;
	struct executor *e;

	snprintf(script, sizeof(script), "%s/tools", ws);
	CHECK(fs_mkdir_p(script, 0755) == 0);
	snprintf(script, sizeof(script), "%s/tools/hello.sh", ws);
	CHECK(fs_write_atomic(script, body, strlen(body), 0755) == 0);
	exec_sha256_hex(body, strlen(body), hex);
	snprintf(allow, sizeof(allow), "%s/allow2.txt", root);
	text = xasprintf("%s  tools/hello.sh\n", hex);
	CHECK(fs_write_atomic(allow, text, strlen(text), 0644) == 0);
	free(text);
	e = new_exec(allow, 500);
	ndone = 0;
	memset(&r, 0, sizeof(r));
	r.id = "path1";
	r.script_path = "tools/hello.sh";
	r.args = args;
	r.workdir = "shared/wd";
	CHECK(exec_start(e, &r, on_done, NULL, err, sizeof(err)) == EXEC_OK);
	CHECK(wait_done(1));
	CHECK_STR(last ? last->output : NULL, "args: one two words\n");
	/* An inline script that is not listed is refused before anything runs. */
	CHECK(run(e, "inline1", "echo hi", 0, err, sizeof(err)) == EXEC_E_DENIED);
	CHECK(strstr(err, "not in the allow-list") != NULL);
	snprintf(script, sizeof(script), "%s/inline1/result.json", ws);
	CHECK(!fs_exists(script));
	exec_free(e);
}

TEST(recover_reports_once_and_ends_interrupted_tasks)
{
	struct executor *e = new_exec(NULL, 500);
	char dir[3072], path[PATH_MAX];
	const char *running = "{\"id\":\"int1\",\"tag\":\"test\",\"status\":\"RUNNING\","
	    "\"done\":false,\"reported\":false,\"exitCode\":-1,\"signal\":0,"
	    "\"start\":1000,\"end\":0,\"durationMs\":0,\"outputBytes\":0,"
	    "\"output\":\"\",\"error\":\"\",\"params\":{},\"pid\":999999,"
	    "\"procStart\":12345}";
	const char *log_text = "=== Execution Started ===\npartial output\n";

	snprintf(dir, sizeof(dir), "%s/int1", ws);
	CHECK(fs_mkdir_p(dir, 0755) == 0);
	snprintf(path, sizeof(path), "%s/result.json", dir);
	CHECK(fs_write_atomic(path, running, strlen(running), 0644) == 0);
	snprintf(path, sizeof(path), "%s/output.log", dir);
	CHECK(fs_write_atomic(path, log_text, strlen(log_text), 0644) == 0);
	ndone = 0;
	/* Only "test" tasks: ok1 (reported), fail1... (unreported), int1. */
	CHECK(exec_recover(e, "other-tag", on_done, NULL) == 0);
	CHECK(exec_recover(e, "test", on_done, NULL) >= 2);
	CHECK(ndone >= 2);
	{
		struct exec_result *r = NULL;
		CHECK(exec_load(e, "int1", &r) == 1);
		CHECK(r != NULL && r->status == EXEC_FAILURE && r->done);
		CHECK(r != NULL && strstr(r->error, "interrupted") != NULL);
		CHECK(r != NULL && strstr(r->output, "partial output") != NULL);
		exec_result_free(r);
	}
	/* Once marked reported, a result is never handed out again. */
	CHECK(exec_mark_reported(e, "int1") == 0);
	CHECK(exec_mark_reported(e, "fail1") == 0);
	seen[0] = '\0';
	(void)exec_recover(e, "test", on_seen, NULL);
	CHECK(strstr(seen, " int1 ") == NULL);
	CHECK(strstr(seen, " fail1 ") == NULL);
	CHECK(strstr(seen, " ok1 ") == NULL);
	CHECK(strstr(seen, " fail2 ") != NULL);
	exec_free(e);
}

TEST(prune_removes_only_old_reported_tasks)
{
	struct executor *e = new_exec(NULL, 500);
	char path[PATH_MAX * 2], err[512];
	struct timeval old[2] = { { 1000000, 0 }, { 1000000, 0 } };

	ndone = 0;
	CHECK(run(e, "p-old", "echo x", 0, err, sizeof(err)) == EXEC_OK);
	CHECK(run(e, "p-unrep", "echo y", 0, err, sizeof(err)) == EXEC_OK);
	CHECK(run(e, "p-new", "echo z", 0, err, sizeof(err)) == EXEC_OK);
	CHECK(wait_done(3));
	CHECK(exec_mark_reported(e, "p-old") == 0);
	CHECK(exec_mark_reported(e, "p-new") == 0);
	snprintf(path, sizeof(path), "%s/p-old/result.json", ws);
	CHECK(utimes(path, old) == 0);
	snprintf(path, sizeof(path), "%s/p-unrep/result.json", ws);
	CHECK(utimes(path, old) == 0);
	/* Not a task dir: never touched. */
	snprintf(path, sizeof(path), "%s/shared", ws);
	CHECK(fs_mkdir_p(path, 0755) == 0 && utimes(path, old) == 0);
	CHECK(exec_prune(e, 3600) >= 1);
	snprintf(path, sizeof(path), "%s/p-old", ws);
	CHECK(!fs_exists(path));
	snprintf(path, sizeof(path), "%s/p-unrep", ws);
	CHECK(fs_exists(path));
	snprintf(path, sizeof(path), "%s/p-new", ws);
	CHECK(fs_exists(path));
	snprintf(path, sizeof(path), "%s/shared", ws);
	CHECK(fs_exists(path));
	exec_free(e);
}

TEST(shutdown_stops_running_tasks)
{
	struct executor *e = new_exec(NULL, 300);
	char err[512];

	ndone = 0;
	CHECK(run(e, "long1", "echo up\nsleep 3004", 0, err, sizeof(err)) == EXEC_OK);
	/* Let it start and print. */
	{
		int64_t end = mono_ms() + 500;
		while (mono_ms() < end)
			ev_run_once(50);
	}
	exec_shutdown(e, 2000);
	CHECK(ndone == 1);
	CHECK(last != NULL && last->status == EXEC_FAILURE);
	CHECK(last != NULL && strstr(last->error, "shutting down") != NULL);
	CHECK(exec_running(e) == 0);
	exec_free(e);
}

static int slack_fired[2];

/* A timer callback of timer_slack_shares_a_wakeup: counts its firing. */
static void
slack_fire(void *arg)
{
	slack_fired[*(int *)arg]++;
}

/*
 * A due timer with slack does not wake the loop by itself: the turn sleeps
 * until the other timer, and both fire at that one wakeup (without slack
 * the turn would return at once with only the first fired).
 */
TEST(timer_slack_shares_a_wakeup)
{
	static int ids[2] = { 0, 1 };
	struct timer lazy, strict;

	timer_init(&lazy, "lazy", slack_fire, &ids[0]);
	timer_init(&strict, "strict", slack_fire, &ids[1]);
	timer_set_slack(&lazy, 60000);
	timer_set(&lazy, 0);
	timer_set(&strict, 30);
	ev_run_once(10000);
	CHECK(slack_fired[0] == 1);
	CHECK(slack_fired[1] == 1);
	timer_cancel(&lazy);
	timer_cancel(&strict);
}

int
main(void)
{
	char tmpl[] = "/tmp/test_executor.XXXXXX";
	struct http_settings hs = { "p", "a", "test-secret-key",
	    "http://127.0.0.1:9", 1000, NULL, NULL };
	char *cmd, real[PATH_MAX];

	if (mkdtemp(tmpl) == NULL || realpath(tmpl, real) == NULL ||
	    strlcpy_(root, real, sizeof(root)) >= sizeof(root))
		return 1;
	snprintf(ws, sizeof(ws), "%s/ws", root);
	log_set_level(LOG_ERROR);
	if (ev_init() == -1 || http_init(&hs) == -1 ||
	    ev_signal(SIGCHLD, on_chld, NULL) == -1)
		return 1;
	RUN(timer_slack_shares_a_wakeup);
	RUN(id_validation);
	if (fs_mkdir_p(ws, 0755) == -1)
		return 1;
	RUN(resolve_rejects_escapes);
	RUN(wrap_script_follows_section_8);
	RUN(parse_env);
	RUN(allowlist);
	RUN(success_is_persisted_and_never_rerun);
	RUN(failure_reports_exit_status);
	/*
	 * valgrind cannot survive a failing execve in a forked child ("EXEC
	 * FAILED: I can't recover"), so the child never reports the error:
	 * this one case only runs natively (make unit, make check-asan).
	 */
	if (!under_valgrind())
		RUN(exec_failure_is_a_reported_failure);
	RUN(timeout_kills_the_whole_group);
	RUN(leftover_background_process_is_ended);
	RUN(large_output_keeps_the_tail);
	RUN(invalid_utf8_becomes_replacement_char);
	RUN(output_env_becomes_params);
	RUN(requests_that_escape_are_refused);
	RUN(script_path_and_allowlist);
	RUN(recover_reports_once_and_ends_interrupted_tasks);
	RUN(prune_removes_only_old_reported_tasks);
	RUN(shutdown_stops_running_tasks);
	exec_result_free(last);
	http_shutdown();
	cmd = xasprintf("%s", root);
	(void)fs_rm_rf(cmd);
	free(cmd);
	return t_done();
}
