/* agent.c - process-wide agent state: periods, paths, exit errors, modes. */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "child.h"
#include "ev.h"
#include "log.h"
#include "ops.h"
#include "util.h"

struct agent A;

/* Length of a named loop period, shortened in test mode. */
int64_t
agent_period(enum period p)
{
	static const int64_t normal[P_MAX] = {
		[P_ASK] = 5000, [P_ASK_WINDOW] = 3300, [P_ASK_PROBE] = 600000,
		[P_HEARTBEAT] = 10000, [P_BUILD_PULL] = 5000,
		[P_STATUS_WINDOW] = 3300, [P_UPGRADE] = 20000,
		[P_PIPELINE] = 30000, [P_PIPELINE_FIRST] = 10000,
		[P_CLEANUP] = INT64_C(2) * 3600 * 1000, [P_METRICS] = 60000,
		[P_FINISH_DELAY] = 8000, [P_KILL_GRACE] = 10000,
	};
	static const int64_t fast[P_MAX] = {
		[P_ASK] = 300, [P_ASK_WINDOW] = 0, [P_ASK_PROBE] = 2000,
		[P_HEARTBEAT] = 1000, [P_BUILD_PULL] = 300,
		[P_STATUS_WINDOW] = 0, [P_UPGRADE] = 1000,
		[P_PIPELINE] = 500, [P_PIPELINE_FIRST] = 200,
		[P_CLEANUP] = INT64_C(2) * 3600 * 1000, [P_METRICS] = 1000,
		[P_FINISH_DELAY] = 0, [P_KILL_GRACE] = 2000,
	};

	return A.fast ? fast[p] : normal[p];
}

/* The latest java: JDK 17 when its java exists, else JDK 8. */
char *
agent_java_path(void)
{
	char *java = host_java_if_present(17);

	return java != NULL ? java : host_java_in(A.cfg.jdk_dir_resolved);
}

/* Record the fatal condition the next heartbeat reports. */
void
agent_set_exit_error(const char *enum_name, const char *msg)
{
	log_error("exit error %s: %s", enum_name, msg);
	free(A.exit_error_enum);
	free(A.exit_error_msg);
	A.exit_error_enum = xstrdup(enum_name);
	A.exit_error_msg = xstrdup(msg);
}

/* Turn ENOSPC/EACCES into an exit error. */
void
agent_check_io_error(int err, const char *what)
{
	char *msg;

	if (err != ENOSPC && err != EACCES)
		return;
	msg = xasprintf("%s: %s", what, strerror(err));
	agent_set_exit_error(err == ENOSPC ? "THIRD_AGENT_EXIT_LEFT_DEVICE" :
	    "THIRD_AGENT_EXIT_PERMISSION_DENIED", msg);
	free(msg);
}

/*
 * .agent.properties holds the secret key (W17): no access for others, and
 * group read only for the build user's group when builds run as another
 * user, because the Java worker reads the file in its cwd (AgentEnv.kt).
 * Only ever takes permissions away; failures are logged, never fatal.
 */
static void
config_protect(void)
{
	const char *slave = A.cfg.slave_user;
	struct passwd *pw = NULL;
	struct stat st;
	mode_t mode, want;

	if (stat(CONFIG_FILE, &st) == -1)
		return;
	mode = st.st_mode & 07777;
	want = mode & ~(mode_t)S_IRWXO;
	if (slave != NULL && *slave != '\0')
		pw = getpwnam(slave);
	if (pw != NULL && pw->pw_uid != geteuid() && pw->pw_uid != st.st_uid) {
		if (st.st_gid != pw->pw_gid &&
		    chown(CONFIG_FILE, (uid_t)-1, pw->pw_gid) == -1) {
			/* Taking "other" away now would lock the worker out. */
			log_warn("cannot give %s to the group of %s; its "
			    "permissions stay as they are", CONFIG_FILE, slave);
			return;
		}
		want = (want & ~(mode_t)S_IRWXG) | (mode & S_IRGRP);
	} else {
		want &= ~(mode_t)S_IRWXG;
	}
	if (want == mode)
		return;
	if (chmod(CONFIG_FILE, want) == -1)
		log_warn("cannot restrict the permissions of %s", CONFIG_FILE);
	else
		log_info("%s holds the secret key: mode %04o -> %04o", CONFIG_FILE,
		    (unsigned int)mode, (unsigned int)want);
}

/* Write .agent.properties back and keep it private. */
void
agent_save_config(void)
{
	char err[256];

	if (config_save(&A.cfg, err, sizeof(err)) == -1) {
		int saved = errno;
		log_error("cannot save %s: %s (the old file is intact)",
		    CONFIG_FILE, err);
		agent_check_io_error(saved, CONFIG_FILE);
	}
	config_protect();
}

/* Start `tmp/upgrader -action=uninstall` detached (§5.4 step 4). */
static void
start_uninstaller(void)
{
	char *argv[] = { "tmp/upgrader", "-action=uninstall", NULL };
	char err[256];

	if (child_spawn_detached(argv[0], argv, A.workdir, err, sizeof(err)) == -1)
		log_error("cannot start the uninstaller: %s", err);
	else
		log_info("uninstaller started");
}

/* Finish a drain or an uninstall once no build is left. */
void
agent_maybe_finish(void)
{
	if (A.mode != MODE_DRAIN && A.mode != MODE_UNINSTALL)
		return;
	if (build_total_count() > 0) {
		log_info("%s: waiting for %d build(s)", A.mode == MODE_DRAIN ?
		    "drain" : "uninstall", build_total_count());
		return;
	}
	if (A.mode == MODE_UNINSTALL) {
		start_uninstaller();
		A.exit_code = EXIT_DAEMON_STOP;
	} else {
		log_info("drain complete: no build left");
		A.exit_code = 0;
	}
	A.mode = MODE_STOP;
	ev_stop();
}

/* Free everything A owns; the process is about to exit. */
void
agent_free(void)
{
	size_t k;

	free(A.hostname);
	free(A.ip);
	free(A.user);
	free(A.worker_version);
	free(A.os_version);
	for (k = 0; k < nitems(A.jdk_version); k++)
		free(A.jdk_version[k]);
	cJSON_Delete(A.envs);
	free(A.exit_error_enum);
	free(A.exit_error_msg);
	config_free(&A.cfg);
	memset(&A, 0, sizeof(A));
}

/* Enter a mode and act on it. */
void
agent_set_mode(enum agent_mode m)
{
	if (A.mode == MODE_STOP || (A.mode == MODE_UNINSTALL && m == MODE_DRAIN))
		return;
	A.mode = m;
	ops_dirty();
	if (m == MODE_STOP)
		ev_stop();
	else
		agent_maybe_finish();
}

