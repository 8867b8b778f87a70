/*
 * cli.c - the devopsAgent subcommand dispatch and what the subcommands
 * share: output, running a service-manager command with a deadline, the
 * service name, and finding, stopping and starting our own processes.
 * Dispatch facts: src/agent/agent/src/pkg/agentcli/cli.go (Run, handleDebug,
 * handleVersion, stopProcesses). See docs/devopsAgent.md "Command line".
 */
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "child.h"
#include "cli.h"
#include "config.h"
#include "fsutil.h"
#include "lock.h"
#include "log.h"
#include "proc.h"
#include "util.h"

#define CLI_OUT_MAX		((size_t)64 * 1024)
#define STOP_DAEMON_GRACE_MS	5000
#define STOP_AGENT_GRACE_MS	10000
#define STOP_KILL_WAIT_MS	5000
#define STOP_POLL_MS		100

/* Print one prefixed line to f. */
static void
cli_vprint(FILE *f, const char *prefix, const char *fmt, va_list ap)
{
	(void)fputs(prefix, f);
	(void)vfprintf(f, fmt, ap);
	(void)fputc('\n', f);
	(void)fflush(f);
}

/* "[BK-CI] ..." on stdout. */
void
cli_say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_vprint(stdout, "[BK-CI] ", fmt, ap);
	va_end(ap);
}

/* "[BK-CI][WARN] ..." on stdout. */
void
cli_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_vprint(stdout, "[BK-CI][WARN] ", fmt, ap);
	va_end(ap);
}

/* "[BK-CI][ERROR] ..." on stderr. */
void
cli_error(const char *fmt, ...)
{
	va_list ap;

	(void)fflush(stdout);
	va_start(ap, fmt);
	cli_vprint(stderr, "[BK-CI][ERROR] ", fmt, ap);
	va_end(ap);
}

/* Resolve name through PATH; new string or NULL. */
static char *
cli_which(const char *name)
{
	const char *path = getenv("PATH");
	char *copy, *dir, *next, *full = NULL;

	if (strchr(name, '/') != NULL)
		return access(name, X_OK) == 0 ? xstrdup(name) : NULL;
	if (path == NULL || *path == '\0')
		path = "/usr/bin:/bin:/usr/sbin:/sbin";
	copy = xstrdup(path);
	for (dir = copy; dir != NULL; dir = next) {
		struct stat st;
		if ((next = strchr(dir, ':')) != NULL)
			*next++ = '\0';
		full = xasprintf("%s/%s", *dir ? dir : ".", name);
		if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0)
			break;
		free(full);
		full = NULL;
	}
	free(copy);
	return full;
}

/* 1 when name can be run. */
int
cli_have(const char *name)
{
	char *p = cli_which(name);

	free(p);
	return p != NULL;
}

/* Run a command found in PATH with a deadline; its exit code or -1. */
int
cli_run(char *argv[], int timeout_ms, char **out)
{
	char *path = cli_which(argv[0]), *name = argv[0], *text = NULL;
	int status = 0, rc = -1;

	if (out != NULL)
		*out = NULL;
	if (path == NULL) {
		if (out != NULL)
			*out = xasprintf("%s: not found in PATH", name);
		return -1;
	}
	argv[0] = path;
	if (child_run_capture(argv, NULL, timeout_ms, CLI_OUT_MAX, &text, &status) == -1) {
		if (out != NULL)
			*out = xasprintf("%s: %s", name, errno == ETIMEDOUT ?
			    "no answer within the deadline (killed)" : "cannot run");
	} else {
		if (WIFEXITED(status))
			rc = WEXITSTATUS(status);
		if (out != NULL) {
			*out = xstrdup(str_trim(text));
		}
	}
	argv[0] = name;
	free(text);
	free(path);
	return rc;
}

/* The acting uid: geteuid(), or the test knob DEVOPS_AGENT_TEST_UID. */
unsigned long
cli_uid(void)
{
	const char *v = getenv("DEVOPS_AGENT_TEST_UID");
	long long n;

	if (v != NULL && str_to_ll(v, &n) == 0 && n >= 0)
		return (unsigned long)n;
	return (unsigned long)geteuid();
}

/* 1 when acting as root. */
int
cli_is_root(void)
{
	return cli_uid() == 0;
}

/* Name of the acting user. */
char *
cli_user_name(void)
{
	const char *v = getenv("DEVOPS_AGENT_TEST_USER");
	struct passwd *pw;

	if (v != NULL && *v != '\0')
		return xstrdup(v);
	pw = getpwuid(geteuid());
	return xstrdup(pw != NULL ? pw->pw_name : "unknown");
}

