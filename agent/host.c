/*
 * host.c - host facts: name, IP, OS, arch, user, worker and JDK versions,
 * the JDK layout (jdk/ and jdk17/) and the worker's HEAD variables.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <pwd.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "child.h"
#include "config.h"
#include "envlist.h"
#include "fsutil.h"
#include "log.h"
#include "probe.h"
#include "util.h"

/*
 * Deadline of a java probe (the whole run; its process group is killed on
 * overrun). In the event loop the probes run asynchronously (probe.h), so
 * heartbeats go on while one runs; only the probes at start, before the
 * loop, wait for it.
 */
#define JAVA_PROBE_MS	10000
#define JAVA_PROBE_OUT	((size_t)16 * 1024)	/* output kept, bytes */
#define JAVA_REPROBE_MS	60000	/* a blank JDK 17 version is probed again
				   at most this often (unless the dir changed) */
#define INSTALL_TYPE_FILE	".install_type"
#define INSTALL_TYPE_MAX	4096	/* bytes */

/* What jdkVersion reports (HEAD third_components/jdk.go). */
enum jdk_state {
	JDK_NULL,	/* never probed, or the last probe failed: null */
	JDK_NONE,	/* the JDK 17 directory is missing: [] */
	JDK_LINES,	/* the 3 lines in A.jdk_version */
};

static enum jdk_state jdk_state = JDK_NULL;
static time_t jdk_mtime;

/* Go's GOARCH name for this machine. */
static const char *
go_arch(void)
{
	struct utsname u;

	if (uname(&u) == -1)
		return "amd64";
	if (strcmp(u.machine, "x86_64") == 0)
		return "amd64";
	if (strcmp(u.machine, "aarch64") == 0 || strcmp(u.machine, "arm64") == 0)
		return "arm64";
	if (str_starts(u.machine, "mips64"))
		return "mips64";
	if (u.machine[0] == 'i' && str_ends(u.machine, "86"))
		return "386";
	return "amd64";
}

/* Split the gateway into host and port (80 when none, even for https: §2.5). */
static void
gateway_host_port(const char *gw, char *host, size_t hsize, char *port, size_t psize)
{
	const char *p = strstr(gw, "://"), *end;

	p = p != NULL ? p + 3 : gw;
	end = p + strcspn(p, "/?#");
	snprintf(port, psize, "80");
	if (*p == '[') {
		const char *rb = memchr(p, ']', (size_t)(end - p));
		if (rb != NULL) {
			snprintf(host, hsize, "%.*s", (int)(rb - p - 1), p + 1);
			if (rb[1] == ':')
				snprintf(port, psize, "%.*s", (int)(end - rb - 2), rb + 2);
			return;
		}
	}
	const char *colon = memchr(p, ':', (size_t)(end - p));
	if (colon != NULL) {
		snprintf(host, hsize, "%.*s", (int)(colon - p), p);
		snprintf(port, psize, "%.*s", (int)(end - colon - 1), colon + 1);
	} else {
		snprintf(host, hsize, "%.*s", (int)(end - p), p);
	}
}

/* Local address the kernel would use to reach the gateway (no packet sent). */
static int
udp_probe(char *out, size_t size)
{
	char host[256], port[16];
	struct addrinfo hints, *res = NULL;
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	int fd, rc = -1;

	gateway_host_port(A.cfg.gateway, host, sizeof(host), port, sizeof(port));
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_DGRAM;
	if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL)
		return -1;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd != -1 && connect(fd, res->ai_addr, res->ai_addrlen) == 0 &&
	    getsockname(fd, (struct sockaddr *)&local, &len) == 0 &&
	    inet_ntop(AF_INET, &local.sin_addr, out, (socklen_t)size) != NULL)
		rc = 0;
	if (fd != -1)
		close(fd);
	freeaddrinfo(res);
	return rc;
}

