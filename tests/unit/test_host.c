/* test_host.c - JDK 17 version lines, the worker's JDK variables, probe limits. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "child.h"
#include "envlist.h"
#include "fsutil.h"
#include "log.h"
#include "t.h"
#include "util.h"

static char tmpdir[64];

/* host_jdk17_lines on text; checks the three lines. */
static void
check_lines(const char *text, const char *l0, const char *l1, const char *l2)
{
	char *lines[3];
	int k;

	host_jdk17_lines(text, lines);
	CHECK_STR(lines[0], l0);
	CHECK_STR(lines[1], l1);
	CHECK_STR(lines[2], l2);
	for (k = 0; k < 3; k++)
		free(lines[k]);
}

TEST(jdk17_lines)
{
	/* Plain OpenJDK 17. */
	check_lines("openjdk 17.0.9 2023-10-17\n"
	    "OpenJDK Runtime Environment (build 17.0.9+9)\n"
	    "OpenJDK 64-Bit Server VM (build 17.0.9+9, mixed mode)",
	    "openjdk 17.0.9 2023-10-17",
	    "OpenJDK Runtime Environment (build 17.0.9+9)",
	    "OpenJDK 64-Bit Server VM (build 17.0.9+9, mixed mode)");
	/* Noise before and after (tmp full, _JAVA_OPTIONS), a vendor build
	 * whose first line is matched in lower case, CRLF line ends. */
	check_lines("OpenJDK 64-Bit Server VM warning: Insufficient space\r\n"
	    "   32490\r\n"
	    "OpenJDK 17.0.11 2024-04-23 LTS\r\n"
	    "OpenJDK Runtime Environment TencentKonaJDK (build 17.0.11+1-LTS)\r\n"
	    "Picked up _JAVA_OPTIONS: -Xmx8g\r\n"
	    "OpenJDK 64-Bit Server VM TencentKonaJDK (build 17.0.11+1-LTS, mixed mode, sharing)",
	    "OpenJDK 17.0.11 2024-04-23 LTS",
	    "OpenJDK Runtime Environment TencentKonaJDK (build 17.0.11+1-LTS)",
	    "OpenJDK 64-Bit Server VM TencentKonaJDK (build 17.0.11+1-LTS, mixed mode, sharing)");
	/* The Server VM warning before the version line is not taken: the
	 * marks are searched in order. */
	check_lines("OpenJDK 64-Bit Server VM warning: x\nopenjdk 17 2021-09-14\n",
	    "openjdk 17 2021-09-14", "", "");
	/* Not a JDK 17: nothing, also not the later lines. */
	check_lines("openjdk 11.0.21 2023-10-17\n"
	    "OpenJDK Runtime Environment (build 11.0.21+9)\n"
	    "OpenJDK 64-Bit Server VM (build 11.0.21+9, mixed mode)", "", "", "");
	check_lines("openjdk version \"1.8.0_392\"\n"
	    "OpenJDK Runtime Environment (build 1.8.0_392-b08)\n"
	    "OpenJDK 64-Bit Server VM (build 25.392-b08, mixed mode)", "", "", "");
	check_lines("", "", "", "");
	/* A missing middle line leaves the third one unfound too. */
	check_lines("openjdk 17.0.1\nOpenJDK 64-Bit Server VM (build 17)\n",
	    "openjdk 17.0.1", "", "");
}

/* Value of key in env, "(unset)" when absent. */
static const char *
env_val(const struct envlist *e, const char *key)
{
	const char *v = envlist_get(e, key);

	return v != NULL ? v : "(unset)";
}

