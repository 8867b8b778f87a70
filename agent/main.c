/*
 * main.c - devopsAgent: with an argument, a subcommand (cli.c); without,
 * the agent: start-up (lock, .env/.path, properties), signals, modes and
 * the exit path. See docs/devopsAgent.md for commands, signals, exit codes.
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
#include "docker.h"
#include "child.h"
#include "cli.h"
#include "cron.h"
#include "ev.h"
#include "fsutil.h"
#include "http.h"
#include "lock.h"
#include "log.h"
#include "ops.h"
#include "probe.h"
#include "proc.h"
#include "queue.h"	/* Redis task queue */
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

/* Start-up (§5.1), the loop, and the exit path. */
int
main(int argc, char *argv[])
{
	char err[512];
	int lockfd, rc, restored;
	const char *fast = getenv("DEVOPS_AGENT_TEST_FAST");

	/* WORKDIR is where the binary lives, not argv[0] or the cwd (W22). */
	if (fs_exe_dir(A.workdir, sizeof(A.workdir)) == -1 || chdir(A.workdir) == -1) {
		fprintf(stderr, "[BK-CI][ERROR] cannot enter the install directory: %s\n",
		    strerror(errno));
		return 1;
	}
	/*
	 * Any argument means a subcommand (install, start, status, ...): GoAgent
	 * HEAD's cmd/agent/main.go. The CLI never takes the agent's lock. The
	 * daemon starts the agent with no argument; debug logging comes from
	 * the .debug file (`devopsAgent debug on`).
	 */
	if (argc > 1)
		return cli_main(A.workdir, argc, argv);
	A.debug = fs_exists(CLI_DEBUG_FILE);
	A.fast = fast != NULL && strcmp(fast, "1") == 0;

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
	/* After the lock, before the properties: the operator's environment. */
	(void)envfile_apply();
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
	A.os_version = os_version_detect();
	(void)fs_mkdir_p("build_tmp", 0777);
	/* Before the loop: the first heartbeat and upgrade check need both. */
	A.worker_version = host_worker_version("worker-agent.jar", A.workdir);
	host_jdk_sync(1);
	log_info("host %s, ip %s, %s/%s, user %s, worker %s, jdk %s",
	    A.hostname, A.ip, A.os, A.arch, A.user,
	    *A.worker_version ? A.worker_version : "(unknown)",
	    A.cfg.jdk_dir_resolved);

	/* Local work first; the poll sends nothing before startup succeeds. */
	/* container builds: engine probe and sweep of gone builds' containers;
	 * before build_start, which may re-adopt containers (docker.h) */
	docker_start();
	build_start();
	cleanup_start();
	pipeline_start();
	queue_start();		/* Redis task queue (docs/queue.md) */
	/* Cron task source (docs/cron.md). */
	cron_start();
	upgrade_init();
	ops_start();	/* operator side: state file, disk guard, metrics */
	poll_start();
	ev_run();

	/* Exit path: one more try at pending finish reports (outbox). */
	queue_stop(3000);	/* Redis task queue */
	pipeline_stop(3000);
	/* Cron task source: stop its jobs, flush its log. */
	cron_stop(3000);
	outbox_flush(3000);
	/* No probe outlives the agent that enforced its deadline. */
	probe_kill_all();
	docker_stop();
	prom_stop();
	ops_write_now();
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
