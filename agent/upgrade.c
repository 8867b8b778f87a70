/*
 * upgrade.c - the upgrade part of the poll (agent-behaviour §7.1-7.4;
 * protocol §7.4-7.6; bk-ci src/agent/agent/src/pkg/upgrade/upgrade.go).
 *
 * poll.c asks for an upgrade decision (ask's upgrade part, or upgradeNew
 * every 20 s in legacy mode) while upgrade_wanted() says one may run: not in
 * debug mode, no build, no attempt running. The answer comes to
 * upgrade_handle():
 *
 *   CHECK     the UpgradeItem; nothing asked -> done, no finish call; a
 *             refusal (a build arrived with it) -> DELETE success=false
 *   DOWNLOAD  each asked file into tmp/ (eTag = md5 of the previous download,
 *             304 keeps it); md5 streamed, file renamed into place only when
 *             X-Checksum-Md5 is sent and matches (tmp/<file>.md5 records
 *             it for the upgrader); connect timeout + low-speed abort, so a
 *             stall fails within 60 s; a size cap and a total time per item
 *             (dl_caps). A failed write (full disk) only fails the attempt.
 *             No lock is held: builds go on.
 *   DECIDE    what really differs from what is installed
 *   UNPACK    (JDK 17 only) tmp/jdk17.zip -> jdk17/ (or jdk17-<unix-seconds>/
 *             when jdk17/ exists) in a forked child (libarchive, archive.h);
 *             then `<new>/bin/java --version` must print an "openjdk 17" line
 *   SWAP      with A.build_lock set, in one loop turn: switch
 *             devops.agent.jdk17.dir.path (config_save, atomic), remove the
 *             other jdk17/ and jdk17-<digits>/ dirs, rename the worker jar
 *             and the docker init script into place
 *   HAND-OFF  (agent/daemon) take runtime/total-lock.lock, start
 *             tmp/upgrader -action=upgrade with that lock as its stdin (the
 *             flock is shared through the open file, so the upgrader owns it
 *             the moment it runs), exit 0. See docs/upgrader.md.
 *   FINISH    DELETE upgrade?success= exactly once per acknowledged attempt;
 *             after a hand-off the upgrader sends it instead.
 *
 * Differences from GoAgent on purpose: no lock during downloads (W6);
 * rename instead of delete+create (W7); a daemon-only change is applied
 * (W7); the JDK zip counts as "changed" only when the JDK 17 in use did not
 * come from it, so neither a 304 nor the same zip again unpacks anything
 * (HEAD quirk Q4 not copied); a zip that failed to unpack or verify is not
 * tried again by this process; jdk/, jre/, jre.zip and jdk17.zip are never
 * deleted, the JDK 17 path is stored relative to WORKDIR (W8); unsafe zip
 * entries are rejected (W26); a failed check request sends no finish call
 * (W7); an attempt in which every asked item was already current reports
 * success=true (as HEAD does).
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "archive.h"
#include "child.h"
#include "ev.h"
#include "fsutil.h"
#include "http.h"
#include "json.h"
#include "lock.h"
#include "log.h"
#include "ops.h"
#include "md5.h"
#include "probe.h"
#include "util.h"

#define UP_TMP		"tmp"
#define UP_UPGRADER	"tmp/upgrader"
#define UP_AGENT_NEW	"tmp/devopsAgent"
#define UP_DAEMON_NEW	"tmp/devopsDaemon"
#define UP_WORKER_NEW	"tmp/worker-agent.jar"
#define UP_JDK_ZIP	"tmp/jdk17.zip"
#define UP_DOCKER_NEW	"tmp/agent_docker_init.sh"
#define WORKER_JAR	"worker-agent.jar"
#define DOCKER_INIT	"agent_docker_init.sh"
#define JDK_DIR		"jdk17"			/* first choice of a new JDK 17 */
#define JDK_MARKER	".devops-jdk17-md5"	/* in a JDK 17 dir: md5 of its zip */
#define JDK_MAX_BYTES	(4ULL << 30)		/* unpacked JDK cap */

#define STALL_ENV	"DEVOPS_AGENT_STALL_SEC"
#define DL_SEC_ENV	"DEVOPS_AGENT_DOWNLOAD_MAX_SEC"	/* test knob: total time */
#define STALL_SEC	30	/* + 10 s connect timeout: a stall fails < 60 s */
#define STALL_SEC_FAST	5
#define LOCK_RETRY_MS	100	/* total-lock busy (daemon cycle): retry */
#define LOCK_TRIES	100	/* ... for at most 10 s */
#define PROBE_MS	15000	/* `tmp/devopsAgent version` */
#define BIN_MAX_BYTES	((size_t)256 * 1024 * 1024)	/* a downloaded binary, read whole */
#define FOREIGN_COOLDOWN_MS	(3600 * 1000)	/* no upgrade check after a refusal */

