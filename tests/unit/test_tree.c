/*
 * test_tree.c - process-tree cleanup (agent/tree.c, issue 6): group and
 * session members found through /proc, SIGTERM then SIGKILL of leftovers
 * once the leader is gone, and the cgroup v2 path where this machine has a
 * writable one (otherwise that test says it is skipped).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "ev.h"
#include "fsutil.h"
#include "http.h"
#include "log.h"
#include "proc.h"
#include "t.h"
#include "tree.h"
#include "util.h"

#define WAIT_MS	10000	/* upper bound of every wait below */

/* Start sh -c script in a new session (optionally in cgroup procs file). */
static pid_t
spawn_sh(const char *script, const char *cgroup_procs)
{
	char *argv[] = { "/bin/sh", "-c", (char *)script, NULL };
	struct spawn_opts o;
	char err[256];
	pid_t pid;

	memset(&o, 0, sizeof(o));
	o.path = argv[0];
	o.argv = argv;
	o.new_session = 1;
	o.stdin_fd = o.stdout_fd = o.stderr_fd = -1;
	o.cgroup_procs = cgroup_procs;
	pid = child_spawn(&o, err, sizeof(err));
	if (pid == -1)
		fprintf(stderr, "  spawn: %s\n", err);
	return pid;
}

/* Poll until the group/session of pid has want members; the count seen. */
static int
wait_members(pid_t pid, int want)
{
	int64_t end = mono_ms() + WAIT_MS;
	int n;

	while ((n = proc_group_members(pid, pid, 0, 0, NULL, 0)) != want &&
	    mono_ms() < end)
		usleep(20000);
	return n;
}

/* Reap pid (our child), waiting at most WAIT_MS. 0 or -1. */
static int
reap(pid_t pid)
{
	int64_t end = mono_ms() + WAIT_MS;
	int status;

	while (mono_ms() < end) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return 0;
		if (r == -1 && errno != EINTR)
			return -1;
		usleep(10000);
	}
	return -1;
}

static int done_calls;

/* tree_done_fn of the tests. */
static void
on_done(void *arg)
{
	(void)arg;
	done_calls++;
}

/* Run the loop until tree_terminate called back (or WAIT_MS passed). */
static void
wait_done(void)
{
	int64_t end = mono_ms() + WAIT_MS;

	while (done_calls == 0 && mono_ms() < end)
		ev_run_once(50);
}

TEST(group_members_window)
{
	pid_t pid = spawn_sh("sleep 30 & sleep 30 & wait", NULL);
	unsigned long long start;
	pid_t pids[8];
	int n;

	CHECK(pid > 0);
	if (pid <= 0)
		return;
	start = proc_start_time(pid);
	CHECK(wait_members(pid, 3) == 3);
	n = proc_group_members(pid, 0, start, 0, pids, 8);
	CHECK(n == 3);
	/* A process now using the leader's pid bounds the window: none older. */
	CHECK(proc_group_members(pid, pid, 0, start, NULL, 0) == 0);
	CHECK(proc_group_members(0, pid, start + 1000000, 0, NULL, 0) == 0);
	CHECK(proc_group_members(getpid() + 100000, 0, 0, 0, NULL, 0) == 0);
	(void)kill(-pid, SIGKILL);
	CHECK(reap(pid) == 0);
}

TEST(terminate_group_after_leader)
{
	/* One child ignores SIGTERM, one leaves the group (still in the session). */
	pid_t pid = spawn_sh("sleep 30 & (trap '' TERM; sleep 30) & "
	    "perl -e 'setpgrp(0, 0); exec(\"sleep\", \"30\")' & "
	    "sleep 0.3; exit 0", NULL);
	unsigned long long start;

	CHECK(pid > 0);
	if (pid <= 0)
		return;
	start = proc_start_time(pid);
	CHECK(reap(pid) == 0);
	CHECK(tree_count(pid, start, NULL) >= 3);
	done_calls = 0;
	tree_terminate(pid, start, NULL, 300, on_done, NULL);
	CHECK(done_calls == 0);		/* never inside the call */
	wait_done();
	CHECK(done_calls == 1);
	CHECK(tree_count(pid, start, NULL) == 0);
}

TEST(terminate_nothing_left)
{
	done_calls = 0;
	tree_terminate(0, 0, NULL, 300, on_done, NULL);
	CHECK(done_calls == 0);
	wait_done();
	CHECK(done_calls == 1);
}

TEST(cgroup_catches_setsid_children)
{
	char *cg, pidfile[] = "/tmp/test_tree.XXXXXX", script[256], *text = NULL;
	pid_t pid, escaped;
	int fd;

	if (strncmp(tree_mechanism(), "cgroup v2", 9) != 0) {
		printf("  cgroup_catches_setsid_children: skipped: %s\n",
		    tree_mechanism());
		return;
	}
	cg = tree_cgroup_create("unit");
	CHECK(cg != NULL);
	if (cg == NULL || (fd = mkstemp(pidfile)) == -1)
		return;
	close(fd);
	snprintf(script, sizeof(script), "setsid sleep 30 & echo $! > %s; "
	    "sleep 0.3; exit 0", pidfile);
	pid = spawn_sh(script, tree_cgroup_procs(cg));
	CHECK(pid > 0);
	if (pid > 0)
		CHECK(reap(pid) == 0);
	CHECK(fs_read_file(pidfile, 64, &text, NULL) == 0);
	escaped = text ? (pid_t)strtol(text, NULL, 10) : 0;
	CHECK(escaped > 0 && proc_alive(escaped));
	/* Out of group and session: only the cgroup still knows it. */
	CHECK(proc_group_members(pid, pid, 0, 0, NULL, 0) == 0);
	CHECK(tree_count(pid, 0, cg) == 1);
	done_calls = 0;
	tree_terminate(pid, 0, cg, 300, on_done, NULL);
	wait_done();
	CHECK(done_calls == 1);
	CHECK(escaped > 0 && !proc_alive(escaped));
	CHECK(!fs_exists(cg));
	free(text);
	free(cg);
	unlink(pidfile);
}

int
main(void)
{
	/* The loop polls through curl multi: http must be up, never used. */
	struct http_settings hs = { "p", "a", "unit-secret", "http://127.0.0.1:9",
	    1000, NULL, NULL };
	char tag[64];

	log_set_level(LOG_ERROR);
	if (ev_init() == -1 || http_init(&hs) == -1)
		return 1;
	snprintf(tag, sizeof(tag), "devops-agent-unit-%ld", (long)getpid());
	tree_init(tag);
	RUN(group_members_window);
	RUN(terminate_group_after_leader);
	RUN(terminate_nothing_left);
	RUN(cgroup_catches_setsid_children);
	tree_cgroup_sweep();	/* removes this run's parent cgroup */
	return t_done();
}
