/*
 * main.c - devopsAgent: start-up (agent-behaviour §5.1), signals, modes and
 * the exit path. See docs/devopsAgent.md for flags, signals and exit codes.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "child.h"
#include "ev.h"
#include "fsutil.h"
#include "http.h"
#include "lock.h"
#include "log.h"
#include "proc.h"
#include "util.h"

extern char **environ;

/* SIGTERM/SIGINT: stop claiming and exit; workers go on (own sessions). */
static void
on_term(int signo, void *arg)
{
	(void)arg;
	log_info("signal %d: stopping (running builds go on and are re-adopted "
	    "at the next start)", signo);
	agent_set_mode(MODE_STOP);
}

/* SIGUSR1: drain. */
static void
on_drain(int signo, void *arg)
{
	(void)signo;
	(void)arg;
	log_info("SIGUSR1: draining: no new builds; exiting when none is left");
	agent_set_mode(MODE_DRAIN);
}

/* SIGCHLD: reap. */
static void
on_chld(int signo, void *arg)
{
	(void)signo;
	(void)arg;
	child_reap();
}

/* SIGHUP: reopen the log. */
static void
on_hup(int signo, void *arg)
{
	(void)signo;
	(void)arg;
	if (log_reopen() == -1)
		log_warn("SIGHUP: cannot reopen the log");
	else
		log_info("SIGHUP: log reopened");
}

/* Log the environment with values of secret-looking names masked. */
static void
log_environment(void)
{
	static const char *marks[] = { "SECRET", "TOKEN", "PASSWORD", "PASSWD",
	    "CREDENTIAL", "_KEY", "PRIVATE" };
	char **e;
	size_t i;

	for (e = environ; *e != NULL; e++) {
		const char *eq = strchr(*e, '=');
		int secret = 0;
		char name[256];
		if (eq == NULL)
			continue;
		snprintf(name, sizeof(name), "%.*s", (int)(eq - *e), *e);
		for (i = 0; i < nitems(marks); i++)
			if (strcasestr(name, marks[i]) != NULL)
				secret = 1;
		log_info("env %s=%s", name, secret ? "***" : eq + 1);
	}
}

/* `devopsAgent drain`: ask the running agent to drain (SIGUSR1). */
static int
cmd_drain(void)
{
	long pid = pidfile_read("agent");
	char *exe;
	int ok;

	if (pid <= 0 || lock_is_held("runtime/agent.lock") != 1) {
		fprintf(stderr, "devopsAgent: no running agent\n");
		return 1;
	}
	exe = xasprintf("%s/devopsAgent", A.workdir);
	ok = proc_exe_is((pid_t)pid, exe);
	if (!ok)
		fprintf(stderr, "devopsAgent: pid %ld in runtime/agent.pid is not "
		    "%s; not signalled\n", pid, exe);
	free(exe);
	if (!ok)
		return 1;
	if (kill((pid_t)pid, SIGUSR1) == -1) {
		fprintf(stderr, "devopsAgent: kill %ld: %s\n", pid, strerror(errno));
		return 1;
	}
	printf("agent %ld is draining: it exits when its builds are done\n", pid);
	return 0;
}

/* Print the command line. */
static void
usage(void)
{
	fprintf(stderr, "usage: devopsAgent [version | fullVersion | debug | drain]\n");
}