enum item { IT_AGENT, IT_WORKER, IT_JDK, IT_DOCKER, IT_MAX };

static const char *item_names[IT_MAX] = { "agent", "worker", "jdk", "dockerInitFile" };

/*
 * Download limits per item (docs/upgrader.md "Download limits"): size cap
 * in bytes, whole-transfer time in seconds. Each is several times what the
 * real file needs (binaries ~20 MB, worker jar ~100 MB, JDK zip ~200 MB,
 * script a few kB) on a slow (1 MB/s) line.
 */
static const struct {
	long long	 max_bytes;
	long		 max_sec;
} dl_caps[IT_MAX] = {
	[IT_AGENT] = { 256LL << 20, 10L * 60 },
	[IT_WORKER] = { 512LL << 20, 20L * 60 },
	[IT_JDK] = { 1LL << 30, 30L * 60 },
	[IT_DOCKER] = { 1LL << 20, 60 },
};

/* One file to fetch. */
struct fetch {
	enum item	 item;
	char		*file;		/* server name, e.g. upgrade/devopsAgent_linux */
	const char	*dest;		/* tmp/... */
};

static struct {
	struct timer	 lock_timer;	/* hand-off: total-lock busy, retry */
	int		 busy;		/* an attempt is running */
	int		 want[IT_MAX];	/* asked by upgradeNew */
	int		 failed[IT_MAX];
	int		 changed[IT_MAX];
	struct fetch	 fetch[6];
	int		 nfetch, cur;
	char		 jdk_md5[MD5_HEX_LEN];	/* md5 of tmp/jdk17.zip */
	char		*jdk_new;	/* "jdk17[-<ts>]" being unpacked/verified */
	int		 lock_tries;
	int		 skip_logged;	/* "skipped in debug mode" said once */
	int64_t		 foreign_until;	/* mono ms: a foreign agent binary was refused */
	int		 agent_diff, daemon_diff;	/* tmp/ binaries differ */
	int		 stage;		/* decide_next(): the next probe */
	char		*worker_version;	/* of tmp/worker-agent.jar, probed */
} U;

/* md5 of the last jdk17.zip that failed to unpack or verify: not retried. */
static char jdk_bad_md5[MD5_HEX_LEN];

static void finish(int success, const char *why);
static void swap_files(void);
static void decide_next(void);
static void decide_finish(void);

/* ------------------------------------------------------------ small helpers */

/* Low-speed window for downloads: env knob, else 30 s (5 s in test mode). */
static int
stall_sec(void)
{
	const char *v = getenv(STALL_ENV);
	long long n;

	if (v != NULL && str_to_ll(v, &n) == 0 && n > 0 && n <= 600)
		return (int)n;
	return A.fast ? STALL_SEC_FAST : STALL_SEC;
}

/* The limits of one item's download; DL_SEC_ENV (1..3600) shortens time. */
static void
dl_limits(enum item it, struct http_dl_limits *lim)
{
	const char *v = getenv(DL_SEC_ENV);
	long long n;

	lim->max_bytes = dl_caps[it].max_bytes;
	lim->total_ms = dl_caps[it].max_sec * 1000;
	lim->stall_sec = stall_sec();
	if (v != NULL && str_to_ll(v, &n) == 0 && n > 0 && n <= 3600)
		lim->total_ms = (long)n * 1000;
}

/* Server file name suffix of the binaries (§7.2): _linux[_arm64|_mips64]. */
static const char *
bin_suffix(void)
{
	int mac = strcmp(A.os, "macos") == 0;

	if (strcmp(A.arch, "arm64") == 0)
		return mac ? "_macos_arm64" : "_linux_arm64";
	if (!mac && strcmp(A.arch, "mips64") == 0)
		return "_linux_mips64";
	return mac ? "_macos" : "_linux";
}

/* md5 of path into hex, "" when it is missing or unreadable. */
static void
md5_or_empty(const char *path, char hex[MD5_HEX_LEN])
{
	if (md5_file(path, hex) == -1)
		hex[0] = '\0';
}

/* 1 when the two files differ in content (a missing one differs). */
static int
files_differ(const char *a, const char *b)
{
	char ha[MD5_HEX_LEN], hb[MD5_HEX_LEN];

	md5_or_empty(a, ha);
	md5_or_empty(b, hb);
	return ha[0] == '\0' || strcmp(ha, hb) != 0;
}

/*
 * 1 when bin (relative to WORKDIR) is a binary of this project: it carries
 * IMPL_MARKER. The server offers its own (GoAgent) binaries whenever our
 * version differs from the one it knows; those are refused (version policy,
 * docs/upgrader.md).
 */