/* devops_agent_<id> from .agent.properties. */
int
cli_service_name(char *buf, size_t size, char *err, size_t errlen)
{
	struct config c;
	char why[256];
	const char *p;
	int rc = -1;

	if (config_load(&c, CONFIG_FILE, NULL, why, sizeof(why)) == -1) {
		snprintf(err, errlen, "%s: %s", CONFIG_FILE, why);
		return -1;
	}
	for (p = c.agent_id; *p; p++)
		if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') &&
		    !(*p >= '0' && *p <= '9') && *p != '_' && *p != '.' && *p != '-')
			break;
	if (*p != '\0' || *c.agent_id == '\0')
		snprintf(err, errlen, "%s: devops.agent.id is not usable as a "
		    "service name", CONFIG_FILE);
	else if ((size_t)snprintf(buf, size, "devops_agent_%s", c.agent_id) >= size)
		snprintf(err, errlen, "%s: devops.agent.id is too long", CONFIG_FILE);
	else
		rc = 0;
	config_free(&c);
	return rc;
}

/* Pid of our running daemon/agent, or 0. */
long
cli_live_pid(const char *name, const char *binary)
{
	char exe[PATH_MAX + 32];
	long pid = pidfile_read(name);

	if (pid <= 0)
		return 0;
	snprintf(exe, sizeof(exe), "%s/%s", A.workdir, binary);
	return proc_exe_is((pid_t)pid, exe) ? pid : 0;
}

/* Wait up to ms for pid to stop running binary; 1 when it is gone. */
static int
wait_gone(long pid, const char *exe, int ms)
{
	int64_t end = mono_ms() + ms;
	struct timespec ts = { 0, STOP_POLL_MS * 1000000L };

	while (proc_exe_is((pid_t)pid, exe)) {
		if (mono_ms() >= end)
			return 0;
		nanosleep(&ts, NULL);
	}
	return 1;
}

/* Stop one of our processes: SIGTERM, grace, SIGKILL. 0 or -1. */
static int
stop_one(const char *name, const char *binary, int grace_ms)
{
	char exe[PATH_MAX + 32];
	long pid = pidfile_read(name);

	snprintf(exe, sizeof(exe), "%s/%s", A.workdir, binary);
	if (pid <= 0) {
		cli_say("%s: not running (no runtime/%s.pid)", name, name);
		return 0;
	}
	if (!proc_exe_is((pid_t)pid, exe)) {
		cli_say("%s: not running (runtime/%s.pid names pid %ld, which is not "
		    "%s: left alone)", name, name, pid, binary);
		return 0;
	}
	cli_say("%s: stopping pid %ld", name, pid);
	if (kill((pid_t)pid, SIGTERM) == -1 && errno == ESRCH)
		return 0;
	if (wait_gone(pid, exe, grace_ms)) {
		cli_say("%s: stopped", name);
		return 0;
	}
	cli_say("%s: pid %ld still runs after %d ms: sending SIGKILL", name, pid,
	    grace_ms);
	if (proc_exe_is((pid_t)pid, exe))
		(void)kill((pid_t)pid, SIGKILL);
	if (wait_gone(pid, exe, STOP_KILL_WAIT_MS)) {
		cli_say("%s: killed", name);
		return 0;
	}
	cli_error("%s: pid %ld survived SIGKILL", name, pid);
	return -1;
}

/* Stop the daemon first (so it restarts nothing), then the agent. */
int
cli_stop_processes(void)
{
	const char *v = getenv("DEVOPS_STOP_GRACE_SEC");
	long long sec;
	int grace = STOP_AGENT_GRACE_MS, rc = 0;

	if (v != NULL && str_to_ll(v, &sec) == 0 && sec >= 0 && sec <= 3600)
		grace = (int)sec * 1000;
	if (stop_one("daemon", "devopsDaemon", STOP_DAEMON_GRACE_MS) == -1)
		rc = -1;
	if (stop_one("agent", "devopsAgent", grace) == -1)
		rc = -1;
	return rc;
}

/* Start devopsDaemon detached, no arguments. */
long
cli_start_direct(const char *workdir)
{
	char err[256];
	char *path = xasprintf("%s/devopsDaemon", workdir);
	char *argv[] = { path, NULL };
	pid_t pid;

	pid = child_spawn_detached(path, argv, workdir, err, sizeof(err));
	if (pid == -1)
		cli_error("cannot start %s: %s", path, err);
	free(path);
	return pid;
}