TEST(worker_env)
{
	char old[PATH_MAX], *jdk8, *jdk17, *j8, *j17;
	struct envlist env;

	CHECK(getcwd(old, sizeof(old)) != NULL);
	CHECK(chdir(tmpdir) == 0);
	jdk8 = xasprintf("%s/jdk", tmpdir);
	jdk17 = xasprintf("%s/jdk17", tmpdir);
	A.cfg.jdk_dir_resolved = jdk8;
	A.cfg.jdk17_dir_resolved = jdk17;
	j8 = host_java_in(jdk8);
	j17 = host_java_in(jdk17);

	/* Nothing installed: empty values, JDK 8 is the latest java. */
	envlist_init(&env, 0);
	host_worker_env(&env);
	CHECK_STR(env_val(&env, "DEVOPS_AGENT_JDK_8_PATH"), "");
	CHECK_STR(env_val(&env, "DEVOPS_AGENT_JDK_17_PATH"), "");
	CHECK_STR(env_val(&env, "DEVOPS_AGENT_INSTALL_MODE"), "");
	envlist_free(&env);

	/* JDK 8 only. */
	CHECK(fs_mkdir_p("jdk/bin", 0755) == 0);
	CHECK(fs_write_atomic("jdk/bin/java", "#!/bin/sh\n", 10, 0755) == 0);
	CHECK(fs_write_atomic(".install_type", "  service\n", 10, 0644) == 0);
	envlist_init(&env, 0);
	host_worker_env(&env);
	CHECK_STR(env_val(&env, "DEVOPS_AGENT_JDK_8_PATH"), j8);
	CHECK_STR(env_val(&env, "DEVOPS_AGENT_JDK_17_PATH"), "");
	CHECK_STR(env_val(&env, "DEVOPS_AGENT_INSTALL_MODE"), "SERVICE");
	envlist_free(&env);
	{
		char *latest = agent_java_path();

		CHECK_STR(latest, j8);
		free(latest);
	}

	/* Both: JDK 17 is the latest java. An empty jdk17/ is not enough. */
	CHECK(fs_mkdir_p("jdk17", 0755) == 0);
	{
		char *latest = agent_java_path();

		CHECK_STR(latest, j8);
		free(latest);
	}
	CHECK(fs_mkdir_p("jdk17/bin", 0755) == 0);
	CHECK(fs_write_atomic("jdk17/bin/java", "#!/bin/sh\n", 10, 0755) == 0);
	envlist_init(&env, 0);
	host_worker_env(&env);
	CHECK_STR(env_val(&env, "DEVOPS_AGENT_JDK_8_PATH"), j8);
	CHECK_STR(env_val(&env, "DEVOPS_AGENT_JDK_17_PATH"), j17);
	envlist_free(&env);
	{
		char *latest = agent_java_path();

		CHECK_STR(latest, j17);
		free(latest);
	}

	/* .install_type that is not a regular file: "" (never blocks). */
	CHECK(unlink(".install_type") == 0);
	CHECK(mkfifo(".install_type", 0644) == 0);
	envlist_init(&env, 0);
	host_worker_env(&env);
	CHECK_STR(env_val(&env, "DEVOPS_AGENT_INSTALL_MODE"), "");
	envlist_free(&env);
	CHECK(unlink(".install_type") == 0);

	A.cfg.jdk_dir_resolved = A.cfg.jdk17_dir_resolved = NULL;
	free(jdk8);
	free(jdk17);
	free(j8);
	free(j17);
	CHECK(chdir(old) == 0);
}

/* 1 when pid is a zombie (killed, waiting for init to reap it). */
static int
proc_zombie(pid_t pid)
{
	char path[64], *text = NULL, *rp;
	int z = 0;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if (fs_read_file(path, 4096, &text, NULL) == -1)
		return 0;
	rp = strrchr(text, ')');
	z = rp != NULL && rp[1] == ' ' && rp[2] == 'Z';
	free(text);
	return z;
}

TEST(probe_is_bounded)
{
	/* Closes its output but keeps running; then a grandchild that keeps
	 * the pipe open. Both end within the limit, the group killed. */
	char *a[] = { "/bin/sh", "-c", "exec >/dev/null 2>&1; sleep 30", NULL };
	char *b[] = { "/bin/sh", "-c", "echo hi; sleep 30 & wait", NULL };
	char *c[] = { "/bin/sh", "-c", "echo openjdk 17; exit 0", NULL };
	char *out = NULL, *pidfile = xasprintf("%s/gc.pid", tmpdir);
	char *d[] = { "/bin/sh", "-c", NULL, NULL };
	int64_t t0;
	int status = 0;
	long long gc;
	char *text;

	t0 = mono_ms();
	CHECK(child_run_capture(a, "/", 500, 4096, &out, &status) == -1);
	CHECK(errno == ETIMEDOUT && out == NULL);
	CHECK(mono_ms() - t0 < 10000);
	CHECK(child_run_capture(b, "/", 500, 4096, &out, &status) == -1);
	CHECK(errno == ETIMEDOUT);
	CHECK(child_run_capture(c, "/", 5000, 4096, &out, &status) == 0);
	CHECK(out != NULL && strcmp(out, "openjdk 17\n") == 0);
	free(out);
	out = NULL;
	/* The grandchild of an overrun is killed too. */
	d[2] = xasprintf("sleep 30 & echo $! > %s; wait", pidfile);
	CHECK(child_run_capture(d, "/", 500, 4096, &out, &status) == -1);
	CHECK(fs_read_file(pidfile, 64, &text, NULL) == 0);
	CHECK(str_to_ll(text, &gc) == 0 && gc > 1);
	free(text);
	{
		int gone = 0, i;

		for (i = 0; i < 200 && !gone; i++) {
			gone = kill((pid_t)gc, 0) == -1 && errno == ESRCH;
			if (!gone)
				gone = proc_zombie((pid_t)gc);
			if (!gone)
				usleep(10000);
		}
		CHECK(gone);
	}
	free(d[2]);
	free(pidfile);
}