static int
binary_is_ours(const char *bin)
{
	char *data = NULL;
	size_t len = 0;
	int ours;

	if (fs_read_file(bin, BIN_MAX_BYTES, &data, &len) == -1)
		return 0;
	ours = memmem(data, len, IMPL_MARKER, strlen(IMPL_MARKER)) != NULL;
	free(data);
	return ours;
}

/* The `<bin> version` probe of decide() ended: record it, go on. */
static void
binary_probed(const struct probe_result *r, void *arg)
{
	const char *bin = arg;
	char *out = xstrdup(r->out);
	int ok = r->ok && WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0 &&
	    !str_blank(out);

	if (ok)
		log_info("upgrade: %s version: %s", bin, str_trim(out));
	else
		log_warnx("upgrade: `%s version` failed (%s); not installing it", bin,
		    r->ok ? child_status_str(r->status) : "timed out");
	free(out);
	if (!ok)
		U.failed[IT_AGENT] = 1;
	decide_next();
}

/*
 * Run `<bin> version` (the new binary can at least run) on the event loop;
 * binary_probed goes on. 0, or -1 when it cannot start.
 */
static int
binary_probe(const char *bin)
{
	char *path = xasprintf("%s/%s", A.workdir, bin);
	char *argv[] = { path, "version", NULL };
	int rc;

	(void)chmod(path, 0755);
	rc = probe_run(argv, A.workdir, PROBE_MS, 4096, binary_probed, (void *)bin);
	free(path);
	return rc;
}

/* Reset the attempt's state (not the timers). */
static void
attempt_reset(void)
{
	int i;

	for (i = 0; i < U.nfetch; i++)
		free(U.fetch[i].file);
	free(U.jdk_new);
	free(U.worker_version);
	U.worker_version = NULL;
	U.agent_diff = U.daemon_diff = U.stage = 0;
	memset(U.want, 0, sizeof(U.want));
	memset(U.failed, 0, sizeof(U.failed));
	memset(U.changed, 0, sizeof(U.changed));
	U.nfetch = U.cur = 0;
	U.jdk_md5[0] = '\0';
	U.jdk_new = NULL;
	U.lock_tries = 0;
}

/* DELETE upgrade answered: only logged (protocol §7.6). */
static void
finish_done(struct http_result *r, void *arg)
{
	(void)arg;
	if (!r->ok)
		log_warnx("upgrade finish report failed: %s", r->error);
	else
		log_debug("upgrade finish report: HTTP %ld", r->code);
}

/* End an acknowledged attempt: one finish call, then wait for the next. */
static void
finish(int success, const char *why)
{
	char *path = xasprintf("%s?success=%s", EP_UPGRADE_END,
	    success ? "true" : "false");

	if (success)
		log_info("upgrade attempt succeeded: %s", why);
	else
		log_warnx("upgrade attempt failed: %s", why);
	ops_note_upgrade(success);
	if (http_json("DELETE", path, NULL, finish_done, NULL) == -1)
		log_warnx("upgrade: cannot start the finish report");
	free(path);
	A.build_lock = 0;
	attempt_reset();
	U.busy = 0;
	poll_kick();
}

/* ------------------------------------------------------------ check */

/* dockerInitFileInfo (§7.1 step 2): only linux with docker enabled. */
static cJSON *
docker_info_json(void)
{
	cJSON *o = cJSON_CreateObject();
	char hex[MD5_HEX_LEN] = "";
	int need = strcmp(A.os, "linux") == 0 && A.cfg.docker_enable;

	if (need)
		md5_or_empty(DOCKER_INIT, hex);
	json_add_str(o, "fileMd5", hex);
	cJSON_AddBoolToObject(o, "needUpgrade", need);
	return o;
}

/* The upgrade check body (agent.h); jdkVersion as in the heartbeat. */
cJSON *
upgrade_request(void)
{
	cJSON *b = cJSON_CreateObject();

	json_add_str(b, "workerVersion", A.worker_version ? A.worker_version : "");
	json_add_str(b, "goAgentVersion", AGENT_VERSION);
	cJSON_AddItemToObject(b, "jdkVersion", host_jdk_json());
	cJSON_AddItemToObject(b, "dockerInitFileInfo", docker_info_json());
	return b;
}

/* Queue one download. */
static void
fetch_add(enum item it, char *file, const char *dest)
{
	U.fetch[U.nfetch].item = it;
	U.fetch[U.nfetch].file = file;
	U.fetch[U.nfetch].dest = dest;
	U.nfetch++;
}

static void fetch_next(void);

