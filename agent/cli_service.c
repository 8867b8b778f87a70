/*
 * cli_service.c - install, uninstall, start, stop and repair: the service
 * manager side of the CLI. Linux: a systemd system unit (SERVICE), a user
 * unit (USER) or a detached daemon (DIRECT), as GoAgent's
 * src/agent/agent/src/pkg/agentcli/service_linux.go. macOS: a launchd job,
 * a LaunchDaemon as root (DAEMON) or a LaunchAgent in the GUI (LOGIN) or
 * background (BACKGROUND) domain (service_darwin.go). The system is chosen
 * at run time (uname), so both paths run, and are tested, on Linux.
 *
 * Environment knobs (tests point them at temporary places, so that nothing
 * is written to /etc or /Library): DEVOPS_SYSTEMD_SYSTEM_DIR,
 * DEVOPS_RC_LOCAL, DEVOPS_LAUNCHD_DAEMON_DIR, DEVOPS_AUTOSTART
 * (auto|systemd|none), plus the test-only DEVOPS_AGENT_TEST_OS and
 * DEVOPS_AGENT_TEST_UID. docs/devopsAgent.md lists them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "archive.h"
#include "cli.h"
#include "fsutil.h"
#include "log.h"
#include "util.h"

#define SVC_NAME_MAX		256
#define DAEMON_WAIT_MS		10000
#define AGENT_WAIT_MS		10000	/* after the daemon runs */
#define JDK_UNPACK_MAX		(4ULL * 1024 * 1024 * 1024)	/* bytes */

/* The system the service commands act for: "linux" or "darwin". */
const char *
cli_os(void)
{
	const char *v = getenv("DEVOPS_AGENT_TEST_OS");
	struct utsname u;

	if (v != NULL && (strcmp(v, "linux") == 0 || strcmp(v, "darwin") == 0))
		return v;
	if (uname(&u) == 0 && strcmp(u.sysname, "Darwin") == 0)
		return "darwin";
	return "linux";
}

/* 1 on macOS. */
static int
is_darwin(void)
{
	return strcmp(cli_os(), "darwin") == 0;
}

/* getenv with a default for blank values. */
static const char *
env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? v : dflt;
}

/* The user's home directory. */
static const char *
home_dir(void)
{
	return env_or("HOME", "/");
}

/* Read .install_type (upper-cased, trimmed) into buf; "" when missing. */
static void
install_type_read(char *buf, size_t size)
{
	char *text = NULL, *p;
	size_t len;

	buf[0] = '\0';
	if (fs_read_regular(CLI_INSTALL_TYPE, 4096, &text, &len) == -1)
		return;
	for (p = text; *p; p++)
		if (*p >= 'a' && *p <= 'z')
			*p = (char)(*p - 'a' + 'A');
	strlcpy_(buf, str_trim(text), size);
	free(text);
}

/* Write .install_type = mode (0644). */
static void
install_type_write(const char *mode)
{
	if (fs_write_atomic(CLI_INSTALL_TYPE, mode, strlen(mode), 0644) == -1)
		cli_warn("failed to write %s: %s", CLI_INSTALL_TYPE, strerror(errno));
	else
		cli_say("Install type set to %s", mode);
}

/* Sleep ms milliseconds. */
static void
sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Wait up to ms for our process name (binary) to run; its pid or 0. */
static long
live_wait(const char *name, const char *binary, int ms)
{
	int64_t end = mono_ms() + ms;
	long pid;

	while ((pid = cli_live_pid(name, binary)) == 0 && mono_ms() < end)
		sleep_ms(100);
	return pid;
}

/*
 * After the daemon runs: wait for the agent it starts to hold its lock and
 * name itself in runtime/agent.pid, so that a `stop` right after this
 * command finds it (an agent still starting has no pid file yet). Only a
 * warning when it does not come: the daemon keeps trying.
 */
