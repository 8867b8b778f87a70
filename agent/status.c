/*
 * status.c - `devopsAgent status [--json]`: a health report of the install
 * in the cwd, after GoAgent's diagnose checks
 * (src/agent/agent/src/pkg/agentcli/diagnose.go, status_linux.go):
 * service registration, daemon and agent processes (pid files verified
 * against the binaries), .agent.properties (secret masked), the JDKs and
 * worker-agent.jar, free disk and a write test, the gateway (DNS, TCP and
 * TLS, then an authenticated HTTP GET, each with a deadline) and the last
 * error lines of the logs.
 *
 * On top of GoAgent's checks: the running agent's own facts from
 * runtime/status.json (mode, poll mode, last successes and error, the
 * server's agentStatus, builds, outbox, disk guard; ops.c writes it), the
 * gateway's DNS, TCP, TLS (certificate expiry) and HTTP steps timed one by
 * one, the server's agentStatus, clock skew against its Date header, free
 * inodes, .agent.properties permissions and the cgroup mechanism. Every
 * failed check says what to do next in one line.
 *
 * Exit codes (the most important class of the failed checks wins, in this
 * order): 3 the daemon or the agent is not running; 4 .agent.properties
 * missing, invalid or writable by others; 5 the server is unreachable
 * (DNS, TCP, TLS or HTTP); 6 the server does not accept this agent
 * (agentStatus not IMPORT_OK, HTTP 401/403); 7 disk (free space or inodes
 * under the disk guard's thresholds, write test); 2 any other check; 0 all
 * passed; 1 usage error.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "agent.h"
#include "cli.h"
#include "config.h"
#include "fsutil.h"
#include "lock.h"
#include "json.h"
#include "log.h"
#include "ops.h"
#include "util.h"

#define STATUS_CONNECT_MS	5000
#define STATUS_HTTP_MS		10000
#define STATUS_LOG_TAIL		((off_t)256 * 1024)	/* bytes read from each log */
#define STATUS_LOG_LINES	5

/* Classes of failed checks, by exit code (see the header). */
enum cls { C_OTHER = 2, C_DOWN = 3, C_CONFIG = 4, C_SERVER = 5,
	C_REFUSED = 6, C_DISK = 7 };

struct report {
	cJSON	*root;
	cJSON	*checks;
	cJSON	*log_errors;	/* strings: "<log>: <line>" */
	int	 json;
	int	 failed[8];	/* failed[cls]: a check of that class failed */
	int	 down;		/* daemon or agent not running */
	long	 agent_pid;	/* running agent, or 0 */
};