/* The files of every asked item, in GoAgent's order (§7.4 step 5). */
static void
fetch_plan(void)
{
	const char *sfx = bin_suffix();

	if (U.want[IT_AGENT]) {
		fetch_add(IT_AGENT, xasprintf("upgrade/upgrader%s", sfx), UP_UPGRADER);
		fetch_add(IT_AGENT, xasprintf("upgrade/devopsDaemon%s", sfx),
		    UP_DAEMON_NEW);
		fetch_add(IT_AGENT, xasprintf("upgrade/devopsAgent%s", sfx),
		    UP_AGENT_NEW);
	}
	if (U.want[IT_WORKER])
		fetch_add(IT_WORKER, xstrdup("jar/worker-agent.jar"), UP_WORKER_NEW);
	if (U.want[IT_JDK])
		fetch_add(IT_JDK, xasprintf("jre/%s/jdk17.zip", sfx + 1), UP_JDK_ZIP);
	if (U.want[IT_DOCKER]) {
		if (strcmp(A.os, "linux") == 0)
			fetch_add(IT_DOCKER,
			    xstrdup("script/linux/agent_docker_init.sh"), UP_DOCKER_NEW);
		else
			U.failed[IT_DOCKER] = 1;	/* linux only (§7.2) */
	}
}

/* Decode an UpgradeItem (agent.h). */
int
upgrade_item_parse(const cJSON *item, int want[4], char *err, size_t errlen)
{
	int i, any = 0;

	memset(want, 0, IT_MAX * sizeof(*want));
	if (!cJSON_IsObject(item)) {
		snprintf(err, errlen, "the upgrade item is not an object");
		return -1;
	}
	for (i = 0; i < IT_MAX; i++)
		if (json_get_bool(item, item_names[i], &want[i]) == -1) {
			snprintf(err, errlen, "'%s' is not a bool", item_names[i]);
			memset(want, 0, IT_MAX * sizeof(*want));
			return -1;
		}
	for (i = 0; i < IT_MAX; i++)
		any |= want[i];
	return any != 0;
}

/* Decode the upgradeNew answer without side effects (agent.h). */
int
upgrade_answer_parse(const char *body, size_t len, int want[4], char *err,
    size_t errlen)
{
	struct envelope env;
	int rc;

	memset(want, 0, IT_MAX * sizeof(*want));
	if (envelope_parse(body, len, &env, err, errlen) == -1)
		return -1;
	if (env.status != 0) {
		snprintf(err, errlen, "status %lld: %s", env.status,
		    env.message ? env.message : "(no message)");
		envelope_free(&env);
		return 0;
	}
	if ((env.agent_status != NULL && strcmp(env.agent_status, "DELETE") == 0) ||
	    env.data == NULL || !cJSON_IsObject(env.data)) {
		envelope_free(&env);
		return 0;
	}
	rc = upgrade_item_parse(env.data, want, err, errlen);
	envelope_free(&env);
	return rc;
}

/* askEnable.upgrade (agent.h). */
int
upgrade_wanted(void)
{
	if (A.debug) {
		if (!U.skip_logged)
			log_info("upgrade: disabled in debug mode");
		U.skip_logged = 1;
		return 0;
	}
	/* Not while the JDK version is re-probed: the check would be stale. */
	return !U.busy && A.mode == MODE_RUN && build_total_count() == 0 &&
	    !host_jdk_probing() &&
	    (U.foreign_until == 0 || mono_ms() >= U.foreign_until);
}

/* An attempt runs (agent.h). */
int
upgrade_running(void)
{
	return U.busy;
}

/* Refuse an offered upgrade at once (agent.h: the server's 60 s mark). */
static void
upgrade_refuse(const char *why)
{
	char *path = xasprintf("%s?success=false", EP_UPGRADE_END);

	log_warnx("upgrade offered but refused: %s", why);
	if (http_json("DELETE", path, NULL, finish_done, NULL) == -1)
		log_warnx("upgrade: cannot start the refusal report");
	free(path);
}

/* An UpgradeItem arrived (agent.h). */
void
upgrade_handle(const cJSON *item, const char *refuse)
{
	char err[300];
	int want[IT_MAX], rc;

	rc = upgrade_item_parse(item, want, err, sizeof(err));
	if (rc == -1) {
		log_warnx("upgrade check: %s; ignored", err);
		return;
	}
	if (rc == 0)
		return;
	log_info("upgrade asked: agent %d, worker %d, jdk %d, dockerInitFile %d",
	    want[IT_AGENT], want[IT_WORKER], want[IT_JDK], want[IT_DOCKER]);
	if (refuse == NULL && !upgrade_wanted())
		refuse = U.busy ? "an upgrade attempt is already running" :
		    "builds exist, or the agent is not running normally";
	if (refuse != NULL) {
		upgrade_refuse(refuse);
		return;
	}
	/* Acknowledged: from here on, the attempt ends with one finish call. */
	U.busy = 1;
	memcpy(U.want, want, sizeof(U.want));
	if (fs_mkdir_p(UP_TMP, 0755) == -1) {
		agent_check_io_error(errno, UP_TMP);
		finish(0, "cannot create tmp/");
		return;
	}
	fetch_plan();
	fetch_next();
}