static void
agent_wait(void)
{
	long pid = live_wait("agent", "devopsAgent", AGENT_WAIT_MS);

	if (pid > 0)
		cli_say("devopsAgent is running (pid %ld)", pid);
	else
		cli_warn("devopsAgent is not running after %d s; the daemon keeps "
		    "starting it; see logs/devopsAgent.log", AGENT_WAIT_MS / 1000);
}

/* Run a service-manager command; print its output when it fails. 0 or -1. */
static int
svc_cmd(int quiet, char *argv[])
{
	char *out = NULL;
	int rc = cli_run(argv, CLI_CMD_TIMEOUT_MS, &out);

	if (rc != 0 && !quiet)
		cli_warn("%s %s%s%s: %s", argv[0], argv[1], argv[2] ? " " : "",
		    argv[2] ? argv[2] : "", out && *out ? out :
		    rc == -1 ? "failed" : "non-zero exit");
	free(out);
	return rc == 0 ? 0 : -1;
}

/* Unzip zip into dir (force: remove dir first; else only when missing). */
static void
unzip_if_needed(const char *zip, const char *dir, int force)
{
	struct archive_stats st;
	char err[512];

	if (!fs_is_file(zip)) {
		cli_warn("%s not found, skipped", zip);
		return;
	}
	if (fs_exists(dir)) {
		if (!force)
			return;
		cli_say("removing %s for re-extract", dir);
		if (fs_rm_rf(dir) == -1) {
			cli_warn("cannot remove %s: %s", dir, strerror(errno));
			return;
		}
	}
	cli_say("extracting %s ...", zip);
	if (archive_unpack(zip, dir, JDK_UNPACK_MAX, &st, err, sizeof(err)) == -1) {
		cli_warn("extract %s failed: %s", zip, err);
		(void)fs_rm_rf(dir);
		return;
	}
	if (st.rejected > 0)
		cli_warn("%s: %lu unsafe entries skipped", zip, st.rejected);
}

/* Unzip the JDKs when needed; mkdir logs and workspace. */
void
cli_prepare_workdir(int force)
{
	unzip_if_needed("jdk17.zip", "jdk17", force);
	unzip_if_needed("jre.zip", "jdk", force);
	if (fs_mkdir_p("logs", 0755) == -1 || fs_mkdir_p("workspace", 0755) == -1)
		cli_warn("cannot create logs/ or workspace/: %s", strerror(errno));
}

/* Service name or an error printed. 0 or -1. */
static int
svc_name(char *buf, size_t size)
{
	char err[512];

	if (cli_service_name(buf, size, err, sizeof(err)) == -1) {
		cli_error("%s", err);
		return -1;
	}
	return 0;
}

/* chmod 0755 both binaries (an unzip or a copy may have lost the x bit). */
static void
binaries_chmod(void)
{
	if (chmod("devopsDaemon", 0755) == -1 || chmod("devopsAgent", 0755) == -1)
		cli_warn("chmod 0755 devopsDaemon devopsAgent: %s", strerror(errno));
}

/* Start the daemon detached and say so. 0 or -1. */
static int
start_direct(const char *workdir)
{
	long pid;

	binaries_chmod();
	if ((pid = cli_start_direct(workdir)) == -1)
		return -1;
	cli_say("Daemon started, PID=%ld", pid);
	return 0;
}

/* ------------------------------------------------------------ systemd */

/* Where the system (user = 0) or user (user = 1) unit lives. New string. */
static char *
unit_path(int user, const char *name)
{
	const char *xdg = getenv("XDG_CONFIG_HOME");

	if (!user)
		return xasprintf("%s/%s.service",
		    env_or("DEVOPS_SYSTEMD_SYSTEM_DIR", "/etc/systemd/system"), name);
	if (xdg != NULL && *xdg == '/')
		return xasprintf("%s/systemd/user/%s.service", xdg, name);
	return xasprintf("%s/.config/systemd/user/%s.service", home_dir(), name);
}