/* Record one check: print it, or add it to the JSON array. */
static void
check(struct report *r, const char *name, int ok, enum cls cls,
    const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Record one check; a failed one counts for its class and says what to do. */
static void
check(struct report *r, const char *name, int ok, enum cls cls,
    const char *hint, const char *fmt, ...)
{
	va_list ap;
	char *text;

	va_start(ap, fmt);
	text = xvasprintf(fmt, ap);
	va_end(ap);
	if (!ok)
		r->failed[cls] = 1;
	if (r->json) {
		cJSON *c = cJSON_CreateObject();
		cJSON_AddStringToObject(c, "name", name);
		cJSON_AddBoolToObject(c, "ok", ok);
		cJSON_AddStringToObject(c, "detail", text);
		if (!ok) {
			cJSON_AddNumberToObject(c, "class", cls);
			cJSON_AddStringToObject(c, "hint", hint);
		}
		cJSON_AddItemToArray(r->checks, c);
	} else {
		cli_say("  %s %s: %s", ok ? "\xe2\x9c\x93" : "\xe2\x9c\x97", name, text);
		if (!ok && hint != NULL && *hint != '\0')
			cli_say("      -> %s", hint);
	}
	free(text);
}

/* Record a fact (not a check). */
static void
fact(struct report *r, const char *name, const char *value)
{
	if (r->json)
		cJSON_AddStringToObject(r->root, name, value);
	else
		cli_say("%s: %s", name, value);
}

/* Print a section title (text mode only). */
static void
section(const struct report *r, const char *title)
{
	if (!r->json) {
		cli_say("%s", "");
		cli_say("%s", title);
		cli_say("--------------------------------------------");
	}
}

/* The secret with everything but its ends masked. New string. */
static char *
mask_secret(const char *s)
{
	size_t n = strlen(s);

	if (n <= 8)
		return xstrdup("****");
	return xasprintf("%.2s****%s", s, s + n - 2);
}

/* Service registration facts. */
static void
status_service(struct report *r, const char *name)
{
	char mode[64] = "", *text = NULL, *out = NULL;
	size_t len;

	if (fs_read_regular(CLI_INSTALL_TYPE, 4096, &text, &len) == 0) {
		strlcpy_(mode, str_trim(text), sizeof(mode));
		free(text);
	}
	fact(r, "install_mode", *mode ? mode : "(not installed)");
	if (name == NULL)
		return;
	if (strcmp(mode, "SERVICE") == 0 || strcmp(mode, "USER") == 0) {
		int user = strcmp(mode, "USER") == 0;
		char *argv[8];
		int i = 0, rc;

		argv[i++] = "systemctl";
		if (user)
			argv[i++] = "--user";
		argv[i++] = "show";
		argv[i++] = "-p";
		argv[i++] = "MainPID,ActiveState,ActiveEnterTimestamp";
		argv[i++] = (char *)name;
		argv[i] = NULL;
		rc = cli_run(argv, CLI_CMD_TIMEOUT_MS, &out);
		if (out != NULL)
			for (char *p = out; *p; p++)
				if (*p == '\n')
					*p = ' ';
		check(r, "service", rc == 0, C_OTHER, "run `devopsAgent install` "
		    "again, or see `systemctl status` of the unit", "%s", rc == 0 && out ? out :
		    (out ? out : "systemctl show failed"));
		if (user) {
			char *u = cli_user_name();
			const char *dir = getenv("DEVOPS_LINGER_DIR");
			char *flag = xasprintf("%s/%s", dir != NULL && *dir != '\0' ? dir :
			    "/var/lib/systemd/linger", u);
			check(r, "linger", fs_exists(flag), C_OTHER, "run `loginctl "
			    "enable-linger` for this user", "%s", fs_exists(flag) ? "on" :
			    "off: the service stops at logout");
			free(flag);
			free(u);
		}
	} else if (*mode == '\0') {
		fact(r, "service", "not registered");
	} else if (strcmp(mode, "DIRECT") == 0) {
		fact(r, "service", "direct mode (no service manager)");
	} else {
		fact(r, "service", "launchd job");
	}
	free(out);
}

/* Daemon and agent processes. */
static void
status_processes(struct report *r)
{
	static const char *const names[][2] = {
		{ "daemon", "devopsDaemon" }, { "agent", "devopsAgent" } };
	size_t i;

	for (i = 0; i < nitems(names); i++) {
		long pid = cli_live_pid(names[i][0], names[i][1]);
		long file = pidfile_read(names[i][0]);
		if (pid > 0) {
			check(r, names[i][0], 1, C_DOWN, NULL, "running, pid %ld", pid);
			if (i == 1)
				r->agent_pid = pid;
		} else {
			r->down = 1;
			if (file > 0)
				check(r, names[i][0], 0, C_DOWN, "run `devopsAgent start`, "
				    "then read logs/devopsDaemon.log if it stops again",
				    "not running (runtime/%s.pid names "
				    "pid %ld, which is not %s)", names[i][0], file, names[i][1]);
			else
				check(r, names[i][0], 0, C_DOWN, "run `devopsAgent start`, "
				    "then read logs/devopsDaemon.log if it stops again",
				    "not running");
		}
	}
}

/* .agent.properties: a regular file of ours that only we may write. */
static void
status_properties_mode(struct report *r)
{
	struct stat st;

	if (lstat(CONFIG_FILE, &st) == -1 || !S_ISREG(st.st_mode)) {
		check(r, "properties mode", 0, C_CONFIG, "replace it by a regular "
		    "file", "not a regular file");
		return;
	}
	if (st.st_uid != geteuid() || (st.st_mode & 022) != 0) {
		check(r, "properties mode", 0, C_CONFIG, "chown it to the agent's "
		    "user and chmod 600 .agent.properties", "mode %03o, owner uid "
		    "%ld: another user can change the agent's identity",
		    (unsigned)(st.st_mode & 0777), (long)st.st_uid);
		return;
	}
	check(r, "properties mode", 1, C_CONFIG, NULL, "mode %03o%s",
	    (unsigned)(st.st_mode & 0777), (st.st_mode & 044) != 0 ?
	    " (readable by others: chmod 600 keeps the secret to the agent)" : "");
}

/* .agent.properties: parses, the required keys. Fills *c on success. */
static int
status_properties(struct report *r, struct config *c)
{
	char err[512], *masked;

	if (!fs_is_file(CONFIG_FILE)) {
		check(r, CONFIG_FILE, 0, C_CONFIG, "download the agent package of "
		    "this agent from the server again, or restore "
		    ".agent.properties.bak", "missing");
		return -1;
	}
	if (config_load(c, CONFIG_FILE, A.workdir, err, sizeof(err)) == -1) {
		check(r, CONFIG_FILE, 0, C_CONFIG, "fix the line named here, or "
		    "restore .agent.properties.bak", "%s", err);
		return -1;
	}
	masked = mask_secret(c->secret_key);
	check(r, CONFIG_FILE, 1, C_CONFIG, NULL, "project %s, agent %s, secret %s, gateway %s, "
	    "env %s, parallel %d", c->project_id, c->agent_id, masked, c->gateway,
	    c->env, c->parallel_task_count);
	free(masked);
	status_properties_mode(r);
	return 0;
}

/* JDKs and the worker. */
static void
status_files(struct report *r)
{
	check(r, "jdk17", fs_is_dir("jdk17"), C_OTHER, "run `devopsAgent repair`",
	    "%s", fs_is_dir("jdk17") ? "present" :
	    "missing (devopsAgent repair unzips jdk17.zip)");
	check(r, "jdk", fs_is_dir("jdk"), C_OTHER, "run `devopsAgent repair`",
	    "%s", fs_is_dir("jdk") ? "present" :
	    "missing (devopsAgent repair unzips jre.zip)");
	check(r, "worker-agent.jar", fs_is_file("worker-agent.jar"), C_OTHER,
	    "copy worker-agent.jar from the agent package into the install dir",
	    "%s", fs_is_file("worker-agent.jar") ? "present" : "missing");
	check(r, ".cert", 1, C_OTHER, NULL, "%s", fs_is_file(".cert") ? "present (extra CA "
	    "certificates)" : "none");
}

/* Free space and inodes of one directory's file system against the guard. */
static void
status_disk_of(struct report *r, const char *name, const char *dir,
    long long min_mb, int min_pct)
{
	struct statvfs vfs;
	unsigned long long avail, min = (unsigned long long)(min_mb > 0 ? min_mb : 0)
	    * 1024 * 1024;
	double pct;
	int ok;

	if (statvfs(dir, &vfs) == -1) {
		check(r, name, errno == ENOENT, C_DISK, "check the install dir's "
		    "file system", "statvfs %s: %s", dir, strerror(errno));
		return;
	}
	avail = (unsigned long long)vfs.f_bavail * vfs.f_frsize;
	pct = vfs.f_files > 0 ? (double)vfs.f_favail * 100.0 / (double)vfs.f_files :
	    100.0;
	ok = (min == 0 || avail >= min) && (min_pct <= 0 || pct >= min_pct);
	check(r, name, ok, C_DISK, "free space on this file system: old "
	    "workspaces, logs, build_tmp; the agent claims no build until then",
	    "%s: %.2f GiB free (guard %lld MiB), %.1f %% inodes free (guard %d %%)",
	    dir, (double)avail / (1024.0 * 1024 * 1024), min_mb, pct, min_pct);
}

/* Free disk and inodes of the install dir and build_tmp, and a write test. */
static void
status_disk(struct report *r, const struct config *c)
{
	const char *probe = ".health_check_write_test";
	long long min_mb = c != NULL ? c->disk_min_free_mb : 2048;
	int min_pct = c != NULL ? c->disk_min_inodes_pct : 5, ok;

	status_disk_of(r, "disk", ".", min_mb, min_pct);
	status_disk_of(r, "disk build_tmp", "build_tmp", min_mb, min_pct);
	ok = fs_write_atomic(probe, "ok\n", 3, 0644) == 0;
	check(r, "write test", ok, C_DISK, "check the file system is not full "
	    "or read-only and the install dir belongs to the agent's user",
	    "%s", ok ? "ok" : strerror(errno));
	(void)unlink(probe);
}

/* How the running agent ends build trees: cgroup v2 or process groups. */
static void
status_cgroup(struct report *r, const cJSON *state)
{
	const cJSON *t = json_get(state, "processTree");

	if (cJSON_IsString(t)) {
		check(r, "cgroup", 1, C_OTHER, NULL, "%s", t->valuestring);
		return;
	}
	check(r, "cgroup", 1, C_OTHER, NULL, "%s", fs_is_file(
	    "/sys/fs/cgroup/cgroup.controllers") || fs_is_file(
	    "/sys/fs/cgroup/unified/cgroup.controllers") ? "cgroup v2 mounted; the "
	    "running agent says whether it may use it" : "no cgroup v2: builds "
	    "are ended by process group and session");
}

/* "12 s", "5 min", "3 h", "2 d" since t (unix seconds). */
static void
age_str(char *buf, size_t size, double t)
{
	long long a = (long long)time(NULL) - (long long)t;

	if (a < 0)
		a = 0;
	if (a < 120)
		snprintf(buf, size, "%lld s ago", a);
	else if (a < 7200)
		snprintf(buf, size, "%lld min ago", a / 60);
	else if (a < 172800)
		snprintf(buf, size, "%lld h ago", a / 3600);
	else
		snprintf(buf, size, "%lld d ago", a / 86400);
}

/* runtime/status.json of the running agent (ops.c), or NULL. New object. */
static cJSON *
state_read(void)
{
	char *text = NULL;
	size_t len = 0;
	cJSON *o;

	if (fs_read_regular(OPS_STATE_FILE, (size_t)1024 * 1024, &text, &len) == -1)
		return NULL;
	o = cJSON_ParseWithLength(text, len);
	free(text);
	if (o != NULL && !cJSON_IsObject(o)) {
		cJSON_Delete(o);
		o = NULL;
	}
	return o;
}

/* A number member, or 0. */
static double
num_of(const cJSON *o, const char *key)
{
	const cJSON *it = json_get(o, key);

	return cJSON_IsNumber(it) ? it->valuedouble : 0;
}

/* A string member, or dflt. */
static const char *
str_of(const cJSON *o, const char *key, const char *dflt)
{
	const cJSON *it = json_get(o, key);

	return cJSON_IsString(it) ? it->valuestring : dflt;
}

/* The running agent's own facts (runtime/status.json). */
static void
status_state(struct report *r, const cJSON *st)
{
	char age[64], *text;
	const cJSON *last, *err, *builds, *b, *disk;
	double written, started, t;
	struct stat pst;
	int live, i, n = 0;
	static const char *calls[] = { "startup", "heartbeat", "ask" };

	if (st == NULL && r->agent_pid > 0 && stat("runtime/agent.pid", &pst) == 0 &&
	    time(NULL) - pst.st_mtime < 30) {
		check(r, "agent state", 1, C_OTHER, NULL, "the agent has just "
		    "started; runtime/status.json follows within seconds");
		return;
	}
	if (st == NULL) {
		check(r, "agent state", !r->agent_pid, C_OTHER, "the agent writes "
		    "runtime/status.json every 10-15 s: restart it with `devopsAgent "
		    "stop` and `devopsAgent start`", "%s", r->agent_pid ?
		    "runtime/status.json missing or unreadable" :
		    "no runtime/status.json (the agent has not run here yet)");
		return;
	}
	live = r->agent_pid > 0 && (long)num_of(st, "pid") == r->agent_pid;
	written = num_of(st, "written");
	started = num_of(st, "started");
	age_str(age, sizeof(age), written);
	if (r->agent_pid > 0)
		check(r, "agent state", live && time(NULL) - (time_t)written < 60,
		    C_OTHER, "the agent's loop looks stuck: read "
		    "logs/devopsAgent.log, then `devopsAgent stop` and `start`",
		    "runtime/status.json of pid %ld, written %s", (long)num_of(st,
		    "pid"), age);
	else
		fact(r, "last known state", age);
	if (r->json) {
		cJSON_AddItemToObject(r->root, "agent", cJSON_Duplicate(st, 1));
	} else {
		age_str(age, sizeof(age), started);
		cli_say("  version %s, mode %s, poll %s, started %s",
		    str_of(st, "version", "?"), str_of(st, "mode", "?"),
		    str_of(st, "poll", "?"), age);
		last = json_get(st, "lastSuccess");
		for (i = 0; i < 3; i++) {
			t = num_of(last, calls[i]);
			if (t > 0)
				age_str(age, sizeof(age), t);
			cli_say("  last %s: %s", calls[i], t > 0 ? age : "never");
		}
		err = json_get(st, "lastError");
		if (cJSON_IsObject(err)) {
			age_str(age, sizeof(age), num_of(err, "time"));
			cli_say("  last error: %s (%s): %s", age, str_of(err, "what",
			    "?"), str_of(err, "message", ""));
		}
		cli_say("  agentStatus on the server: %s", str_of(st, "agentStatus",
		    "not known yet"));
		builds = json_get(st, "builds");
		cJSON_ArrayForEach(b, builds) {
			age_str(age, sizeof(age), num_of(b, "started"));
			cli_say("  build %s_%s (%s): %s, pid %ld, claimed %s",
			    str_of(b, "buildId", "?"), str_of(b, "vmSeqId", "?"),
			    str_of(b, "projectId", "?"), str_of(b, "state", "?"),
			    (long)num_of(b, "pid"), age);
			n++;
		}
		cli_say("  builds running: %d, finish reports waiting: %d, dead "
		    "letters: %d", n, (int)num_of(st, "outbox"),
		    (int)num_of(st, "deadLetters"));
		if (cJSON_IsString(json_get(st, "notClaiming")))
			cli_say("  not claiming: %s", str_of(st, "notClaiming", ""));
	}
	if (!live)
		return;
	/* Checks on the live agent's facts. */
	last = json_get(st, "lastSuccess");
	t = num_of(last, "heartbeat") > num_of(last, "ask") ?
	    num_of(last, "heartbeat") : num_of(last, "ask");
	err = json_get(st, "lastError");
	if (t > 0) {
		age_str(age, sizeof(age), t);
		check(r, "server contact", time(NULL) - (time_t)t < 120, C_SERVER,
		    "the agent cannot reach the server: see the gateway checks and "
		    "the last error", "last answer %s", age);
	} else if (time(NULL) - (time_t)started < 60) {
		check(r, "server contact", 1, C_SERVER, NULL, "no answer yet "
		    "(the agent started less than a minute ago)");
	} else {
		text = xasprintf("%s", cJSON_IsObject(err) ? str_of(err, "message",
		    "") : "no error recorded");
		check(r, "server contact", 0, C_SERVER, "the agent cannot reach "
		    "the server: see the gateway checks and the last error",
		    "no successful heartbeat or ask since the start: %s", text);
		free(text);
	}
	disk = json_get(st, "diskGuard");
	if (cJSON_IsTrue(json_get(disk, "low")))
		check(r, "disk guard", 0, C_DISK, "free space on the install "
		    "dir's file system; claiming resumes by itself", "%s",
		    str_of(disk, "reason", "low"));
}

/* Finish reports set aside in runtime/deadletter/ (outbox.c). */
static void
status_dead_letters(struct report *r)
{
	DIR *d = opendir("runtime/deadletter");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL)
		if (str_ends(e->d_name, ".json"))
			n++;
	(void)closedir(d);
	check(r, "dead letters", n == 0, C_OTHER, "the server never learnt how "
	    "these builds ended: look them up in the BK-CI web UI, then delete "
	    "the files in runtime/deadletter/", "%d finish report(s) set aside "
	    "in runtime/deadletter/", n);
}