/* ------------------------------------------------------------ downloads */

static void decide(void);

/* One download ended: record it and go on with the next. */
static void
fetch_done(struct http_result *r, void *arg)
{
	struct fetch *f = &U.fetch[U.cur];

	(void)arg;
	if (r->ok && r->code == 304) {
		log_info("upgrade: %s not modified (304); keeping %s", f->file, f->dest);
	} else if (r->ok && r->code >= 200 && r->code < 300) {
		log_info("upgrade: downloaded %s -> %s (md5 %s, %lld ms)", f->file,
		    f->dest, r->md5, r->elapsed_ms);
	} else {
		log_warnx("upgrade: download %s failed: %s%s", f->file,
		    r->error[0] ? r->error : "no response",
		    r->ok ? "" : "; the installed files are untouched");
		/*
		 * A disk our own download filled is no reason to leave: the
		 * partial file is gone already, the attempt reports failure,
		 * and the next upgrade offer tries again.
		 */
		if (r->write_errno != 0)
			log_warnx("upgrade: writing %s failed (%s); download "
			    "dropped, to be tried again at the next upgrade "
			    "offer", f->dest, strerror(r->write_errno));
		U.failed[f->item] = 1;
	}
	if (f->item == IT_JDK && !U.failed[IT_JDK])
		snprintf(U.jdk_md5, sizeof(U.jdk_md5), "%s", r->md5);
	U.cur++;
	fetch_next();
}

/* Start the next download, skipping the rest of a failed agent group. */
static void
fetch_next(void)
{
	char hex[MD5_HEX_LEN], *path;
	struct http_dl_limits lim;
	struct fetch *f;

	for (; U.cur < U.nfetch; U.cur++) {
		f = &U.fetch[U.cur];
		if (!U.failed[f->item])
			break;
	}
	if (U.cur >= U.nfetch) {
		decide();
		return;
	}
	f = &U.fetch[U.cur];
	/* eTag = md5 of the previous download in tmp/ (protocol §7.5). */
	md5_or_empty(f->dest, hex);
	if (hex[0] != '\0')
		path = xasprintf("%s?file=%s&eTag=%s", EP_DOWNLOAD, f->file, hex);
	else
		path = xasprintf("%s?file=%s", EP_DOWNLOAD, f->file);
	dl_limits(f->item, &lim);
	if (http_download(path, f->dest, hex[0] ? hex : NULL, &lim,
	    fetch_done, NULL) == -1) {
		log_warnx("upgrade: cannot start the download of %s", f->file);
		U.failed[f->item] = 1;
		free(path);
		U.cur++;
		fetch_next();
		return;
	}
	free(path);
}

/* ------------------------------------------------------------ decide */

/* The JDK 17 in use (its java exists) was unpacked from the zip hex. */
static int
jdk_from_zip(const char *hex)
{
	char *marker = xasprintf("%s/" JDK_MARKER, A.cfg.jdk17_dir_resolved);
	char *text, *java = host_java_if_present(17);
	int same = 0;

	if (java != NULL && fs_read_file(marker, 64, &text, NULL) == 0) {
		same = strcmp(str_trim(text), hex) == 0;
		free(text);
	}
	free(java);
	free(marker);
	return same;
}

static void jdk_unpack(void);

/* The new worker jar's version probe of decide() ended. */
static void
worker_probed(char *ver, void *arg)
{
	(void)arg;
	if (*ver != '\0') {
		log_info("upgrade: new worker %s (running %s)", ver,
		    A.worker_version);
		U.changed[IT_WORKER] = 1;
		free(U.worker_version);
		U.worker_version = ver;
	} else {
		U.failed[IT_WORKER] = 1;	/* not a worker jar */
		free(ver);
	}
	decide_next();
}

/*
 * The probes of decide(), one at a time on the event loop (a new binary
 * answers `version`, a new jar names its worker version), then
 * decide_finish(). Each stage starts at most one probe and returns; the
 * probe's callback calls this again.
 */
static void
decide_next(void)
{
	for (;;) {
		switch (U.stage++) {
		case 0:
			if (U.agent_diff && !U.failed[IT_AGENT] &&
			    binary_probe(UP_AGENT_NEW) == 0)
				return;
			break;
		case 1:
			if (U.daemon_diff && !U.failed[IT_AGENT] &&
			    binary_probe(UP_DAEMON_NEW) == 0)
				return;
			break;
		case 2:
			if (U.want[IT_WORKER] && !U.failed[IT_WORKER] &&
			    files_differ(UP_WORKER_NEW, WORKER_JAR)) {
				char *jar = xasprintf("%s/" UP_WORKER_NEW, A.workdir);
				int rc = host_worker_version_async(jar, worker_probed, NULL);
				free(jar);
				if (rc == 0)
					return;
				U.failed[IT_WORKER] = 1;
			}
			break;
		default:
			decide_finish();
			return;
		}
	}
}