/* 1 when the unit file exists. */
static int
unit_exists(int user, const char *name)
{
	char *p = unit_path(user, name);
	int r = fs_is_file(p);

	free(p);
	return r;
}

/* systemctl [--user] a b: 0 or -1. */
static int
sctl(int user, int quiet, const char *a, const char *b, const char *c)
{
	char *argv[6];
	int i = 0;

	argv[i++] = "systemctl";
	if (user)
		argv[i++] = "--user";
	argv[i++] = (char *)a;
	if (b != NULL)
		argv[i++] = (char *)b;
	if (c != NULL)
		argv[i++] = (char *)c;
	argv[i] = NULL;
	return svc_cmd(quiet, argv);
}

/* 1 when `systemctl [--user] is-system-running` says systemd is usable. */
static int
systemd_running(int user)
{
	char *argv[] = { "systemctl", user ? "--user" : "is-system-running",
	    user ? "is-system-running" : NULL, NULL };
	char *out = NULL;
	int rc, ok;

	rc = cli_run(argv, CLI_CMD_TIMEOUT_MS, &out);
	ok = rc == 0 || (rc > 0 && out != NULL &&
	    (strcmp(out, "degraded") == 0 || strcmp(out, "starting") == 0));
	free(out);
	return ok;
}

/* Is systemd there (DEVOPS_AUTOSTART=systemd|none decides without asking)? */
static int
has_systemd(int user)
{
	const char *a = env_or("DEVOPS_AUTOSTART", "auto");

	if (user && cli_is_root())
		return 0;
	if (strcmp(a, "none") == 0)
		return 0;
	if (!cli_have("systemctl"))
		return 0;
	if (strcmp(a, "systemd") == 0)
		return 1;
	return systemd_running(user);
}

/* Stop, disable and delete a unit when its file exists. */
static void
unit_remove(int user, const char *name)
{
	char *p = unit_path(user, name);

	if (fs_is_file(p)) {
		(void)sctl(user, 1, "stop", name, NULL);
		(void)sctl(user, 1, "disable", name, NULL);
		(void)sctl(user, 1, "reset-failed", name, NULL);
		if (unlink(p) == -1)
			cli_warn("cannot delete %s: %s", p, strerror(errno));
		(void)sctl(user, 1, "daemon-reload", NULL, NULL);
		cli_say("%s service %s removed", user ? "User systemd" : "Systemd", name);
	}
	free(p);
}

/* 1 when line names the service (the name not followed by more id chars). */
static int
line_names(const char *line, const char *name)
{
	const char *p = line;
	size_t n = strlen(name);

	while ((p = strstr(p, name)) != NULL) {
		char c = p[n];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
			return 1;
		p += n;
	}
	return 0;
}

/* Drop the rc.local lines that start this agent (older installers). */
static void
rc_local_clean(const char *name)
{
	const char *rc = env_or("DEVOPS_RC_LOCAL", "/etc/rc.d/rc.local");
	char *text = NULL, *out, *line, *next;
	size_t len, olen = 0;
	struct stat st;
	int dropped = 0;

	if (fs_read_regular(rc, (size_t)1024 * 1024, &text, &len) == -1)
		return;
	if (stat(rc, &st) == -1) {
		free(text);
		return;
	}
	out = xmalloc(len + 1);
	for (line = text; *line; line = next) {
		size_t l;
		next = strchr(line, '\n');
		next = next ? next + 1 : line + strlen(line);
		l = (size_t)(next - line);
		{
			char *one = xstrndup(line, l);
			int drop = line_names(one, name);
			free(one);
			if (drop) {
				dropped++;
				continue;
			}
		}
		memcpy(out + olen, line, l);
		olen += l;
	}
	if (dropped > 0) {
		if (fs_write_atomic(rc, out, olen, st.st_mode & 07777) == -1)
			cli_warn("cannot rewrite %s: %s", rc, strerror(errno));
		else
			cli_say("Cleaned %d %s entr%s", dropped, rc, dropped == 1 ? "y" : "ies");
	}
	free(out);
	free(text);
}