/*
 * Trust the PEM certificates of .cert on top of the system roots, as the
 * agent does (common/http.c). Read with fs_read_regular: a FIFO planted as
 * .cert must not hang the report.
 */
static CURLcode
cert_add(CURL *easy, void *ssl_ctx, void *arg)
{
	X509_STORE *store = SSL_CTX_get_cert_store((SSL_CTX *)ssl_ctx);
	char *pem = NULL;
	size_t len;
	BIO *bio;
	X509 *x;

	(void)easy;
	(void)arg;
	if (fs_read_regular(".cert", (size_t)4 * 1024 * 1024, &pem, &len) == -1)
		return CURLE_OK;
	if ((bio = BIO_new_mem_buf(pem, (int)len)) != NULL) {
		while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
			(void)X509_STORE_add_cert(store, x);
			X509_free(x);
		}
		BIO_free(bio);
	}
	free(pem);
	return CURLE_OK;
}

/* The TLS settings of both probes. */
static void
tls_setup(CURL *e)
{
	if (fs_is_file(".cert"))
		curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, cert_add);
}

/* Keep at most 64 KiB of a response body (the status answer). */
static size_t
body_keep(char *p, size_t size, size_t n, void *arg)
{
	struct { char buf[65536]; size_t len; } *b = arg;
	size_t k = size * n;

	if (k > sizeof(b->buf) - 1 - b->len)
		k = sizeof(b->buf) - 1 - b->len;
	memcpy(b->buf + b->len, p, k);
	b->len += k;
	b->buf[b->len] = '\0';
	return size * n;
}