/* What differs from the installed files (§7.3): the checks, then the probes. */
static void
decide(void)
{
	if (U.want[IT_AGENT] && !U.failed[IT_AGENT] &&
	    (!binary_is_ours(UP_AGENT_NEW) || !binary_is_ours(UP_DAEMON_NEW) ||
	    !binary_is_ours(UP_UPGRADER))) {
		/* Version policy: never replace this agent by GoAgent. */
		log_warnx("upgrade: the server's agent package holds GoAgent's "
		    "binaries, not this agent's; not installing them, and not "
		    "asking for upgrades for %d min (docs/upgrader.md: put this "
		    "agent's binaries into the server's package)",
		    FOREIGN_COOLDOWN_MS / 60000);
		U.failed[IT_AGENT] = 1;
		U.foreign_until = mono_ms() + (A.fast ? 2000 : FOREIGN_COOLDOWN_MS);
	}
	if (U.want[IT_AGENT] && !U.failed[IT_AGENT]) {
		U.agent_diff = files_differ(UP_AGENT_NEW, "devopsAgent");
		U.daemon_diff = files_differ(UP_DAEMON_NEW, "devopsDaemon");
		log_info("upgrade: agent binary %s, daemon binary %s",
		    U.agent_diff ? "differs" : "unchanged",
		    U.daemon_diff ? "differs" : "unchanged");
	}
	U.stage = 0;
	decide_next();
}

/* The probes are done: what changed, then apply or finish. */
static void
decide_finish(void)
{
	int any = 0, failed = 0, i;

	if (U.want[IT_AGENT] && !U.failed[IT_AGENT])
		U.changed[IT_AGENT] = U.agent_diff || U.daemon_diff;
	if (U.want[IT_JDK] && !U.failed[IT_JDK]) {
		U.changed[IT_JDK] = !jdk_from_zip(U.jdk_md5);
		if (!U.changed[IT_JDK]) {
			log_info("upgrade: the JDK 17 in use (%s) already comes "
			    "from this jdk17.zip", A.cfg.jdk17_dir_resolved);
		} else if (strcmp(U.jdk_md5, jdk_bad_md5) == 0) {
			log_warnx("upgrade: this jdk17.zip (md5 %s) already failed"
			    " to unpack or verify; not trying it again",
			    U.jdk_md5);
			U.changed[IT_JDK] = 0;
			U.failed[IT_JDK] = 1;
		}
	}
	if (U.want[IT_DOCKER] && !U.failed[IT_DOCKER])
		U.changed[IT_DOCKER] = files_differ(UP_DOCKER_NEW, DOCKER_INIT);

	for (i = 0; i < IT_MAX; i++) {
		any |= U.changed[i];
		failed |= U.failed[i];
	}
	if (!any) {
		char why[128] = "nothing to install:";
		for (i = 0; i < IT_MAX; i++)
			if (U.want[i]) {
				size_t n = strlen(why);
				snprintf(why + n, sizeof(why) - n, " %s %s", item_names[i],
				    U.failed[i] ? "failed" : "unchanged");
			}
		/* Everything asked is already current: success (HEAD). */
		finish(!failed, why);
		return;
	}
	/* Builds may have been claimed while downloading: they win. */
	if (A.mode != MODE_RUN || build_total_count() > 0) {
		finish(0, "a build started during the downloads; retrying later");
		return;
	}
	if (U.changed[IT_JDK])
		jdk_unpack();
	else
		swap_files();
}

/* ------------------------------------------------------------ JDK */

/* Where to unpack: jdk17 when missing, else jdk17-<unix-seconds> (unused). */
static char *
jdk_new_name(void)
{
	time_t t = time(NULL);
	char *name;

	if (!fs_exists(JDK_DIR))
		return xstrdup(JDK_DIR);
	for (;;) {
		name = xasprintf(JDK_DIR "-%lld", (long long)t);
		if (!fs_exists(name))
			return name;
		free(name);
		t++;
	}
}

/* A failed new JDK: remove it, remember its zip, finish false. */
static void
jdk_reject(const char *why)
{
	if (fs_rm_rf(U.jdk_new) == -1)
		log_warn("upgrade: cannot remove %s", U.jdk_new);
	snprintf(jdk_bad_md5, sizeof(jdk_bad_md5), "%s", U.jdk_md5);
	finish(0, why);
}

/* The new JDK 17 answered its version probe: mark it and swap, or reject. */
static void
jdk_verified(int ok, void *arg)
{
	char *marker;

	(void)arg;
	if (!ok) {
		jdk_reject("the new JDK is not a working JDK 17; the JDK in use "
		    "stays");
		return;
	}
	marker = xasprintf("%s/" JDK_MARKER, U.jdk_new);
	if (fs_write_atomic(marker, U.jdk_md5, strlen(U.jdk_md5), 0644) == -1)
		log_warn("upgrade: cannot write %s", marker);
	free(marker);
	swap_files();
}