/*
 * The unit text (GoAgent's installSystemd / installUserSystemd), plus
 * Delegate=yes: the agent then owns its cgroup subtree and puts each build
 * in a cgroup of its own, which ends every process of the build
 * (docs/durability.md). With KillMode=none stopping the unit still kills
 * nothing, as with GoAgent's unit.
 */
static char *
unit_text(int user, const char *workdir, const char *name)
{
	return xasprintf(
	    "[Unit]\n"
	    "Description=BK-CI Agent Daemon (%s)\n"
	    "After=network.target\n"
	    "\n"
	    "[Service]\n"
	    "Type=simple\n"
	    "ExecStartPre=/bin/rm -f %s/runtime/daemon.pid %s/runtime/agent.pid\n"
	    "ExecStart=%s/devopsDaemon\n"
	    "WorkingDirectory=%s\n"
	    "KillMode=none\n"
	    "Delegate=yes\n"
	    "%s"
	    "\n"
	    "[Install]\n"
	    "WantedBy=%s\n",
	    name, workdir, workdir, workdir, workdir,
	    user ? "" : "PrivateTmp=false\n",
	    user ? "default.target" : "multi-user.target");
}

/* Write the unit, daemon-reload, enable --now. 0 or -1. */
static int
unit_install(int user, const char *workdir, const char *name)
{
	char *path = unit_path(user, name), *dir, *text, *slash;
	int rc = -1;

	binaries_chmod();
	dir = xstrdup(path);
	if ((slash = strrchr(dir, '/')) != NULL)
		*slash = '\0';
	text = unit_text(user, workdir, name);
	if (fs_mkdir_p(dir, 0755) == -1 ||
	    fs_write_atomic(path, text, strlen(text), 0644) == -1) {
		cli_error("write %ssystemd unit %s failed: %s", user ? "user " : "",
		    path, strerror(errno));
		goto out;
	}
	cli_say("Created %ssystemd unit: %s", user ? "user " : "", path);
	if (sctl(user, 0, "daemon-reload", NULL, NULL) == -1) {
		cli_error("systemctl%s daemon-reload failed", user ? " --user" : "");
		goto out;
	}
	if (sctl(user, 0, "enable", "--now", name) == -1) {
		cli_error("systemctl%s enable --now %s failed", user ? " --user" : "", name);
		goto out;
	}
	cli_say("%service %s enabled and started", user ? "User s" : "S", name);
	rc = 0;
out:
	free(text);
	free(dir);
	free(path);
	return rc;
}

/* USER mode: loginctl enable-linger unless it is on; warnings only. */
static void
linger_ensure(void)
{
	char *user = cli_user_name(), *flag, *out = NULL, *pw = NULL;
	char *argv[] = { "loginctl", "enable-linger", NULL };
	char *needle;
	size_t len;

	flag = xasprintf("%s/%s", env_or("DEVOPS_LINGER_DIR", "/var/lib/systemd/linger"),
	    user);
	if (fs_exists(flag)) {
		cli_say("Linger already enabled for %s.", user);
	} else if (cli_run(argv, CLI_CMD_TIMEOUT_MS, &out) == 0) {
		cli_say("Linger enabled for user %s (service survives logout).", user);
	} else {
		cli_warn("Failed to enable linger: %s", out && *out ? out : "loginctl failed");
		cli_warn("  Without linger, the service stops when you log out. To "
		    "enable it: sudo loginctl enable-linger %s", user);
	}
	/* A directory (LDAP/SSSD) user is unknown to logind early at boot. */
	needle = xasprintf("\n%s:", user);
	if (fs_read_file("/etc/passwd", (size_t)4 * 1024 * 1024, &pw, &len) == 0) {
		char *all = xasprintf("\n%s", pw);
		if (strstr(all, needle) == NULL)
			cli_warn("%s is not in /etc/passwd (a network account?): linger "
			    "may not start the service at boot; use a root install "
			    "(sudo ./devopsAgent install) for a reliable autostart", user);
		free(all);
	}
	free(needle);
	free(pw);
	free(out);
	free(flag);
	free(user);
}

