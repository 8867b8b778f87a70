/*
 * cli.h - the devopsAgent subcommands (install, uninstall, start, stop,
 * status, version, debug, repair, drain, help) and the .env/.path snapshot.
 *
 * Any argument on the command line puts devopsAgent into this CLI mode; it
 * then never takes the agent's process lock nor talks to the server (except
 * the gateway probe of `status`). Behaviour and file facts follow GoAgent's
 * src/agent/agent/src/pkg/agentcli/cli.go and service_linux.go; see
 * docs/devopsAgent.md, section "Command line".
 */
#ifndef CLI_H
#define CLI_H

#include <stddef.h>

/* Files of the work directory the CLI owns. */
#define CLI_INSTALL_TYPE	".install_type"	/* SERVICE, USER, DIRECT, DAEMON, LOGIN, BACKGROUND */
#define CLI_DEBUG_FILE		".debug"	/* present = debug logging at the next start */
#define CLI_ENV_FILE		".env"
#define CLI_PATH_FILE		".path"

/* Deadline of one service-manager command (systemctl, launchctl, loginctl), ms. */
#define CLI_CMD_TIMEOUT_MS	30000

/**
 * Run the subcommand in argv[1] (argc >= 2) for the install directory
 * workdir (absolute, the cwd already). Prints "[BK-CI] ..." lines on stdout
 * and "[BK-CI][ERROR] ..." on stderr. Returns the process exit code: 0 on
 * success, 1 on an error or an unknown command (after the usage), and for
 * `status` the codes documented in status.c.
 */
int cli_main(const char *workdir, int argc, char **argv);

/** Print "[BK-CI] " + the formatted text + "\n" on stdout. */
void cli_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** Print "[BK-CI][WARN] " + the formatted text + "\n" on stdout. */
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** Print "[BK-CI][ERROR] " + the formatted text + "\n" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/**
 * Run the program name (looked up in PATH unless it contains a '/') with
 * argv (argv[0] is replaced by the resolved path), no shell, stdin on
 * /dev/null, within timeout_ms. out (may be NULL): receives the trimmed
 * stdout+stderr (new string, caller frees, at most 64 KiB).
 * Returns the exit code (0..255), or -1 when the program is not found, could
 * not be started, was killed by a signal or overran the deadline (then the
 * output says why).
 */
int cli_run(char *argv[], int timeout_ms, char **out);

/** 1 when name is an executable found in PATH (or an executable path). */
int cli_have(const char *name);

/**
 * The service name devops_agent_<devops.agent.id> of workdir/.agent.properties
 * into buf (size bytes). The id must be [A-Za-z0-9_.-]+ (it becomes a file
 * name). Returns 0, or -1 with a reason in err (errlen bytes).
 */
int cli_service_name(char *buf, size_t size, char *err, size_t errlen);

/** 1 when running as root (the test knob DEVOPS_AGENT_TEST_UID overrides). */
int cli_is_root(void);
/** The user id the CLI acts as (geteuid, or DEVOPS_AGENT_TEST_UID). */
unsigned long cli_uid(void);
/**
 * Name of the acting user (the test knob DEVOPS_AGENT_TEST_USER overrides).
 * New string, caller frees.
 */
char *cli_user_name(void);

/**
 * Pid of the running process of runtime/<name>.pid (name "daemon" or
 * "agent") when that pid is alive and executes WORKDIR/<binary>, else 0.
 * Never trust a pid file alone: after a reboot it may name anything.
 */
long cli_live_pid(const char *name, const char *binary);

/**
 * Stop the daemon, then the agent, of the cwd's install: for each, the pid
 * of its runtime/<name>.pid, only when it is that binary (cli_live_pid); SIGTERM,
 * up to a grace period (daemon 5 s; agent $DEVOPS_STOP_GRACE_SEC, default
 * 10 s), then SIGKILL and up to 5 s more. Build workers (own sessions) are
 * never signalled. Returns 0 when both are gone, -1 when one survived.
 */
int cli_stop_processes(void);

/**
 * Start WORKDIR/devopsDaemon with no arguments, detached (own session,
 * stdio on /dev/null), without waiting for it. Returns its pid or -1.
 */
long cli_start_direct(const char *workdir);

/* cli_service.c: the service-manager side (systemd on Linux, launchd on macOS). */

/** `install [mode]`: see docs/devopsAgent.md. Returns the exit code. */
int cli_install(const char *workdir, int argc, char **argv);
/** `uninstall`. Returns the exit code. */
int cli_uninstall(const char *workdir);
/** `start`. Returns the exit code. */
int cli_start(const char *workdir);
/** `stop`. Returns the exit code. */
int cli_stop(const char *workdir);
/** `repair`: stop, unzip both JDKs again, mkdir logs/workspace, start. */
int cli_repair(const char *workdir);
/**
 * Unzip jdk17.zip -> jdk17/ and jre.zip -> jdk/ (when force, the directory
 * is removed first; else only when it is missing), with common/archive.c,
 * then mkdir logs and workspace (0755). Problems are warnings.
 */
void cli_prepare_workdir(int force);
/**
 * "linux" or "darwin": the system the service commands act for (uname at
 * run time; the test knob DEVOPS_AGENT_TEST_OS overrides it). Static string.
 */
const char *cli_os(void);

/* cli_env.c: the environment snapshot (GoAgent envfile.go). */

/**
 * Write WORKDIR/.path (PATH + "\n", mode 0644; not when PATH is empty) and
 * WORKDIR/.env from the current environment: three comment lines, then
 * KEY=VALUE for each snapshot variable that is set and non-empty, in the
 * fixed order of GoAgent's envfile.go, then the other keys of the previous
 * .env in their order. A value with a line break cannot be written and is
 * skipped with a warning. Both files are written atomically. Returns 0, or
 * -1 when a file could not be written (warned).
 */
int envfile_write(void);

/**
 * Apply WORKDIR/.env and WORKDIR/.path (the cwd's) to this process's
 * environment: each .env line is trimmed, blank and '#' lines skipped, split
 * at the first '='; the trimmed key (skipped when empty or not a valid name)
 * is set to the value as is. PATH becomes the saved entries followed by the
 * current ones, blanks dropped, duplicates removed (first kept). The files
 * are read with fs_read_regular (no symlink, FIFO or device; at most
 * 1 MiB each). Missing files are not an error. Returns the number of
 * variables set (PATH counts as one), or -1 when a file exists but cannot
 * be read (logged; the rest is still applied).
 */
int envfile_apply(void);

/* status.c */

/**
 * `status [--json]`: the health report of the install in the cwd. json:
 * print one JSON object instead of "[BK-CI]" lines. Returns 0 when every
 * check passed, 2 when a check failed (the agent may still be working),
 * 3 when the agent is not running, 1 on a usage error.
 */
int status_main(const char *workdir, int json);

#endif