/* Keep the Date header's time (unix seconds) in *arg. */
static size_t
header_date(char *p, size_t size, size_t n, void *arg)
{
	time_t *t = arg;
	size_t len = size * n;
	char line[256];

	if (len > 5 && len < sizeof(line) && strncasecmp(p, "Date:", 5) == 0) {
		memcpy(line, p + 5, len - 5);
		line[len - 5] = '\0';
		*t = curl_getdate(str_trim(line), NULL);
	}
	return size * n;
}

/* Milliseconds of a curl timing (microseconds) difference. */
static long
ms_of(curl_off_t us)
{
	return (long)(us / 1000);
}

/* The server certificate's days left, from curl's certinfo; -1 unknown. */
static long
cert_days_left(CURL *e)
{
	struct curl_certinfo *ci = NULL;
	struct curl_slist *sl;
	time_t t;

	if (curl_easy_getinfo(e, CURLINFO_CERTINFO, &ci) != CURLE_OK ||
	    ci == NULL || ci->num_of_certs < 1)
		return -1;
	for (sl = ci->certinfo[0]; sl != NULL; sl = sl->next)
		if (strncmp(sl->data, "Expire date:", 12) == 0 &&
		    (t = curl_getdate(sl->data + 12, NULL)) != -1)
			return (long)((t - time(NULL)) / 86400);
	return -1;
}