/* host_proxy_lookup(name) as a string, "(none)" for NULL. */
static const char *
lookup(const char *name)
{
	const char *v = host_proxy_lookup(name);

	return v != NULL ? v : "(none)";
}

TEST(proxy_lookup_order)
{
	A.cfg.http_proxy = xstrdup("http://persisted:1");
	A.cfg.https_proxy = xstrdup("");
	A.cfg.no_proxy = xstrdup("");
	unsetenv("HTTP_PROXY");
	unsetenv("http_proxy");
	unsetenv("HTTPS_PROXY");
	unsetenv("https_proxy");
	unsetenv("NO_PROXY");
	unsetenv("no_proxy");

	/* Before any heartbeat envs: the persisted key first. */
	setenv("HTTP_PROXY", "http://env-upper:2", 1);
	CHECK_STR(lookup("HTTP_PROXY"), "http://persisted:1");
	CHECK_STR(lookup("HTTPS_PROXY"), "(none)");
	CHECK_STR(lookup("OTHER"), "(none)");

	/* With envs: envs upper, env upper, envs lower, env lower, key. */
	A.envs = cJSON_Parse("{\"HTTP_PROXY\":\"http://envs-upper:3\","
	    "\"http_proxy\":\"http://envs-lower:4\",\"HTTPS_PROXY\":\"\","
	    "\"https_proxy\":\"http://envs-lower-s:5\"}");
	CHECK_STR(lookup("HTTP_PROXY"), "http://envs-upper:3");
	cJSON_DeleteItemFromObjectCaseSensitive(A.envs, "HTTP_PROXY");
	CHECK_STR(lookup("HTTP_PROXY"), "http://env-upper:2");
	unsetenv("HTTP_PROXY");
	setenv("http_proxy", "http://env-lower:6", 1);
	CHECK_STR(lookup("HTTP_PROXY"), "http://envs-lower:4");
	cJSON_DeleteItemFromObjectCaseSensitive(A.envs, "http_proxy");
	CHECK_STR(lookup("HTTP_PROXY"), "http://env-lower:6");
	unsetenv("http_proxy");
	CHECK_STR(lookup("HTTP_PROXY"), "http://persisted:1");
	/* An empty value is skipped. */
	CHECK_STR(lookup("HTTPS_PROXY"), "http://envs-lower-s:5");
	setenv("NO_PROXY", "", 1);
	setenv("no_proxy", "localhost", 1);
	CHECK_STR(lookup("NO_PROXY"), "localhost");
	unsetenv("NO_PROXY");
	unsetenv("no_proxy");

	cJSON_Delete(A.envs);
	A.envs = NULL;
	xfree_ptr(&A.cfg.http_proxy);
	xfree_ptr(&A.cfg.https_proxy);
	xfree_ptr(&A.cfg.no_proxy);
}

TEST(proxy_from_envs)
{
	cJSON *e;

	A.cfg.http_proxy = xstrdup("http://old:1");
	A.cfg.https_proxy = xstrdup("http://old:2");
	A.cfg.no_proxy = xstrdup("");
	/* No envs in the answer: nothing changes. */
	CHECK(host_proxy_from_envs(NULL) == 0);
	CHECK_STR(A.cfg.http_proxy, "http://old:1");
	/* Upper case wins (even empty), lower case next, trimmed; a name
	 * that is missing clears its key (HEAD). */
	e = cJSON_Parse("{\"HTTP_PROXY\":\" http://new:3 \",\"http_proxy\":\"x\","
	    "\"no_proxy\":\".example.com\",\"OTHER\":\"y\"}");
	CHECK(host_proxy_from_envs(e) == 1);
	CHECK_STR(A.cfg.http_proxy, "http://new:3");
	CHECK_STR(A.cfg.https_proxy, "");
	CHECK_STR(A.cfg.no_proxy, ".example.com");
	CHECK(host_proxy_from_envs(e) == 0);		/* unchanged */
	cJSON_Delete(e);
	e = cJSON_Parse("{\"HTTP_PROXY\":\"\",\"http_proxy\":\"http://lower:4\"}");
	CHECK(host_proxy_from_envs(e) == 1);
	CHECK_STR(A.cfg.http_proxy, "");
	CHECK_STR(A.cfg.no_proxy, "");
	cJSON_Delete(e);
	xfree_ptr(&A.cfg.http_proxy);
	xfree_ptr(&A.cfg.https_proxy);
	xfree_ptr(&A.cfg.no_proxy);
}

int
main(void)
{
	int rc;

	log_set_level(LOG_ERROR);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_host.XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	RUN(jdk17_lines);
	RUN(worker_env);
	RUN(probe_is_bounded);
	RUN(proxy_lookup_order);
	RUN(proxy_from_envs);
	rc = t_done();
	if (fs_rm_rf(tmpdir) == -1)
		perror(tmpdir);
	return rc;
}