/* A path a unit file can hold unquoted. */
static int
unit_path_ok(const char *workdir)
{
	return strpbrk(workdir, " \t\n\"'\\%;$") == NULL;
}

/* ------------------------------------------------------------ launchd */

/* 1 for the launchd modes. */
static int
mode_launchd(const char *mode)
{
	return strcmp(mode, "DAEMON") == 0 || strcmp(mode, "LOGIN") == 0 ||
	    strcmp(mode, "BACKGROUND") == 0;
}

/* The plist path of a mode. New string. */
static char *
plist_path(const char *mode, const char *name)
{
	if (strcmp(mode, "DAEMON") == 0)
		return xasprintf("%s/%s.plist",
		    env_or("DEVOPS_LAUNCHD_DAEMON_DIR", "/Library/LaunchDaemons"), name);
	return xasprintf("%s/Library/LaunchAgents/%s.plist", home_dir(), name);
}

/* The launchd domain of a mode. New string. */
static char *
launchd_domain(const char *mode)
{
	if (strcmp(mode, "DAEMON") == 0)
		return xstrdup("system");
	return xasprintf("%s/%lu", strcmp(mode, "LOGIN") == 0 ? "gui" : "user", cli_uid());
}

/* XML-escape s. New string. */
static char *
xml_escape(const char *s)
{
	size_t n = 0;
	char *out = xmalloc(strlen(s) * 5 + 1);

	for (; *s; s++) {
		const char *r = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" :
		    *s == '>' ? "&gt;" : NULL;
		if (r != NULL) {
			memcpy(out + n, r, strlen(r));
			n += strlen(r);
		} else {
			out[n++] = *s;
		}
	}
	out[n] = '\0';
	return out;
}

/*
 * The launchd job. KeepAlive restarts the daemon only after a crash, not
 * after exit 0 (stopped) or 88 (agent deleted on the server).
 * AbandonProcessGroup: launchd must not kill what the daemon started when
 * the daemon ends. PATH is the installing shell's, for the builds.
 */
static char *
plist_text(const char *workdir, const char *name)
{
	char *wd = xml_escape(workdir), *path = xml_escape(env_or("PATH", "/usr/bin:/bin"));
	char *t;

	t = xasprintf(
	    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	    "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
	    "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
	    "<plist version=\"1.0\">\n<dict>\n"
	    "\t<key>Label</key>\n\t<string>%s</string>\n"
	    "\t<key>ProgramArguments</key>\n\t<array>\n"
	    "\t\t<string>%s/devopsDaemon</string>\n\t</array>\n"
	    "\t<key>WorkingDirectory</key>\n\t<string>%s</string>\n"
	    "\t<key>RunAtLoad</key>\n\t<true/>\n"
	    "\t<key>KeepAlive</key>\n\t<dict>\n\t\t<key>Crashed</key>\n\t\t<true/>\n\t</dict>\n"
	    "\t<key>AbandonProcessGroup</key>\n\t<true/>\n"
	    "\t<key>ProcessType</key>\n\t<string>Standard</string>\n"
	    "\t<key>EnvironmentVariables</key>\n\t<dict>\n"
	    "\t\t<key>PATH</key>\n\t\t<string>%s</string>\n\t</dict>\n"
	    "\t<key>StandardOutPath</key>\n\t<string>/dev/null</string>\n"
	    "\t<key>StandardErrorPath</key>\n\t<string>/dev/null</string>\n"
	    "</dict>\n</plist>\n", name, wd, wd, path);
	free(wd);
	free(path);
	return t;
}