/* 1 when ip is in the comma-separated list. */
static int
ip_ignored(const char *ip, const char *list)
{
	const char *p = list;
	size_t n = strlen(ip);

	while (p != NULL && *p != '\0') {
		while (*p == ' ' || *p == ',')
			p++;
		size_t len = strcspn(p, ",");
		size_t l = len;
		while (l > 0 && p[l - 1] == ' ')
			l--;
		if (l == n && strncmp(p, ip, n) == 0)
			return 1;
		p += len;
	}
	return 0;
}

/* Detect the agent IP again (§7.1 rules). */
void
host_detect_ip(void)
{
	char probe[INET_ADDRSTRLEN] = "127.0.0.1", first[INET_ADDRSTRLEN] = "";
	struct ifaddrs *ifa = NULL, *i;
	int probed = udp_probe(probe, sizeof(probe)) == 0;
	const char *ignore = A.cfg.ignore_local_ips && *A.cfg.ignore_local_ips ?
	    A.cfg.ignore_local_ips : "127.0.0.1";
	const char *pick = probe;

	if (probed && getifaddrs(&ifa) == 0) {
		for (i = ifa; i != NULL; i = i->ifa_next) {
			char buf[INET_ADDRSTRLEN];
			struct in_addr a;
			uint32_t h;
			if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET ||
			    (i->ifa_flags & IFF_LOOPBACK))
				continue;
			a = ((struct sockaddr_in *)i->ifa_addr)->sin_addr;
			h = ntohl(a.s_addr);
			if ((h >> 24) == 127 || (h >> 16) == 0xa9fe || h == 0)
				continue;	/* loopback, link-local */
			inet_ntop(AF_INET, &a, buf, sizeof(buf));
			if (ip_ignored(buf, ignore))
				continue;
			if (strcmp(buf, probe) == 0) {
				first[0] = '\0';
				pick = probe;
				break;
			}
			if (first[0] == '\0')
				snprintf(first, sizeof(first), "%s", buf);
		}
		if (first[0] != '\0')
			pick = first;
		freeifaddrs(ifa);
	}
	free(A.ip);
	A.ip = xstrdup(pick);
}

/* Host name, IP, OS, arch and user into A. */
void
host_detect(void)
{
	char name[256];
	struct passwd *pw = getpwuid(geteuid());

	if (gethostname(name, sizeof(name)) == -1)
		name[0] = '\0';
	name[sizeof(name) - 1] = '\0';
	A.hostname = xstrdup(name);
#if defined(__linux__)
	A.os = "linux";
#elif defined(__APPLE__)
	A.os = "macos";
#else
	A.os = "other";
#endif
	A.arch = go_arch();
	A.user = xstrdup(pw != NULL ? pw->pw_name : "");
	host_detect_ip();
}

/* True when line looks like a worker version (§5.1 step 7). */
static int
version_line(const char *line)
{
	static regex_t re[3];
	static int compiled;
	static const char *pat[3] = {
		"^v[0-9]+\\.[0-9]+\\.[0-9]+$",
		"^v[0-9]+\\.[0-9]+\\.[0-9]+-[^0-9][^.]*\\.[0-9]+$",
		"^v([0-9]+\\.)([0-9]+\\.)([0-9]+)((-RELEASE)|(-SNAPSHOT)?)$",
	};
	int k;

	if (!compiled) {
		for (k = 0; k < 3; k++)
			if (regcomp(&re[k], pat[k], REG_EXTENDED | REG_NOSUB) != 0)
				fatalx("version regex %d does not compile", k);
		compiled = 1;
	}
	for (k = 0; k < 3; k++)
		if (regexec(&re[k], line, 0, NULL, 0) == 0)
			return 1;
	return 0;
}

