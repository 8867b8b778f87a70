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
 * Exit codes: 0 every check passed; 2 a check failed while the daemon and
 * the agent run; 3 the daemon or the agent is not running; 1 usage error.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
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
#include "log.h"
#include "util.h"

#define STATUS_DISK_MIN		(1024ULL * 1024 * 1024)	/* bytes */
#define STATUS_CONNECT_MS	5000
#define STATUS_HTTP_MS		10000
#define STATUS_LOG_TAIL		((off_t)256 * 1024)	/* bytes read from each log */
#define STATUS_LOG_LINES	5

struct report {
	cJSON	*root;
	cJSON	*checks;
	cJSON	*log_errors;	/* strings: "<log>: <line>" */
	int	 json;
	int	 failed;	/* a check failed */
	int	 down;		/* daemon or agent not running */
};

/* Record one check: print it, or add it to the JSON array. */
static void
check(struct report *r, const char *name, int ok, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Record one check. */
static void
check(struct report *r, const char *name, int ok, const char *fmt, ...)
{
	va_list ap;
	char *text;

	va_start(ap, fmt);
	text = xvasprintf(fmt, ap);
	va_end(ap);
	if (!ok)
		r->failed = 1;
	if (r->json) {
		cJSON *c = cJSON_CreateObject();
		cJSON_AddStringToObject(c, "name", name);
		cJSON_AddBoolToObject(c, "ok", ok);
		cJSON_AddStringToObject(c, "detail", text);
		cJSON_AddItemToArray(r->checks, c);
	} else {
		cli_say("  %s %s: %s", ok ? "\xe2\x9c\x93" : "\xe2\x9c\x97", name, text);
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
		check(r, "service", rc == 0, "%s", rc == 0 && out ? out :
		    (out ? out : "systemctl show failed"));
		if (user) {
			char *u = cli_user_name();
			const char *dir = getenv("DEVOPS_LINGER_DIR");
			char *flag = xasprintf("%s/%s", dir != NULL && *dir != '\0' ? dir :
			    "/var/lib/systemd/linger", u);
			check(r, "linger", fs_exists(flag), "%s", fs_exists(flag) ? "on" :
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
			check(r, names[i][0], 1, "running, pid %ld", pid);
		} else {
			r->down = 1;
			if (file > 0)
				check(r, names[i][0], 0, "not running (runtime/%s.pid names "
				    "pid %ld, which is not %s)", names[i][0], file, names[i][1]);
			else
				check(r, names[i][0], 0, "not running");
		}
	}
}

/* .agent.properties: parses, the required keys. Fills *c on success. */
static int
status_properties(struct report *r, struct config *c)
{
	char err[512], *masked;

	if (!fs_is_file(CONFIG_FILE)) {
		check(r, CONFIG_FILE, 0, "missing");
		return -1;
	}
	if (config_load(c, CONFIG_FILE, A.workdir, err, sizeof(err)) == -1) {
		check(r, CONFIG_FILE, 0, "%s", err);
		return -1;
	}
	masked = mask_secret(c->secret_key);
	check(r, CONFIG_FILE, 1, "project %s, agent %s, secret %s, gateway %s, "
	    "env %s, parallel %d", c->project_id, c->agent_id, masked, c->gateway,
	    c->env, c->parallel_task_count);
	free(masked);
	return 0;
}

/* JDKs and the worker. */
static void
status_files(struct report *r)
{
	check(r, "jdk17", fs_is_dir("jdk17"), fs_is_dir("jdk17") ? "present" :
	    "missing (devopsAgent repair unzips jdk17.zip)");
	check(r, "jdk", fs_is_dir("jdk"), fs_is_dir("jdk") ? "present" :
	    "missing (devopsAgent repair unzips jre.zip)");
	check(r, "worker-agent.jar", fs_is_file("worker-agent.jar"),
	    fs_is_file("worker-agent.jar") ? "present" : "missing");
	check(r, ".cert", 1, "%s", fs_is_file(".cert") ? "present (extra CA "
	    "certificates)" : "none");
}

/* Free disk and a write test. */
static void
status_disk(struct report *r)
{
	struct statvfs vfs;
	const char *probe = ".health_check_write_test";
	unsigned long long avail;
	int ok;

	if (statvfs(".", &vfs) == -1) {
		check(r, "disk", 0, "statvfs: %s", strerror(errno));
	} else {
		avail = (unsigned long long)vfs.f_bavail * vfs.f_frsize;
		check(r, "disk", avail >= STATUS_DISK_MIN, "%.1f GB free%s",
		    (double)avail / (1024.0 * 1024 * 1024),
		    avail >= STATUS_DISK_MIN ? "" : " (under 1 GB)");
	}
	ok = fs_write_atomic(probe, "ok\n", 3, 0644) == 0;
	check(r, "write test", ok, "%s", ok ? "ok" : strerror(errno));
	(void)unlink(probe);
}

/* Discard a response body. */
static size_t
body_discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n;
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

/* The gateway: DNS, TCP (+TLS), then an authenticated GET. */
static void
status_gateway(struct report *r, const struct config *c)
{
	char *url = config_url(c->gateway, EP_STATUS), *base = config_gateway_base(c->gateway);
	struct curl_slist *h = NULL;
	char *hdr, *ip = NULL;
	CURL *e;
	CURLcode rc;
	long code = 0;

	if ((e = curl_easy_init()) == NULL) {
		check(r, "gateway", 0, "cannot initialise libcurl");
		goto out;
	}
	/* Step 1: name lookup, TCP connect and TLS only. */
	curl_easy_setopt(e, CURLOPT_URL, base);
	curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)STATUS_CONNECT_MS);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)STATUS_CONNECT_MS * 2);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	tls_setup(e);
	rc = curl_easy_perform(e);
	if (rc == CURLE_COULDNT_RESOLVE_HOST) {
		check(r, "gateway dns", 0, "%s: %s", base, curl_easy_strerror(rc));
		goto out;
	}
	check(r, "gateway dns", 1, "%s resolves", base);
	if (curl_easy_getinfo(e, CURLINFO_PRIMARY_IP, &ip) != CURLE_OK || ip == NULL)
		ip = "?";
	if (rc == CURLE_OK)
		check(r, "gateway tcp", 1, "%s connected", ip);
	else
		check(r, "gateway tcp", 0, "%s: %s", *ip ? ip : base, curl_easy_strerror(rc));
	if (rc != CURLE_OK)
		goto out;
	/* Step 2: the status endpoint with the agent's headers. */
	curl_easy_reset(e);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)STATUS_CONNECT_MS);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)STATUS_HTTP_MS);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_discard);
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
	if (rc == CURLE_OK)
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
	check(r, "gateway http", rc == CURLE_OK && code >= 200 && code < 300,
	    "GET %s: %s%ld", EP_STATUS, rc == CURLE_OK ? "HTTP " :
	    curl_easy_strerror(rc), rc == CURLE_OK ? code : 0L);
out:
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

/* The health report. */
int
status_main(const char *workdir, int json)
{
	struct report r;
	struct config c;
	char name[256] = "", err[512], *user = cli_user_name();
	int have_cfg, rc;

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
	section(&r, "Configuration (.agent.properties)");
	memset(&c, 0, sizeof(c));
	have_cfg = status_properties(&r, &c) == 0;
	section(&r, "Files");
	status_files(&r);
	section(&r, "Health");
	status_disk(&r);
	if (have_cfg)
		status_gateway(&r, &c);
	section(&r, "Recent errors in the logs (not counted as failures)");
	status_log(&r, "logs/devopsAgent.log");
	status_log(&r, "logs/devopsDaemon.log");
	status_log(&r, "logs/devopsUpgrader.log");
	if (have_cfg)
		config_free(&c);
	rc = r.down ? 3 : r.failed ? 2 : 0;
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
		cli_say("%s", "");
		cli_say("%s", rc == 0 ? "Summary: all checks passed" : r.down ?
		    "Summary: the agent is not running (\xe2\x9c\x97 above)" :
		    "Summary: some checks failed (\xe2\x9c\x97 above)");
	}
	return rc;
}