/* launchctl a b c. 0 or -1. */
static int
lctl(int quiet, const char *a, const char *b, const char *c)
{
	char *argv[] = { "launchctl", (char *)a, (char *)b, (char *)c, NULL };

	return svc_cmd(quiet, argv);
}

/* Boot the job out of its domain (or unload the plist). */
static void
launchd_stop(const char *mode, const char *name, const char *plist)
{
	char *domain = launchd_domain(mode), *target = xasprintf("%s/%s", domain, name);

	if (lctl(1, "bootout", target, NULL) == -1)
		(void)lctl(1, "unload", plist, NULL);
	free(target);
	free(domain);
}

/* Load the job (RunAtLoad starts it). 0 or -1. */
static int
launchd_start(const char *mode, const char *name, const char *plist)
{
	char *domain = launchd_domain(mode), *target = xasprintf("%s/%s", domain, name);
	int rc;

	if (lctl(1, "print", target, NULL) == 0)
		rc = lctl(0, "kickstart", target, NULL);
	else if ((rc = lctl(1, "bootstrap", domain, plist)) == -1)
		rc = lctl(0, "load", "-w", plist);
	if (rc == 0)
		cli_say("launchd job %s started (domain %s)", name, domain);
	free(target);
	free(domain);
	return rc;
}

/* Remove the job's plist of every mode (boot it out first). */
static void
launchd_remove_all(const char *name)
{
	static const char *const modes[] = { "DAEMON", "LOGIN", "BACKGROUND" };
	size_t i;

	for (i = 0; i < nitems(modes); i++) {
		char *p = plist_path(modes[i], name);
		if (fs_is_file(p) && (strcmp(modes[i], "DAEMON") == 0) == cli_is_root()) {
			launchd_stop(modes[i], name, p);
			if (unlink(p) == 0)
				cli_say("removed %s", p);
		}
		free(p);
	}
}

/* Write the plist and load it. 0 or -1. */
static int
launchd_install(const char *workdir, const char *mode, const char *name)
{
	char *p = plist_path(mode, name), *dir = xstrdup(p), *slash, *text;
	int rc = -1;

	binaries_chmod();
	if ((slash = strrchr(dir, '/')) != NULL)
		*slash = '\0';
	text = plist_text(workdir, name);
	if (fs_mkdir_p(dir, 0755) == -1 ||
	    fs_write_atomic(p, text, strlen(text), 0644) == -1) {
		cli_error("write %s failed: %s", p, strerror(errno));
		goto out;
	}
	cli_say("Created launchd plist: %s", p);
	rc = launchd_start(mode, name, p);
	if (rc == -1)
		cli_error("cannot load the launchd job %s", name);
out:
	free(text);
	free(dir);
	free(p);
	return rc;
}

/* ------------------------------------------------------------ commands */

/* The mode for `install [arg]`, or NULL (error printed). Static string. */
static const char *
mode_resolve(const char *arg)
{
	if (is_darwin()) {
		if (cli_is_root()) {
			if (arg != NULL)
				cli_warn("running as root: DAEMON mode (LaunchDaemon, system domain)");
			return "DAEMON";
		}
		if (arg == NULL) {
			char *t = xasprintf("gui/%lu", cli_uid());
			int gui = lctl(1, "print", t, NULL) == 0;
			free(t);
			return gui ? "LOGIN" : "BACKGROUND";
		}
		if (strcasecmp(arg, "login") == 0)
			return "LOGIN";
		if (strcasecmp(arg, "background") == 0)
			return "BACKGROUND";
		if (strcasecmp(arg, "direct") == 0)
			return "DIRECT";
		cli_error("unknown install mode: %s (valid: login, background, direct)", arg);
		return NULL;
	}
	if (arg == NULL) {
		if (cli_is_root() && has_systemd(0))
			return "SERVICE";
		if (cli_is_root())
			cli_warn("No systemd detected (container?), falling back to direct start.");
		return "DIRECT";
	}
	if (strcasecmp(arg, "user") == 0) {
		if (cli_is_root()) {
			cli_error("install user is for non-root users. Root should use: "
			    "sudo devopsAgent install");
			return NULL;
		}
		if (!has_systemd(1)) {
			cli_error("install user requires a user systemd session, but it is "
			    "not available (check: systemctl --user is-system-running)");
			return NULL;
		}
		return "USER";
	}
	if (strcasecmp(arg, "direct") == 0)
		return "DIRECT";
	cli_error("unknown install mode: %s (valid: user, direct)", arg);
	return NULL;
}