/* 1 for the curl errors of a TLS handshake or verification. */
static int
tls_error(CURLcode rc)
{
	return rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_PEER_FAILED_VERIFICATION ||
	    rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_CIPHER ||
	    rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_ISSUER_ERROR ||
	    rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH || rc == CURLE_SSL_INVALIDCERTSTATUS;
}

/*
 * The gateway, step by step and timed: DNS, TCP, TLS (https: certificate
 * expiry, .cert in use), then an authenticated GET of the status endpoint
 * (HTTP code, the server's agentStatus, clock skew against its Date).
 */
static void
status_gateway(struct report *r, const struct config *c)
{
	char *url = config_url(c->gateway, EP_STATUS), *base = config_gateway_base(c->gateway);
	struct { char buf[65536]; size_t len; } *body = xcalloc(1, sizeof(*body));
	struct curl_slist *h = NULL;
	char *hdr, *ip = NULL, *st = NULL, err[300];
	int https = strncmp(base, "https://", 8) == 0;
	curl_off_t dns = 0, tcp = 0, tls = 0, total = 0;
	time_t date = -1;
	CURL *e;
	CURLcode rc;
	long code = 0, days;

	if ((e = curl_easy_init()) == NULL) {
		check(r, "gateway", 0, C_OTHER, "out of memory?", "cannot "
		    "initialise libcurl");
		goto out;
	}
	/* Step 1: name lookup, TCP connect and TLS only. */
	curl_easy_setopt(e, CURLOPT_URL, base);
	curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)STATUS_CONNECT_MS);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)STATUS_CONNECT_MS * 2);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_CERTINFO, 1L);
	tls_setup(e);
	rc = curl_easy_perform(e);
	(void)curl_easy_getinfo(e, CURLINFO_NAMELOOKUP_TIME_T, &dns);
	(void)curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &tcp);
	(void)curl_easy_getinfo(e, CURLINFO_APPCONNECT_TIME_T, &tls);
	if (rc == CURLE_COULDNT_RESOLVE_HOST) {
		check(r, "gateway dns", 0, C_SERVER, "check landun.gateway in "
		    ".agent.properties and the host's DNS resolver", "%s: %s", base,
		    curl_easy_strerror(rc));
		goto out;
	}
	check(r, "gateway dns", 1, C_SERVER, NULL, "%s resolves (%ld ms)", base,
	    ms_of(dns));
	if (curl_easy_getinfo(e, CURLINFO_PRIMARY_IP, &ip) != CURLE_OK || ip == NULL)
		ip = "?";
	if (rc == CURLE_OK || tls_error(rc)) {
		check(r, "gateway tcp", 1, C_SERVER, NULL, "%s connected (%ld ms)",
		    ip, tcp > dns ? ms_of(tcp - dns) : 0L);
	} else {
		check(r, "gateway tcp", 0, C_SERVER, "check that the server runs "
		    "and that no firewall or proxy stands between this host and "
		    "it", "%s: %s", *ip ? ip : base, curl_easy_strerror(rc));
		goto out;
	}
	if (!https) {
		check(r, "gateway tls", 1, C_SERVER, NULL, "not used (http)");
	} else if (rc != CURLE_OK) {
		check(r, "gateway tls", 0, C_SERVER, fs_is_file(".cert") ?
		    "the certificate in .cert does not verify this server: put "
		    "the CA that signed it in .cert (PEM)" : "put the PEM "
		    "certificate of the server's private CA in .cert in the "
		    "install dir", "%s", curl_easy_strerror(rc));
		goto out;
	} else {
		days = cert_days_left(e);
		check(r, "gateway tls", days < 0 || days >= 7, C_SERVER,
		    "renew the server's certificate", "verified (%ld ms)%s, "
		    "certificate expires in %ld day(s)", ms_of(tls - tcp),
		    fs_is_file(".cert") ? ", with .cert" : "", days);
	}
	/* Step 2: the status endpoint with the agent's headers. */
	curl_easy_reset(e);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)STATUS_CONNECT_MS);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)STATUS_HTTP_MS);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_keep);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, body);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_date);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, &date);
	h = curl_slist_append(h, "X-DEVOPS-BUILD-TYPE: AGENT");
	hdr = xasprintf("X-DEVOPS-PROJECT-ID: %s", c->project_id);
	h = curl_slist_append(h, hdr);
	free(hdr);
	hdr = xasprintf("X-DEVOPS-AGENT-ID: %s", c->agent_id);
	h = curl_slist_append(h, hdr);
	free(hdr);
	hdr = xasprintf("X-DEVOPS-AGENT-SECRET-KEY: %s", c->secret_key);
	h = curl_slist_append(h, hdr);
	free(hdr);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	tls_setup(e);
	rc = curl_easy_perform(e);
	(void)curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &total);
	if (rc == CURLE_OK)
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
	if (rc == CURLE_OK && (code == 401 || code == 403)) {
		check(r, "gateway http", 0, C_REFUSED, "the server does not know "
		    "this agent id and secret key: download the agent package again "
		    "from the server", "GET %s: HTTP %ld (%ld ms)", EP_STATUS, code,
		    ms_of(total));
		goto out;
	}
	if (rc == CURLE_OK)
		snprintf(err, sizeof(err), "HTTP %ld", code);
	else
		snprintf(err, sizeof(err), "%s", curl_easy_strerror(rc));
	check(r, "gateway http", rc == CURLE_OK && code >= 200 && code < 300,
	    C_SERVER, "check landun.gateway (its path must reach the BK-CI "
	    "gateway) and the server's logs", "GET %s: %s (%ld ms)", EP_STATUS,
	    err, ms_of(total));
	if (rc != CURLE_OK || code < 200 || code >= 300)
		goto out;
	if (envelope_data_str(body->buf, body->len, &st, err, sizeof(err)) == -1)
		check(r, "agentStatus", 0, C_REFUSED, "the server's answer is not "
		    "what BK-CI sends: check landun.gateway", "%s", err);
	else
		check(r, "agentStatus", st != NULL && strcmp(st, "IMPORT_OK") == 0,
		    C_REFUSED, "import this agent in the BK-CI web UI (Environment "
		    "management, third-party agents)", "%s", st ? st : "none");
	if (date != -1) {
		long long skew = (long long)(time(NULL) - date);
		check(r, "clock skew", llabs(skew) <= 60, C_OTHER, "synchronise "
		    "this host's clock (chrony, systemd-timesyncd)", "%+lld s "
		    "against the server's Date header", skew);
	}