/* The unpack child ended: verify the new JDK 17 (on the loop), then swap. */
static void
jdk_unpacked(pid_t pid, int status, void *arg)
{
	(void)arg;
	(void)pid;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		jdk_reject("cannot unpack tmp/jdk17.zip (see the lines above); "
		    "the JDK in use stays");
		return;
	}
	if (host_jdk17_verify(U.jdk_new, jdk_verified, NULL) == -1)
		jdk_reject("cannot start the new JDK's version probe; the JDK in "
		    "use stays");
}

/*
 * Unpack tmp/jdk17.zip into jdk17/ or jdk17-<ts>/ in a forked child, so a
 * large JDK does not stall heartbeats; the child only unpacks, logs and
 * _exit()s.
 */
static void
jdk_unpack(void)
{
	pid_t pid;

	U.jdk_new = jdk_new_name();
	log_info("upgrade: unpacking %s into %s/", UP_JDK_ZIP, U.jdk_new);
	if ((pid = fork()) == -1) {
		log_warn("upgrade: fork");
		free(U.jdk_new);
		U.jdk_new = NULL;
		finish(0, "cannot fork the JDK unpacker");
		return;
	}
	if (pid == 0) {
		struct archive_stats st;
		char err[512];
		int rc;

		child_reset_signals();
		rc = archive_unpack(UP_JDK_ZIP, U.jdk_new, JDK_MAX_BYTES, &st, err,
		    sizeof(err));
		if (rc == -1)
			log_error("upgrade: unpack %s: %s", UP_JDK_ZIP, err);
		else
			log_info("upgrade: unpacked %lu files, %lu dirs, %lu symlinks,"
			    " %llu bytes; %lu unsafe entries rejected", st.files,
			    st.dirs, st.symlinks, st.bytes, st.rejected);
		_exit(rc == 0 ? 0 : 1);
	}
	child_watch(pid, jdk_unpacked, NULL);
}

/* 1 for "jdk17" and "jdk17-<digits>" (never jdk/, jre/, jdk17.zip, jdk<ts>). */
static int
jdk17_dir_name(const char *name)
{
	const char *p;

	if (strcmp(name, JDK_DIR) == 0)
		return 1;
	if (strncmp(name, JDK_DIR "-", sizeof(JDK_DIR)) != 0)
		return 0;
	p = name + sizeof(JDK_DIR);
	return *p != '\0' && strspn(p, "0123456789") == strlen(p);
}

/*
 * Remove the other JDK 17 directories after a switch to keep; never the
 * JDK 8 in use (devops.agent.jdk.dir.path), never a zip.
 */
static void
jdk_remove_old(const char *keep)
{
	char *jdk8 = realpath(A.cfg.jdk_dir_resolved, NULL);
	DIR *d = opendir(".");
	struct dirent *e;

	if (d == NULL) {
		free(jdk8);
		return;
	}
	while ((e = readdir(d)) != NULL) {
		const char *p = e->d_name;
		char *real;
		int in_use;

		if (!jdk17_dir_name(p) || strcmp(p, keep) == 0 || !fs_is_dir(p))
			continue;
		real = realpath(p, NULL);
		in_use = real != NULL && jdk8 != NULL && strcmp(real, jdk8) == 0;
		free(real);
		if (in_use)
			continue;
		if (fs_rm_rf(p) == -1)
			log_warn("upgrade: cannot remove the old JDK 17 %s", p);
		else
			log_info("upgrade: removed the old JDK 17 %s/", p);
	}
	closedir(d);
	free(jdk8);
}

/*
 * Point devops.agent.jdk17.dir.path at the new JDK (relative: W8). The
 * file is replaced atomically by config_save; on failure memory is restored.
 */
static int
jdk_switch(void)
{
	char *old_dir = A.cfg.jdk17_dir, *old_res = A.cfg.jdk17_dir_resolved;
	char err[256];

	A.cfg.jdk17_dir = xstrdup(U.jdk_new);
	A.cfg.jdk17_dir_resolved = xasprintf("%s/%s", A.workdir, U.jdk_new);
	if (config_save(&A.cfg, err, sizeof(err)) == -1) {
		agent_check_io_error(errno, CONFIG_FILE);
		log_error("upgrade: cannot save %s: %s", CONFIG_FILE, err);
		free(A.cfg.jdk17_dir);
		free(A.cfg.jdk17_dir_resolved);
		A.cfg.jdk17_dir = old_dir;
		A.cfg.jdk17_dir_resolved = old_res;
		return -1;
	}
	log_info("upgrade: JDK 17 switched from %s to %s", old_res,
	    A.cfg.jdk17_dir_resolved);
	free(old_dir);
	free(old_res);
	jdk_remove_old(U.jdk_new);
	host_jdk_sync(0);	/* the version lands before the next check */
	return 0;
}