/* Remove every registration of this agent and stop it. */
static void
registrations_remove(const char *name)
{
	if (is_darwin()) {
		launchd_remove_all(name);
		return;
	}
	if (unit_exists(0, name))
		unit_remove(0, name);
	if (!cli_is_root() && unit_exists(1, name))
		unit_remove(1, name);
	rc_local_clean(name);
}

/* `uninstall`. */
int
cli_uninstall(const char *workdir)
{
	char name[SVC_NAME_MAX];
	int rc = 0;

	(void)workdir;
	cli_say("============================================");
	cli_say("Uninstalling agent daemon service (%s)", is_darwin() ? "macOS" : "Linux");
	cli_say("============================================");
	if (svc_name(name, sizeof(name)) == 0)
		registrations_remove(name);
	else
		rc = 1;
	cli_say("Stopping processes ...");
	if (cli_stop_processes() == -1)
		rc = 1;
	if (unlink(CLI_INSTALL_TYPE) == -1 && errno != ENOENT)
		cli_warn("cannot delete %s: %s", CLI_INSTALL_TYPE, strerror(errno));
	if (rc == 0)
		cli_say("Uninstall complete");
	return rc;
}

/* `install [mode]`. */
int
cli_install(const char *workdir, int argc, char **argv)
{
	char name[SVC_NAME_MAX];
	const char *mode;
	long pid;
	int rc = 0;

	if (argc > 3) {
		cli_error("usage: devopsAgent install [mode]");
		return 1;
	}
	if (svc_name(name, sizeof(name)) == -1)
		return 1;
	if ((mode = mode_resolve(argc == 3 ? argv[2] : NULL)) == NULL)
		return 1;
	if ((strcmp(mode, "SERVICE") == 0 || strcmp(mode, "USER") == 0) &&
	    !unit_path_ok(workdir)) {
		cli_error("the install path %s cannot go into a systemd unit (blank, "
		    "quote, backslash, %%, ; or $): use another directory, or "
		    "`devopsAgent install direct`", workdir);
		return 1;
	}
	/* Step 0: the previous install goes first. */
	if (fs_exists(CLI_INSTALL_TYPE)) {
		char old[64];
		install_type_read(old, sizeof(old));
		cli_say("Cleaning up previous %s installation ...", old);
		(void)cli_uninstall(workdir);
	} else {
		cli_say("Cleaning up %s mode before install ...", mode);
		registrations_remove(name);
		(void)cli_stop_processes();
	}
	cli_say("============================================");
	cli_say("Installing agent daemon service (%s, mode: %s)",
	    is_darwin() ? "macOS" : "Linux", mode);
	cli_say("============================================");
	cli_say("Step 1: preparing work directory ...");
	cli_prepare_workdir(0);
	(void)envfile_write();
	if (strcmp(mode, "SERVICE") == 0) {
		cli_say("Step 2: registering systemd service ...");
		rc = unit_install(0, workdir, name);
	} else if (strcmp(mode, "USER") == 0) {
		cli_say("Step 2: registering user systemd service ...");
		rc = unit_install(1, workdir, name);
		if (rc == 0)
			linger_ensure();
	} else if (mode_launchd(mode)) {
		cli_say("Step 2: registering launchd job ...");
		rc = launchd_install(workdir, mode, name);
	} else {
		cli_say("Step 2: starting daemon directly ...");
		rc = start_direct(workdir);
	}
	if (rc == -1)
		return 1;
	install_type_write(mode);
	if ((pid = live_wait("daemon", "devopsDaemon", DAEMON_WAIT_MS)) > 0) {
		cli_say("devopsDaemon is running (pid %ld)", pid);
		agent_wait();
	} else
		cli_warn("devopsDaemon is not running yet; see logs/devopsDaemon.log");
	cli_say("Install complete");
	return 0;
}

