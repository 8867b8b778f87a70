/*
 * main.c - upgrader: replaces the agent's binaries (-action=upgrade) or runs
 * the uninstall script (-action=uninstall). agent-behaviour §7.5.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "fsutil.h"
#include "lock.h"
#include "log.h"
#include "util.h"

/* -action=uninstall: run ./uninstall.sh and log its output. */
static int
uninstall(void)
{
	char *argv[] = { "/bin/sh", "./uninstall.sh", NULL };
	char *out = NULL;
	int status = 0;

	if (!fs_is_file("uninstall.sh")) {
		log_error("uninstall: uninstall.sh not found");
		return 1;
	}
	if (child_run_capture(argv, NULL, 120000, 64 * 1024, &out, &status) == -1) {
		log_warn("uninstall: cannot run uninstall.sh");
		return 1;
	}
	log_info("uninstall.sh (%s): %s", child_status_str(status), out);
	free(out);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int
main(int argc, char *argv[])
{
	char dir[4096];
	const char *action = "upgrade";
	int i, lockfd;

	for (i = 1; i < argc; i++) {
		if (str_starts(argv[i], "-action="))
			action = argv[i] + 8;
		else if (str_starts(argv[i], "--action="))
			action = argv[i] + 9;
	}
	/* The upgrader lives in WORKDIR/tmp; WORKDIR is its parent. */
	if (fs_exe_dir(dir, sizeof(dir)) == -1 || chdir(dir) == -1 ||
	    (str_ends(dir, "/tmp") && chdir("..") == -1)) {
		fprintf(stderr, "upgrader: cannot enter the install dir: %s\n",
		    strerror(errno));
		return 1;
	}
	(void)fs_mkdir_p("logs", 0755);
	(void)log_open("logs/devopsUpgrader.log", "upgrader");
	if ((lockfd = check_process("upgrade", -1)) == -1) {
		log_info("another upgrader runs; exiting");
		return 0;
	}
	if (strcmp(action, "uninstall") == 0)
		return uninstall();
	if (strcmp(action, "upgrade") == 0) {
		log_error("upgrade: not implemented in this build");
		return 1;
	}
	log_error("unknown action '%s'", action);
	(void)lockfd;
	return 1;
}