/* ------------------------------------------------------------ swap, hand-off */

static void handoff_try(void *arg);

/*
 * Put the new files in place under the build lock, all in this one loop
 * turn (no build can be claimed in between): JDK, worker, docker script,
 * then the agent hand-off.
 */
static void
swap_files(void)
{
	if (A.mode != MODE_RUN || build_total_count() > 0) {
		if (U.jdk_new != NULL)
			(void)fs_rm_rf(U.jdk_new);
		finish(0, "a build started meanwhile; retrying later");
		return;
	}
	A.build_lock = 1;
	if (U.changed[IT_JDK] && jdk_switch() == -1) {
		(void)fs_rm_rf(U.jdk_new);
		finish(0, "cannot switch devops.agent.jdk17.dir.path");
		return;
	}
	if (U.changed[IT_WORKER]) {
		/* fs_copy_file writes a temp file and renames it: never torn (W7). */
		if (fs_copy_file(UP_WORKER_NEW, WORKER_JAR, 0644) == -1) {
			agent_check_io_error(errno, WORKER_JAR);
			log_warn("upgrade: cannot replace %s", WORKER_JAR);
			finish(0, "cannot replace worker-agent.jar");
			return;
		}
		/* Its version was probed in decide(): no probe in this turn. */
		log_info("upgrade: worker-agent.jar replaced: %s -> %s",
		    A.worker_version, U.worker_version);
		free(A.worker_version);
		A.worker_version = U.worker_version;
		U.worker_version = NULL;
	}
	if (U.changed[IT_DOCKER]) {
		if (fs_copy_file(UP_DOCKER_NEW, DOCKER_INIT, 0755) == -1) {
			agent_check_io_error(errno, DOCKER_INIT);
			log_warn("upgrade: cannot replace %s", DOCKER_INIT);
			finish(0, "cannot replace agent_docker_init.sh");
			return;
		}
		log_info("upgrade: agent_docker_init.sh replaced");
	}
	if (U.changed[IT_AGENT]) {
		handoff_try(NULL);
		return;
	}
	finish(!U.failed[IT_AGENT] && !U.failed[IT_WORKER] && !U.failed[IT_JDK] &&
	    !U.failed[IT_DOCKER], "new files installed");
}

/*
 * Hand the binary swap to tmp/upgrader. total-lock is taken first and given
 * to the upgrader as its stdin: the flock belongs to the open file, which
 * the upgrader shares, so when this agent exits the lock stays held and the
 * daemon cannot start the old agent (W7). docs/upgrader.md has the protocol.
 */
static void
handoff_try(void *arg)
{
	char *path, *argv[3], err[256];
	struct spawn_opts o;
	pid_t pid;
	int fd;

	(void)arg;
	if (A.mode != MODE_RUN || build_total_count() > 0) {
		finish(0, "a build started before the hand-off; retrying later");
		return;
	}
	if ((fd = lock_try(TOTAL_LOCK)) == -1) {
		if (errno == EWOULDBLOCK && ++U.lock_tries < LOCK_TRIES) {
			timer_set(&U.lock_timer, LOCK_RETRY_MS);
			return;
		}
		log_warn("upgrade: cannot take %s", TOTAL_LOCK);
		finish(0, "total-lock unavailable for the hand-off");
		return;
	}
	path = xasprintf("%s/" UP_UPGRADER, A.workdir);
	(void)chmod(path, 0755);
	argv[0] = path;
	argv[1] = "-action=upgrade";
	argv[2] = NULL;
	memset(&o, 0, sizeof(o));
	o.path = path;
	o.argv = argv;
	o.cwd = A.workdir;
	o.new_session = 1;		/* outlives this agent and its group */
	o.stdin_fd = fd;		/* the total-lock, handed over */
	o.stdout_fd = o.stderr_fd = -1;
	pid = child_spawn(&o, err, sizeof(err));
	lock_release(fd);		/* the upgrader's copy keeps it locked */
	free(path);
	if (pid == -1) {
		log_error("upgrade: cannot start %s: %s", UP_UPGRADER, err);
		finish(0, "cannot start the upgrader");
		return;
	}
	log_info("upgrade: upgrader pid %ld owns %s and replaces the binaries;"
	    " this agent exits now (the upgrader reports the result)",
	    (long)pid, TOTAL_LOCK);
	A.exit_code = 0;
	agent_set_mode(MODE_STOP);
}

/* Init the hand-off retry timer (agent.h). */
void
upgrade_init(void)
{
	timer_init(&U.lock_timer, "upgrade-lock", handoff_try, NULL);
}