/* `start`. */
int
cli_start(const char *workdir)
{
	char name[SVC_NAME_MAX], mode[64], *how = NULL;
	long pid;
	int rc = 0;

	(void)envfile_write();
	if (svc_name(name, sizeof(name)) == -1)
		return 1;
	if ((pid = cli_live_pid("daemon", "devopsDaemon")) > 0) {
		cli_say("devopsDaemon is already running (pid %ld)", pid);
		return 0;
	}
	cli_prepare_workdir(0);
	install_type_read(mode, sizeof(mode));
	if (strcmp(mode, "SERVICE") == 0 || strcmp(mode, "USER") == 0) {
		int user = strcmp(mode, "USER") == 0;
		if (unit_exists(user, name)) {
			cli_say("Starting service %s via systemctl%s ...", name,
			    user ? " --user" : "");
			if (sctl(user, 0, "start", name, NULL) == -1) {
				cli_error("systemctl%s start %s failed", user ? " --user" : "",
				    name);
				return 1;
			}
			how = xasprintf("systemd unit %s", name);
		}
	} else if (mode_launchd(mode)) {
		char *p = plist_path(mode, name);
		if (fs_is_file(p)) {
			cli_say("Starting %s via launchctl ...", name);
			rc = launchd_start(mode, name, p);
			how = xasprintf("launchd job %s", name);
		}
		free(p);
		if (rc == -1) {
			free(how);
			cli_error("launchctl could not start %s", name);
			return 1;
		}
	}
	if (how == NULL) {
		if (start_direct(workdir) == -1)
			return 1;
		how = xstrdup("direct");
	}
	if ((pid = live_wait("daemon", "devopsDaemon", DAEMON_WAIT_MS)) > 0) {
		cli_say("devopsDaemon started (pid %ld, %s)", pid, how);
		agent_wait();
		rc = 0;
	} else {
		cli_error("devopsDaemon did not start; see %s/logs/devopsDaemon.log", workdir);
		rc = 1;
	}
	free(how);
	return rc;
}

/* `stop`: the service manager first, then always by pid file. */
int
cli_stop(const char *workdir)
{
	char name[SVC_NAME_MAX], mode[64];
	int named;

	(void)workdir;
	named = svc_name(name, sizeof(name)) == 0;
	install_type_read(mode, sizeof(mode));
	if (named && (strcmp(mode, "SERVICE") == 0 || strcmp(mode, "USER") == 0)) {
		int user = strcmp(mode, "USER") == 0;
		if (unit_exists(user, name)) {
			cli_say("Stopping service %s via systemctl%s ...", name,
			    user ? " --user" : "");
			(void)sctl(user, 0, "stop", name, NULL);
		}
	} else if (named && mode_launchd(mode)) {
		char *p = plist_path(mode, name);
		if (fs_is_file(p)) {
			cli_say("Stopping %s via launchctl ...", name);
			launchd_stop(mode, name, p);
		}
		free(p);
	}
	/* The units use KillMode=none: the processes are ours to stop. */
	if (cli_stop_processes() == -1)
		return 1;
	cli_say("Agent stopped");
	return named ? 0 : 1;
}

/* `repair`. */
int
cli_repair(const char *workdir)
{
	cli_say("Repair: stopping ...");
	(void)cli_stop(workdir);
	cli_say("Repair: unzipping the JDKs again ...");
	cli_prepare_workdir(1);
	cli_say("Repair: starting ...");
	return cli_start(workdir);
}