out:
	free(st);
	free(body);
	curl_slist_free_all(h);
	if (e != NULL)
		curl_easy_cleanup(e);
	free(url);
	free(base);
}

/* 1 when line mentions error, fatal or panic (any case). */
static int
line_is_error(const char *line)
{
	return strcasestr(line, "error") != NULL || strcasestr(line, "fatal") != NULL ||
	    strcasestr(line, "panic") != NULL;
}

/* The last error lines of one log (its last STATUS_LOG_TAIL bytes). */
static void
status_log(struct report *r, const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	const char *hits[STATUS_LOG_LINES];
	struct stat st;
	char *buf, *line, *next;
	ssize_t n;
	int k = 0, i;
	off_t from;

	if (fd == -1)
		return;
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(fd);
		return;
	}
	from = st.st_size > STATUS_LOG_TAIL ? st.st_size - STATUS_LOG_TAIL : 0;
	buf = xmalloc((size_t)STATUS_LOG_TAIL + 1);
	n = pread(fd, buf, (size_t)STATUS_LOG_TAIL, from);
	close(fd);
	if (n < 0)
		n = 0;
	buf[n] = '\0';
	for (line = buf; line != NULL && *line; line = next) {
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		if (!line_is_error(line))
			continue;
		if (k == STATUS_LOG_LINES) {
			memmove(hits, hits + 1, sizeof(hits[0]) * (STATUS_LOG_LINES - 1));
			k--;
		}
		hits[k++] = line;
	}
	for (i = 0; i < k; i++) {
		if (r->json) {
			char *t = xasprintf("%s: %s", path, hits[i]);
			cJSON_AddItemToArray(r->log_errors, cJSON_CreateString(t));
			free(t);
		} else
			cli_say("  %s: %s", path, hits[i]);
	}
	free(buf);
}