/* `version [-f]`. */
static int
cmd_version(int argc, char **argv)
{
	if (argc > 3 || (argc == 3 && strcmp(argv[2], "-f") != 0)) {
		cli_error("usage: devopsAgent version [-f]");
		return 1;
	}
	printf("%s\n", AGENT_VERSION);
	if (argc == 3)
		printf("%s\n%s\n", AGENT_GIT_COMMIT, AGENT_BUILD_TIME);
	return 0;
}

/* `debug [on|enable|off|disable]`: the .debug file read at the next start. */
static int
cmd_debug(int argc, char **argv)
{
	const char *a = argc > 2 ? argv[2] : NULL;

	if (a == NULL) {
		if (fs_exists(CLI_DEBUG_FILE))
			cli_say("Debug mode: ON (%s file exists)", CLI_DEBUG_FILE);
		else
			cli_say("Debug mode: OFF");
		return 0;
	}
	if (strcmp(a, "on") == 0 || strcmp(a, "enable") == 0) {
		if (fs_write_atomic(CLI_DEBUG_FILE, "1", 1, 0644) == -1) {
			cli_error("cannot write %s: %s", CLI_DEBUG_FILE, strerror(errno));
			return 1;
		}
		cli_say("Debug mode enabled. Restart agent to take effect.");
		return 0;
	}
	if (strcmp(a, "off") == 0 || strcmp(a, "disable") == 0) {
		if (unlink(CLI_DEBUG_FILE) == -1 && errno != ENOENT) {
			cli_error("cannot delete %s: %s", CLI_DEBUG_FILE, strerror(errno));
			return 1;
		}
		cli_say("Debug mode disabled. Restart agent to take effect.");
		return 0;
	}
	cli_error("unknown debug action: %s (use: on/off)", a);
	return 1;
}

/* `drain`: ask the running agent to finish its builds and exit (SIGUSR1). */
static int
cmd_drain(void)
{
	long pid = cli_live_pid("agent", "devopsAgent");

	if (pid <= 0 || lock_is_held("runtime/agent.lock") != 1) {
		cli_error("no running agent in %s", A.workdir);
		return 1;
	}
	if (kill((pid_t)pid, SIGUSR1) == -1) {
		cli_error("kill %ld: %s", pid, strerror(errno));
		return 1;
	}
	cli_say("agent %ld is draining: it exits when its builds are done", pid);
	return 0;
}

/* The usage text. */
static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: devopsAgent [command]\n"
	    "  (no command)          run the agent (normally started by devopsDaemon)\n"
	    "  install [user|direct] register the service and start it\n"
	    "  uninstall             remove the service and stop the processes\n"
	    "  start                 start (through the service when installed as one)\n"
	    "  stop                  stop the daemon and the agent\n"
	    "  status [--json]       health report; exit 0 healthy, 2 a check failed,\n"
	    "                        3 not running\n"
	    "  repair                stop, unzip the JDKs again, start\n"
	    "  debug [on|off]        show or set debug logging (next start)\n"
	    "  drain                 running builds finish, then the agent exits\n"
	    "  version [-f]          print the version (-f: commit and build time)\n"
	    "  fullVersion           version, commit and build time\n"
	    "  help, -h, --help      this text\n");
}

/* Dispatch a subcommand. */
int
cli_main(const char *workdir, int argc, char **argv)
{
	const char *c = argv[1];

	(void)workdir;
	/* No log file in CLI mode: only errors of the helpers reach stderr. */
	log_set_level(LOG_ERROR);
	if (strcmp(c, "-h") == 0 || strcmp(c, "--help") == 0 || strcmp(c, "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(c, "version") == 0)
		return cmd_version(argc, argv);
	if (strcmp(c, "fullVersion") == 0) {
		printf("%s\n%s\n%s\n", AGENT_VERSION, AGENT_GIT_COMMIT, AGENT_BUILD_TIME);
		return 0;
	}
	if (strcmp(c, "debug") == 0)
		return cmd_debug(argc, argv);
	if (strcmp(c, "drain") == 0)
		return cmd_drain();
	if (strcmp(c, "install") == 0)
		return cli_install(A.workdir, argc, argv);
	if (strcmp(c, "uninstall") == 0)
		return cli_uninstall(A.workdir);
	if (strcmp(c, "start") == 0)
		return cli_start(A.workdir);
	if (strcmp(c, "stop") == 0)
		return cli_stop(A.workdir);
	if (strcmp(c, "repair") == 0)
		return cli_repair(A.workdir);
	if (strcmp(c, "status") == 0) {
		if (argc > 3 || (argc == 3 && strcmp(argv[2], "--json") != 0)) {
			cli_error("usage: devopsAgent status [--json]");
			return 1;
		}
		return status_main(A.workdir, argc == 3);
	}
	cli_error("unknown command: %s", c);
	usage(stderr);
	return 1;
}