/* Start-up (§5.1), the loop, and the exit path. */
int
main(int argc, char *argv[])
{
	char err[512];
	int lockfd, rc, restored;
	const char *fast = getenv("DEVOPS_AGENT_TEST_FAST");

	if (argc == 2 && strcmp(argv[1], "version") == 0) {
		printf("%s\n", AGENT_VERSION);
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "fullVersion") == 0) {
		printf("%s\n%s\n%s\n", AGENT_VERSION, AGENT_GIT_COMMIT, AGENT_BUILD_TIME);
		return 0;
	}
	if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		usage();
		return 0;
	}
	A.debug = argc == 2 && strcmp(argv[1], "debug") == 0;
	A.fast = fast != NULL && strcmp(fast, "1") == 0;

	/* WORKDIR is where the binary lives, not argv[0] or the cwd (W22). */
	if (fs_exe_dir(A.workdir, sizeof(A.workdir)) == -1 || chdir(A.workdir) == -1) {
		fprintf(stderr, "devopsAgent: cannot enter the install directory: %s\n",
		    strerror(errno));
		return 1;
	}
	if (argc == 2 && strcmp(argv[1], "drain") == 0)
		return cmd_drain();
	if (argc > 1 && !A.debug)
		fprintf(stderr, "devopsAgent: ignoring arguments (GoAgent compatible)\n");

	(void)fs_mkdir_p("logs", 0755);
	if (log_open("logs/devopsAgent.log", "agent") == -1) {
		fprintf(stderr, "devopsAgent: cannot open logs/devopsAgent.log: %s\n",
		    strerror(errno));
		return 1;
	}
	if (A.debug)
		log_set_level(LOG_DEBUG);
	if ((lockfd = check_process("agent", -1)) == -1) {
		if (errno == EWOULDBLOCK)
			log_info("another agent holds runtime/agent.lock; exiting");
		else
			log_warn("CheckProcess(agent) failed");
		return 0;
	}
	if (config_load_restore(&A.cfg, CONFIG_FILE, A.workdir, &restored, err, sizeof(err)) == -1) {
		log_error("%s: %s", CONFIG_FILE, err);
		fprintf(stderr, "devopsAgent: %s: %s\n", CONFIG_FILE, err);
		return 1;
	}
	log_add_secret(A.cfg.secret_key);
	log_info("devopsAgent %s (%s, built %s) pid %ld, workdir %s%s",
	    AGENT_VERSION, AGENT_GIT_COMMIT, AGENT_BUILD_TIME, (long)getpid(),
	    A.workdir, A.debug ? ", debug" : "");
	log_environment();
	agent_save_config();
	if (str_blank(A.cfg.file_gateway))
		log_warnx("landun.fileGateway is empty");

	srandom((unsigned int)(time(NULL) ^ getpid()));
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		fatal("cannot ignore SIGPIPE");
	if (ev_init() == -1)
		fatal("event loop");
	struct http_settings hs = {
		.project_id = A.cfg.project_id, .agent_id = A.cfg.agent_id,
		.secret_key = A.cfg.secret_key, .gateway = A.cfg.gateway,
		.timeout_ms = A.cfg.request_timeout_sec * 1000, .ca_file = ".cert",
		.user_agent = "devopsAgent/" AGENT_VERSION,
	};
	if (http_init(&hs) == -1)
		fatalx("cannot initialise libcurl");
	http_set_proxy_lookup(host_proxy_lookup);
	ev_set_poller(http_wait, http_dispatch);
	if (fs_is_file(".cert"))
		log_info("trusting the extra CA certificates in .cert");
	if (ev_signal(SIGTERM, on_term, NULL) == -1 ||
	    ev_signal(SIGINT, on_term, NULL) == -1 ||
	    ev_signal(SIGCHLD, on_chld, NULL) == -1 ||
	    ev_signal(SIGUSR1, on_drain, NULL) == -1 ||
	    ev_signal(SIGHUP, on_hup, NULL) == -1)
		fatal("cannot install signal handlers");

	host_detect();
	(void)fs_mkdir_p("build_tmp", 0777);
	A.worker_version = host_worker_version("worker-agent.jar", A.workdir);
	log_info("host %s, ip %s, %s/%s, user %s, worker %s, jdk %s",
	    A.hostname, A.ip, A.os, A.arch, A.user,
	    *A.worker_version ? A.worker_version : "(unknown)",
	    A.cfg.jdk_dir_resolved);

	heartbeat_start();
	build_start_loop();
	cleanup_start();
	pipeline_start();
	metrics_start();
	upgrade_start();
	ev_run();

	/* Exit path: one more try at pending finish reports (outbox). */
	pipeline_stop(3000);
	build_flush_reports(3000);
	log_info("devopsAgent exiting with %d (%d build(s) left to the journal)",
	    A.exit_code, build_total_count());
	lock_release(lockfd);
	/* Leave nothing for LeakSanitizer to report (make check-asan). */
	rc = A.exit_code;
	http_shutdown();
	agent_free();
	log_clear_secrets();
	return rc;
}