/* The exit code: the most important class of the failed checks. */
static int
exit_class(const struct report *r)
{
	static const enum cls order[] = { C_DOWN, C_CONFIG, C_SERVER, C_REFUSED,
	    C_DISK, C_OTHER };
	size_t i;

	for (i = 0; i < nitems(order); i++)
		if (r->failed[order[i]])
			return (int)order[i];
	return 0;
}

/* The health report. */
int
status_main(const char *workdir, int json)
{
	struct report r;
	struct config c;
	char name[256] = "", err[512], *user = cli_user_name();
	int have_cfg, rc;
	cJSON *state;

	memset(&r, 0, sizeof(r));
	r.json = json;
	if (json) {
		r.root = cJSON_CreateObject();
		r.checks = cJSON_CreateArray();
		r.log_errors = cJSON_CreateArray();
	}
	/* config_load's warnings are not for this report's reader. */
	log_set_level(LOG_ERROR);
	fact(&r, "platform", cli_os());
	fact(&r, "workdir", workdir);
	fact(&r, "version", AGENT_VERSION);
	fact(&r, "user", user);
	free(user);
	if (cli_service_name(name, sizeof(name), err, sizeof(err)) == 0)
		fact(&r, "service_name", name);
	section(&r, "Service");
	status_service(&r, *name != '\0' ? name : NULL);
	section(&r, "Processes");
	status_processes(&r);
	section(&r, "Running agent (runtime/status.json)");
	state = state_read();
	status_state(&r, state);
	status_dead_letters(&r);
	section(&r, "Configuration (.agent.properties)");
	memset(&c, 0, sizeof(c));
	have_cfg = status_properties(&r, &c) == 0;
	section(&r, "Files");
	status_files(&r);
	section(&r, "Health");
	status_disk(&r, have_cfg ? &c : NULL);
	status_cgroup(&r, state);
	if (have_cfg)
		status_gateway(&r, &c);
	section(&r, "Recent errors in the logs (not counted as failures)");
	status_log(&r, "logs/devopsAgent.log");
	status_log(&r, "logs/devopsDaemon.log");
	status_log(&r, "logs/devopsUpgrader.log");
	if (have_cfg)
		config_free(&c);
	cJSON_Delete(state);
	rc = exit_class(&r);
	if (json) {
		char *s;
		cJSON_AddBoolToObject(r.root, "healthy", rc == 0);
		cJSON_AddNumberToObject(r.root, "exit_code", rc);
		cJSON_AddItemToObject(r.root, "checks", r.checks);
		cJSON_AddItemToObject(r.root, "log_errors", r.log_errors);
		s = cJSON_PrintUnformatted(r.root);
		printf("%s\n", s);
		cJSON_free(s);
		cJSON_Delete(r.root);
	} else {
		static const char *what[] = { "", "", "some checks failed",
		    "the agent is not running", ".agent.properties needs care",
		    "the server is unreachable",
		    "the server does not accept this agent",
		    "the disk is low" };
		cli_say("%s", "");
		if (rc == 0)
			cli_say("Summary: all checks passed");
		else
			cli_say("Summary: %s (exit %d; \xe2\x9c\x97 above, each with "
			    "what to do)", what[rc], rc);
	}
	return rc;
}
