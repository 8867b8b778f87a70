/* uninstall.c - `upgrader -action=uninstall`: run uninstall.sh (§7.5 step 4). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "child.h"
#include "fsutil.h"
#include "log.h"
#include "upgrader.h"
#include "util.h"

#define UNINSTALL_SCRIPT	"uninstall.sh"
#define UNINSTALL_TIMEOUT_MS	120000
#define UNINSTALL_OUT_MAX	((size_t)64 * 1024)

/* Run uninstall.sh with a deadline and log what it printed. */
int
uninstall_run(const char *workdir)
{
	char *path = xasprintf("%s/" UNINSTALL_SCRIPT, workdir), *out = NULL;
	char *argv[] = { path, NULL };
	struct stat st;
	int status = 0, rc = 1;

	if (stat(path, &st) == -1 || !S_ISREG(st.st_mode)) {
		log_error("uninstall: %s not found", path);
		goto out;
	}
	/* The zip ships it 0755; a copied install may have lost the x bit. */
	if ((st.st_mode & 0100) == 0 && chmod(path, (st.st_mode & 07777) | 0100) == -1)
		log_warn("uninstall: chmod +x %s", path);
	if (child_run_capture(argv, workdir, UNINSTALL_TIMEOUT_MS, UNINSTALL_OUT_MAX,
	    &out, &status) == -1) {
		log_warn("uninstall: cannot run %s", path);
		goto out;
	}
	log_info("uninstall: %s %s; output: %s", UNINSTALL_SCRIPT,
	    child_status_str(status), out != NULL && *out ? out : "(none)");
	rc = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
out:
	free(out);
	free(path);
	return rc;
}
