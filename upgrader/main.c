/*
 * main.c - tmp/upgrader: replaces the agent's binaries (-action=upgrade) or
 * runs `devopsAgent uninstall` (-action=uninstall). agent-behaviour §7.5;
 * docs/upgrader.md has the flags, the lock hand-off and the exit codes.
 *
 *   upgrader -action=upgrade      (default) swap, health check, rollback
 *   upgrader -action=uninstall    run `devopsAgent uninstall`
 *   upgrader version | fullVersion
 *
 * Go flag syntax is accepted: -action=x, --action=x, -action x.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "lock.h"
#include "log.h"
#include "upgrader.h"
#include "util.h"

/* The -action value, or NULL when the arguments are not understood. */
static const char *
parse_action(int argc, char *argv[])
{
	const char *action = "upgrade";
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (str_starts(a, "--"))
			a++;
		if (str_starts(a, "-action="))
			action = a + 8;
		else if (strcmp(a, "-action") == 0 && i + 1 < argc)
			action = argv[++i];
		else
			return NULL;
	}
	return action;
}

/*
 * An agent that hands over an upgrade passes runtime/total-lock.lock as our
 * stdin, locked (docs/upgrader.md). flock(2) belongs to the open file, so
 * this process already holds it: confirm (a no-op re-lock on our own open
 * file), move it off fd 0, and put /dev/null there. Returns the held fd, or
 * -1 when stdin is anything else (started by hand or by an older agent).
 */
static int
total_adopt(void)
{
	struct stat in, want;
	int fd = -1, nul;

	if (fstat(0, &in) == 0 && stat(TOTAL_LOCK, &want) == 0 &&
	    in.st_dev == want.st_dev && in.st_ino == want.st_ino &&
	    flock(0, LOCK_EX | LOCK_NB) == 0)
		fd = fcntl(0, F_DUPFD_CLOEXEC, 3);
	if ((nul = open("/dev/null", O_RDONLY)) != -1) {
		if (nul != 0) {
			(void)dup2(nul, 0);
			close(nul);
		}
	}
	return fd;
}

/*
 * CheckProcess("upgrade") (§3.2), except that total-lock stays held when
 * keep_total is set (upgrade: from here to the end of the swap). *total:
 * the adopted total-lock fd or -1; on return the held fd (keep_total) or -1.
 * Returns the upgrade.lock fd, or -1 (another upgrader runs, or an error).
 */
static int
check_upgrade(int *total, int keep_total)
{
	char pid[32];
	int fd, n;

	if (fs_mkdir_p(RUNTIME_DIR, 0755) == -1)
		return -1;
	if ((fd = lock_try(RUNTIME_DIR "/upgrade.lock")) == -1)
		return -1;
	if (*total < 0 && (*total = lock_wait(TOTAL_LOCK, -1)) == -1) {
		lock_release(fd);
		return -1;
	}
	n = snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	if (fs_write_atomic(RUNTIME_DIR "/upgrade.pid", pid, (size_t)n, 0644) == -1)
		log_warn("cannot write runtime/upgrade.pid");
	if (!keep_total) {
		lock_release(*total);
		*total = -1;
	}
	return fd;
}

/* Find WORKDIR, adopt total-lock, CheckProcess("upgrade"), run the action. */
int
main(int argc, char *argv[])
{
	char workdir[PATH_MAX];
	const char *action;
	int upfd, total, rc;

	if (argc == 2 && strcmp(argv[1], "version") == 0) {
		printf("%s\n", AGENT_VERSION);
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "fullVersion") == 0) {
		printf("%s\n%s\n%s\n", AGENT_VERSION, AGENT_GIT_COMMIT, AGENT_BUILD_TIME);
		return 0;
	}
	/* WORKDIR: the parent of tmp/ holding this binary, never the cwd (W22). */
	if (fs_exe_dir(workdir, sizeof(workdir)) == -1) {
		fprintf(stderr, "upgrader: cannot find its own directory: %s\n",
		    strerror(errno));
		return 1;
	}
	if (str_ends(workdir, "/tmp"))
		workdir[strlen(workdir) - 4] = '\0';
	if (chdir(workdir) == -1) {
		fprintf(stderr, "upgrader: chdir %s: %s\n", workdir, strerror(errno));
		return 1;
	}
	total = total_adopt();
	(void)signal(SIGPIPE, SIG_IGN);
	(void)fs_mkdir_p("logs", 0755);
	if (log_open(UPGRADER_LOG, "upgrader") == -1)
		fprintf(stderr, "upgrader: cannot open %s: %s\n", UPGRADER_LOG,
		    strerror(errno));
	if ((action = parse_action(argc, argv)) == NULL ||
	    (strcmp(action, "upgrade") != 0 && strcmp(action, "uninstall") != 0)) {
		log_error("usage: upgrader [-action=upgrade|uninstall]");
		fprintf(stderr, "usage: upgrader [-action=upgrade|uninstall]\n");
		lock_release(total);
		return 1;
	}
	log_info("upgrader %s (%s) pid %ld: -action=%s in %s%s", AGENT_VERSION,
	    AGENT_GIT_COMMIT, (long)getpid(), action, workdir,
	    total >= 0 ? ", total-lock handed over by the agent" : "");

	if ((upfd = check_upgrade(&total, strcmp(action, "upgrade") == 0)) == -1) {
		int busy = errno == EWOULDBLOCK;
		log_info("CheckProcess(upgrade): %s; exiting",
		    busy ? "another upgrader runs" : strerror(errno));
		if (total >= 0) {
			/* The agent handed us an attempt: it must end with a report. */
			(void)upgrade_report(workdir, 0);
			lock_release(total);
		}
		return 0;
	}
	if (strcmp(action, "uninstall") == 0)
		rc = uninstall_run(workdir);
	else
		rc = upgrade_run(workdir, total);
	log_info("upgrader exits with %d", rc);
	lock_release(upfd);
	return rc;
}
