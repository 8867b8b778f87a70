/*
 * uninstall.c - `upgrader -action=uninstall`: run `WORKDIR/devopsAgent
 * uninstall` (the CLI removes the service registration and stops the
 * daemon and the agent), as GoAgent HEAD's upgrader does
 * (src/agent/agent/src/pkg/upgrader/upgrader_linux.go). Older upgraders
 * ran uninstall.sh, which is now itself a one-line call of that command.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "child.h"
#include "fsutil.h"
#include "log.h"
#include "upgrader.h"
#include "util.h"

#define UNINSTALL_AGENT		"devopsAgent"
#define UNINSTALL_TIMEOUT_MS	120000
#define UNINSTALL_OUT_MAX	((size_t)64 * 1024)

/* Run `devopsAgent uninstall` with a deadline and log what it printed. */
int
uninstall_run(const char *workdir)
{
	char *path = xasprintf("%s/" UNINSTALL_AGENT, workdir), *out = NULL;
	char *argv[] = { path, "uninstall", NULL };
	struct stat st;
	int status = 0, rc = 1;

	if (lstat(path, &st) == -1 || !S_ISREG(st.st_mode)) {
		log_error("uninstall: %s not found (or not a regular file)", path);
		goto out;
	}
	/* The zip ships it 0755; a copied install may have lost the x bit. */
	if ((st.st_mode & 0100) == 0 && chmod(path, (st.st_mode & 07777) | 0100) == -1)
		log_warn("uninstall: chmod +x %s", path);
	if (child_run_capture(argv, workdir, UNINSTALL_TIMEOUT_MS, UNINSTALL_OUT_MAX,
	    &out, &status) == -1) {
		log_warn("uninstall: cannot run %s uninstall", path);
		goto out;
	}
	log_info("uninstall: " UNINSTALL_AGENT " uninstall %s; output: %s",
	    child_status_str(status), out != NULL && *out ? out : "(none)");
	rc = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
out:
	free(out);
	free(path);
	return rc;
}
