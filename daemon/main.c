/*
 * main.c - devopsDaemon: keeps devopsAgent running (agent-behaviour §4).
 *
 *   devopsDaemon              supervise the agent (started with no argument)
 *   devopsDaemon debug        same, with debug logging in the daemon's log
 *   devopsDaemon version      print the version
 *   devopsDaemon fullVersion  print version, git commit, build time
 *   devopsDaemon stop-all     stop the running daemon, then its agent
 *
 * Any other argument list is ignored, as GoAgent does. Debug logging is
 * also on when WORKDIR/.debug exists (`devopsAgent debug on`).
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "child.h"
#include "daemon.h"
#include "fsutil.h"
#include "lock.h"
#include "log.h"
#include "util.h"

/* The crash-loop "stable run" threshold: $DEVOPS_DAEMON_STABLE_MS or 10 s. */
static int64_t
stable_ms_get(void)
{
	const char *v = getenv(SUPER_STABLE_ENV);
	long long ms;

	if (v == NULL || *v == '\0')
		return SUPER_STABLE_MS;
	if (str_to_ll(v, &ms) == -1 || ms < 0 || ms > 86400000LL) {
		log_warnx("ignoring %s=%s (want 0..86400000 ms)", SUPER_STABLE_ENV, v);
		return SUPER_STABLE_MS;
	}
	return ms;
}

/* Parse the command line, enter WORKDIR, then supervise or stop-all. */
int
main(int argc, char **argv)
{
	char workdir[PATH_MAX];
	int debug = 0, stopall = 0, fd, rc;
	int64_t stable;

	if (argc == 2) {
		if (strcmp(argv[1], "version") == 0) {
			printf("%s\n", AGENT_VERSION);
			return 0;
		}
		if (strcmp(argv[1], "fullVersion") == 0) {
			printf("%s\n%s\n%s\n", AGENT_VERSION, AGENT_GIT_COMMIT,
			    AGENT_BUILD_TIME);
			return 0;
		}
		debug = strcmp(argv[1], "debug") == 0;
		stopall = strcmp(argv[1], "stop-all") == 0;
	}

	/* W22: the install dir is where the binary is, whatever argv[0] and
	 * the caller's cwd say; the log lives there too. */
	if (fs_exe_dir(workdir, sizeof(workdir)) == -1) {
		fprintf(stderr, "devopsDaemon: cannot find its own directory: %s\n",
		    strerror(errno));
		return 1;
	}
	if (chdir(workdir) == -1) {
		fprintf(stderr, "devopsDaemon: chdir %s: %s\n", workdir, strerror(errno));
		return 1;
	}
	if (fs_mkdir_p("logs", 0755) == -1 ||
	    log_open(DAEMON_LOG, stopall ? "daemon-stop" : "daemon") == -1) {
		fprintf(stderr, "devopsDaemon: cannot open %s/%s: %s\n", workdir,
		    DAEMON_LOG, strerror(errno));
		if (!stopall)
			return 1;
	}
	if (debug || fs_exists(".debug"))
		log_set_level(LOG_DEBUG);
	if (stopall) {
		log_set_stderr(1);
		return stop_all(workdir);
	}

	if ((fd = check_process("daemon", -1)) == -1) {
		if (errno == EWOULDBLOCK) {
			log_info("another devopsDaemon (pid %ld) holds runtime/daemon.lock:"
			    " exiting", pidfile_read("daemon"));
			return 0;
		}
		log_warn("CheckProcess(daemon) failed");
		return 1;
	}
	/*
	 * Start from default dispositions and an empty mask, whatever the
	 * parent left: nohup ignores SIGHUP, a non-interactive shell's "&"
	 * ignores SIGINT and SIGQUIT, and ignored signals stay ignored across
	 * exec(), so the agent and every build would inherit them.
	 */
	child_reset_signals();
	stable = stable_ms_get();
	log_info("devopsDaemon %s (%s) started: pid %ld, workdir %s, stable run %lld ms%s",
	    AGENT_VERSION, AGENT_GIT_COMMIT, (long)getpid(), workdir,
	    (long long)stable, log_get_level() == LOG_DEBUG ? ", debug" : "");
	rc = super_run(workdir, debug, stable);
	log_info("devopsDaemon exits with %d", rc);
	lock_release(fd);
	return rc;
}