/* The worker version in the output of the version class, or NULL. */
static char *
worker_version_of(char *out)
{
	char *line, *save = NULL;

	for (line = strtok_r(out, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		str_trim(line);
		if (strlen(line) > 64)
			line[64] = '\0';
		if (*line == '\0' || strchr(line, ' ') != NULL ||
		    strstr(line, "OPTIONS") != NULL)
			continue;
		return version_line(line) ? xstrdup(line) : NULL;
	}
	return NULL;
}

/* argv of the worker-version probe of jar (free with free_argv). */
static char **
worker_version_argv(const char *jar)
{
	char **argv = xcalloc(7, sizeof(*argv));

	argv[0] = agent_java_path();
	argv[1] = xasprintf("-Djava.io.tmpdir=%s/build_tmp", A.workdir);
	argv[2] = xstrdup("-Xmx256m");
	argv[3] = xstrdup("-cp");
	argv[4] = xstrdup(jar);
	argv[5] = xstrdup("com.tencent.devops.agent.AgentVersionKt");
	return argv;
}

/* Free a NULL-terminated argv of heap strings. */
static void
free_argv(char **argv)
{
	char **p;

	for (p = argv; *p != NULL; p++)
		free(*p);
	free(argv);
}

/* Ask the worker jar for its version, synchronously (§5.1). */
char *
host_worker_version(const char *jar, const char *cwd)
{
	char **argv = worker_version_argv(jar), *out = NULL, *version = NULL;
	int status;

	if (child_run_capture(argv, cwd, JAVA_PROBE_MS, (size_t)64 * 1024, &out, &status) == -1) {
		log_warn("worker version probe (%s) failed", jar);
	} else if ((version = worker_version_of(out)) == NULL) {
		log_warnx("worker version probe (%s): no version in output (%s)",
		    jar, child_status_str(status));
	}
	free(out);
	free_argv(argv);
	return version != NULL ? version : xstrdup("");
}

struct worker_probe {
	char	*jar;
	void	(*cb)(char *version, void *arg);
	void	*arg;
};

/* host_worker_version_async's probe ended. */
static void
worker_probe_done(const struct probe_result *r, void *arg)
{
	struct worker_probe *w = arg;
	char *out = xstrdup(r->out), *version = NULL;

	if (!r->ok)
		log_warnx("worker version probe (%s) timed out", w->jar);
	else if ((version = worker_version_of(out)) == NULL)
		log_warnx("worker version probe (%s): no version in output (%s)",
		    w->jar, child_status_str(r->status));
	free(out);
	w->cb(version != NULL ? version : xstrdup(""), w->arg);
	free(w->jar);
	free(w);
}

/* The worker version of jar, on the event loop (agent.h). */
int
host_worker_version_async(const char *jar, void (*cb)(char *version, void *arg),
    void *arg)
{
	struct worker_probe *w = xcalloc(1, sizeof(*w));
	char **argv = worker_version_argv(jar);
	int rc;

	w->jar = xstrdup(jar);
	w->cb = cb;
	w->arg = arg;
	rc = probe_run(argv, A.workdir, JAVA_PROBE_MS, (size_t)64 * 1024,
	    worker_probe_done, w);
	free_argv(argv);
	if (rc == -1) {
		free(w->jar);
		free(w);
	}
	return rc;
}

/* The java binary inside a JDK directory (macOS bundles Contents/Home). */
char *
host_java_in(const char *jdk_dir)
{
#ifdef __APPLE__
	return xasprintf("%s/Contents/Home/bin/java", jdk_dir);
#else
	return xasprintf("%s/bin/java", jdk_dir);
#endif
}

/* Full path of the JDK 8 / JDK 17 java when that file exists, else NULL. */
char *
host_java_if_present(int version)
{
	const char *dir = version == 17 ? A.cfg.jdk17_dir_resolved :
	    A.cfg.jdk_dir_resolved;
	char *java;

	if (dir == NULL)
		return NULL;
	java = host_java_in(dir);
	if (fs_is_file(java))
		return java;
	free(java);
	return NULL;
}

/* The variables HEAD adds to a worker's environment. */
void
host_worker_env(struct envlist *env)
{
	char *j8 = host_java_if_present(8), *j17 = host_java_if_present(17);
	char *mode = NULL, *p;

	envlist_set(env, "DEVOPS_AGENT_JDK_8_PATH", j8 != NULL ? j8 : "");
	envlist_set(env, "DEVOPS_AGENT_JDK_17_PATH", j17 != NULL ? j17 : "");
	/* Written by the installer (SERVICE, USER, ...); a few bytes. */
	if (fs_read_regular(INSTALL_TYPE_FILE, INSTALL_TYPE_MAX, &mode,
	    NULL) == -1) {
		if (errno != ENOENT)
			log_warn("cannot read %s", INSTALL_TYPE_FILE);
		mode = xstrdup("");
	}
	str_trim(mode);
	for (p = mode; *p != '\0'; p++)
		*p = (char)toupper((unsigned char)*p);
	envlist_set(env, "DEVOPS_AGENT_INSTALL_MODE", mode);
	free(mode);
	free(j8);
	free(j17);
}

/* Pick the 3 JDK 17 version lines out of `java --version` output. */
void
host_jdk17_lines(const char *out, char *lines[3])
{
	static const char *marks[3] = { "openjdk 17", " Runtime Environment ",
	    " Server VM " };
	const char *p = out, *nl;
	int k = 0;

	for (k = 0; k < 3; k++)
		lines[k] = NULL;
	k = 0;
	while (*p != '\0' && k < 3) {
		char *line, *lc;
		size_t n;

		nl = strchr(p, '\n');
		n = nl != NULL ? (size_t)(nl - p) : strlen(p);
		line = xstrndup(p, n);
		n = strlen(line);
		if (n > 0 && line[n - 1] == '\r')
			line[n - 1] = '\0';
		if (k == 0) {
			/* The first mark is matched in lower case. */
			lc = xstrdup(line);
			for (n = 0; lc[n] != '\0'; n++)
				lc[n] = (char)tolower((unsigned char)lc[n]);
			if (strstr(lc, marks[0]) != NULL)
				lines[k++] = xstrdup(line);
			free(lc);
		} else if (strstr(line, marks[k]) != NULL) {
			lines[k++] = xstrdup(line);
		}
		free(line);
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	for (k = 0; k < 3; k++)
		if (lines[k] == NULL)
			lines[k] = xstrdup("");
}

/* Drop the cached JDK version; state becomes st. */
static void
jdk_set_state(enum jdk_state st)
{
	int i;

	for (i = 0; i < 3; i++) {
		free(A.jdk_version[i]);
		A.jdk_version[i] = NULL;
	}
	jdk_state = st;
}

/* 1 when the cached version is blank: unknown, or 3 empty lines. */
static int
jdk_blank(void)
{
	int i;

	if (jdk_state != JDK_LINES)
		return 1;
	for (i = 0; i < 3; i++)
		if (A.jdk_version[i] != NULL && *A.jdk_version[i] != '\0')
			return 0;
	return 1;
}

/*
 * The outcome of a `<java> --version` run (ran: exited 0 within the
 * deadline; out: its output): pick its lines into out_lines. 0, or -1
 * (logged) when it did not run or exit 0.
 */
static int
jdk_lines_of(const char *java, int ran, int status, char *out, char *out_lines[3])
{
	if (!ran || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		log_warnx("%s --version failed (%s): %.200s", java,
		    ran ? child_status_str(status) : "timed out or did not start",
		    out != NULL ? out : "");
		return -1;
	}
	host_jdk17_lines(str_trim(out), out_lines);
	return 0;
}

/*
 * Run `<java> --version` synchronously (bounded, process group killed on
 * overrun; only before the event loop runs) and pick its lines. 0 or -1.
 */
static int
jdk_probe(const char *java, char *out_lines[3])
{
	char *argv[] = { (char *)java, "--version", NULL }, *out = NULL;
	int status = 0, rc;

	rc = child_run_capture(argv, A.workdir, JAVA_PROBE_MS, JAVA_PROBE_OUT,
	    &out, &status);
	rc = jdk_lines_of(java, rc == 0, status, out, out_lines);
	free(out);
	return rc;
}

/* Store a probe's outcome as the reported JDK 17 version. */
static void
jdk_store(int rc, char *lines[3])
{
	int k;

	if (rc == -1) {
		jdk_set_state(JDK_NULL);
		return;
	}
	jdk_set_state(JDK_LINES);
	for (k = 0; k < 3; k++)
		A.jdk_version[k] = lines[k];
	log_info("JDK 17 %s: %s | %s | %s", A.cfg.jdk17_dir_resolved,
	    lines[0], lines[1], lines[2]);
}

static int jdk_probing;		/* an asynchronous jdk probe runs */
static char *jdk_dir_probed;	/* the JDK 17 directory of the last probe */

/* The asynchronous `java --version` of host_jdk_sync ended. */
static void
jdk_probe_done(const struct probe_result *r, void *arg)
{
	char *java = arg, *out = xstrdup(r->out), *lines[3];

	jdk_probing = 0;
	jdk_store(jdk_lines_of(java, r->ok, r->status, out, lines), lines);
	free(out);
	free(java);
}

/* Refresh the JDK 17 version lines (see agent.h). */
void
host_jdk_sync(int force)
{
	static int64_t last_probe;
	struct stat st;
	char *java, *lines[3];

	if (jdk_probing)
		return;
	if (stat(A.cfg.jdk17_dir_resolved, &st) == -1) {
		if (jdk_state != JDK_NONE)
			log_info("no JDK 17 at %s: jdkVersion []",
			    A.cfg.jdk17_dir_resolved);
		jdk_set_state(JDK_NONE);
		jdk_mtime = 0;
		return;
	}
	/* Another directory (a JDK switch) is probed whatever its mtime. */
	if (!force && st.st_mtime == jdk_mtime && jdk_dir_probed != NULL &&
	    strcmp(jdk_dir_probed, A.cfg.jdk17_dir_resolved) == 0) {
		if (!jdk_blank())
			return;
		/* Blank: probe again, but not at every heartbeat. */
		if (last_probe != 0 && mono_ms() - last_probe < JAVA_REPROBE_MS)
			return;
	}
	last_probe = mono_ms();
	jdk_mtime = st.st_mtime;
	free(jdk_dir_probed);
	jdk_dir_probed = xstrdup(A.cfg.jdk17_dir_resolved);
	java = host_java_in(A.cfg.jdk17_dir_resolved);
	if (force) {
		jdk_store(jdk_probe(java, lines), lines);
		free(java);
		return;
	}
	/* In the loop: heartbeats go on while java starts (or hangs). */
	char *argv[] = { java, "--version", NULL };
	if (probe_run(argv, A.workdir, JAVA_PROBE_MS, JAVA_PROBE_OUT,
	    jdk_probe_done, java) == -1) {
		jdk_set_state(JDK_NULL);
		free(java);
		return;
	}
	jdk_probing = 1;
}

/* 1 while the JDK 17 version is being probed (agent.h). */
int
host_jdk_probing(void)
{
	return jdk_probing;
}

/* The asynchronous verification of a new JDK 17 dir ended. */
struct jdk_verify {
	char	*java;
	void	(*cb)(int ok, void *arg);
	void	*arg;
};

/* host_jdk17_verify's probe ended: an "openjdk 17" line or not. */
static void
jdk_verify_done(const struct probe_result *r, void *arg)
{
	struct jdk_verify *v = arg;
	char *out = xstrdup(r->out), *lines[3];
	int ok = 0, k;

	if (jdk_lines_of(v->java, r->ok, r->status, out, lines) == 0) {
		ok = *lines[0] != '\0';
		if (!ok)
			log_warnx("%s --version: no 'openjdk 17' line", v->java);
		for (k = 0; k < 3; k++)
			free(lines[k]);
	}
	free(out);
	v->cb(ok, v->arg);
	free(v->java);
	free(v);
}

/* Is dir a JDK 17: its java --version gives an "openjdk 17" line (agent.h). */
int
host_jdk17_verify(const char *dir, void (*cb)(int ok, void *arg), void *arg)
{
	struct jdk_verify *v = xcalloc(1, sizeof(*v));
	char *argv[3];

	v->java = host_java_in(dir);
	v->cb = cb;
	v->arg = arg;
	argv[0] = v->java;
	argv[1] = "--version";
	argv[2] = NULL;
	if (probe_run(argv, A.workdir, JAVA_PROBE_MS, JAVA_PROBE_OUT,
	    jdk_verify_done, v) == -1) {
		free(v->java);
		free(v);
		return -1;
	}
	return 0;
}

/* The JDK version for heartbeat and upgrade bodies. */
cJSON *
host_jdk_json(void)
{
	cJSON *arr;
	int i;

	if (jdk_state == JDK_NULL)
		return cJSON_CreateNull();
	arr = cJSON_CreateArray();
	if (jdk_state == JDK_LINES)
		for (i = 0; i < 3; i++)
			cJSON_AddItemToArray(arr, cJSON_CreateString(
			    A.jdk_version[i] != NULL ? A.jdk_version[i] : ""));
	return arr;
}

/* The persisted proxy key of an upper-case name, or NULL. */
static char **
proxy_field(const char *name)
{
	if (strcmp(name, "HTTP_PROXY") == 0)
		return &A.cfg.http_proxy;
	if (strcmp(name, "HTTPS_PROXY") == 0)
		return &A.cfg.https_proxy;
	if (strcmp(name, "NO_PROXY") == 0)
		return &A.cfg.no_proxy;
	return NULL;
}

/* Non-empty string value of key in the heartbeat envs, or NULL. */
static const char *
envs_get(const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(A.envs, key);

	return cJSON_IsString(v) && v->valuestring[0] != '\0' ?
	    v->valuestring : NULL;
}

/* Non-empty value of an environment variable, or NULL. */
static const char *
env_get(const char *key)
{
	const char *v = getenv(key);

	return v != NULL && *v != '\0' ? v : NULL;
}

/* A proxy setting in HEAD's lookup order (see agent.h). */
const char *
host_proxy_lookup(const char *name)
{
	char **field = proxy_field(name), lower[16];
	const char *v;
	size_t i;

	if (field == NULL)
		return NULL;
	for (i = 0; name[i] != '\0' && i + 1 < sizeof(lower); i++)
		lower[i] = (char)tolower((unsigned char)name[i]);
	lower[i] = '\0';
	/* Until heartbeat envs arrive, the persisted keys stand in for them. */
	if (A.envs == NULL && *field != NULL && **field != '\0')
		return *field;
	if ((v = envs_get(name)) != NULL || (v = env_get(name)) != NULL ||
	    (v = envs_get(lower)) != NULL || (v = env_get(lower)) != NULL)
		return v;
	return *field != NULL && **field != '\0' ? *field : NULL;
}

/* Persist the proxy keys of heartbeat envs (see agent.h). */
int
host_proxy_from_envs(const cJSON *envs)
{
	static const char *names[3] = { "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY" };
	int changed = 0, i;

	if (envs == NULL)
		return 0;
	for (i = 0; i < 3; i++) {
		char **field = proxy_field(names[i]), lower[16], *v;
		const cJSON *it;
		size_t k;

		for (k = 0; names[i][k] != '\0'; k++)
			lower[k] = (char)tolower((unsigned char)names[i][k]);
		lower[k] = '\0';
		/* The upper-case name wins when present, even empty. */
		it = cJSON_GetObjectItemCaseSensitive(envs, names[i]);
		if (it == NULL)
			it = cJSON_GetObjectItemCaseSensitive(envs, lower);
		v = str_trim(xstrdup(cJSON_IsString(it) ? it->valuestring : ""));
		if (*field != NULL && strcmp(*field, v) == 0) {
			free(v);
			continue;
		}
		/* The value may carry a password: say only what happened. */
		log_info("heartbeat envs: %s %s", names[i], *v != '\0' ?
		    "set" : "cleared");
		free(*field);
		*field = v;
		changed = 1;
	}
	return changed;
}
