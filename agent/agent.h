/*
 * agent.h - devopsAgent's process-wide state and its loops.
 *
 * One event loop (common/ev.h) owns everything: every field below is read and
 * written from loop callbacks only, so no locking is needed.
 */
#ifndef AGENT_H
#define AGENT_H

#include <limits.h>
#include <stdint.h>
#include <cjson/cJSON.h>

#include "config.h"
#include "envlist.h"
#include "json.h"

/* Endpoint paths (protocol §7). */
#define EP_ENV		"/ms/environment/api/buildAgent/agent/thirdPartyAgent"
#define EP_DISPATCH	"/ms/dispatch/api/buildAgent/agent/thirdPartyAgent"
#define EP_STARTUP	EP_ENV "/startup"
#define EP_STATUS	EP_ENV "/status"
#define EP_HEARTBEAT	EP_ENV "/agents/newHeartbeat"
#define EP_PIPELINES	EP_ENV "/agents/pipelines"
#define EP_METRIX	EP_ENV "/agents/metrix"
#define EP_DOWNLOAD	EP_ENV "/upgrade/files/download"
#define EP_PULL		EP_DISPATCH "/startup"
#define EP_FINISH	EP_DISPATCH "/workerBuildFinish"
#define EP_UPGRADE_NEW	EP_DISPATCH "/upgradeNew"
#define EP_UPGRADE_END	EP_DISPATCH "/upgrade"
#define EP_ASK		EP_DISPATCH "/ask"

/* Exit codes (agent-behaviour §3.5). */
#define EXIT_DAEMON_STOP 88	/* deleted on the server / fatal exit error */

/* What the agent is doing with new work. */
enum agent_mode {
	MODE_RUN,		/* claim builds */
	MODE_DRAIN,		/* claim nothing; exit 0 when no build is left */
	MODE_UNINSTALL,		/* DELETE seen: drain, then uninstall, exit 88 */
	MODE_STOP,		/* SIGTERM: exit now, builds go on */
};

/* Named loop periods (ms); the test knob DEVOPS_AGENT_TEST_FAST shortens them. */
enum period {
	P_ASK,			/* 5 s after the previous answer */
	P_ASK_WINDOW,		/* 3 s, the server's minimum spacing of asks, +0.3 s:
				   a request may reach it later than it left */
	P_ASK_PROBE,		/* 10 min: legacy mode tries ask again */
	P_HEARTBEAT,		/* 10 s (legacy) */
	P_BUILD_PULL,		/* 5 s (legacy) */
	P_STATUS_WINDOW,	/* the same for GET status (3 s + 0.3 s) */
	P_UPGRADE,		/* 20 s (legacy) */
	P_PIPELINE,		/* 30 s (legacy) */
	P_PIPELINE_FIRST,	/* 10 s: the first pipeline fetch (legacy) */
	P_CLEANUP,		/* 2 h */
	P_METRICS,		/* 60 s */
	P_FINISH_DELAY,		/* 8 s before a successful finish report */
	P_KILL_GRACE,		/* 10 s between SIGTERM and SIGKILL of a build tree */
	P_MAX,
};

struct agent {
	char		 workdir[PATH_MAX];	/* absolute install dir; also cwd */
	struct config	 cfg;
	int		 debug;			/* `devopsAgent debug` */
	int		 fast;			/* DEVOPS_AGENT_TEST_FAST=1 */
	enum agent_mode	 mode;
	int		 exit_code;

	/* Host facts (startup/heartbeat bodies). */
	char		*hostname;
	char		*ip;
	const char	*os;			/* linux, macos, other */
	const char	*arch;			/* Go names: amd64, arm64, ... */
	char		*user;			/* name of the user running the agent */
	char		*worker_version;	/* "" when unknown */
	char		*jdk_version[3];	/* JDK 17 --version lines (host.c) */
	char		*os_version;		/* props.osVersion (osversion.c) */

	int		 started;		/* startup call succeeded */
	cJSON		*envs;			/* heartbeat envs object, or NULL */
	int		 build_lock;		/* held by an upgrade while it swaps files */

	/* Pending fatal condition for the heartbeat's errorExitData (§5.6). */
	char		*exit_error_enum;
	char		*exit_error_msg;
};

extern struct agent A;

/** Length of a named period in ms (shortened in test mode). */
int64_t agent_period(enum period p);
/**
 * The "latest java" workers and the worker-version probe run on (GoAgent
 * HEAD third_components/jdk.go GetJavaLatest): the JDK 17 java when that
 * file exists, else the JDK 8 java (host_java_in). New string, caller frees.
 */
char *agent_java_path(void);
/**
 * Record a fatal condition for the next heartbeat (§5.6); the agent reports
 * it once and then exits with 88. enum_name e.g. "THIRD_AGENT_EXIT_LEFT_DEVICE".
 */
void agent_set_exit_error(const char *enum_name, const char *msg);
/** Record an exit error when errno says ENOSPC or EACCES. */
void agent_check_io_error(int err, const char *what);
/**
 * Persist the config; failures are logged and become exit errors. Also
 * takes away read access for others (it holds the secret key; group read
 * stays for the build user's group when builds run as another user).
 */
void agent_save_config(void);
/**
 * Free what A owns (host facts, envs, exit error, the config) at exit, so
 * that LeakSanitizer and valgrind see a clean process. A is zeroed.
 */
void agent_free(void);
/** Enter a mode (drain, uninstall, stop) and act on it. */
void agent_set_mode(enum agent_mode m);
/** Called when the last build is gone: finishes drain/uninstall. */
void agent_maybe_finish(void);

/* osversion.c */
/**
 * props.osVersion as GoAgent HEAD sends it (bk-ci A/pkg/config/
 * config_linux.go): on Linux a JSON text of the os-release fields Name,
 * Version, ID, IDLike, PrettyName, VersionID plus uname's KernelVersion and
 * Architecture; on macOS "<ProductVersion>;<kern.osrelease>". New string,
 * "" when unknown.
 */
char *os_version_detect(void);

/* host.c */
/** Detect host name, IP, OS, arch and user into A. */
void host_detect(void);
/** Re-detect the IP (gateway or ignore list changed). */
void host_detect_ip(void);
/** Probe the worker version of jar (§5.1 step 7); new string ("" if none). */
char *host_worker_version(const char *jar, const char *cwd);
/**
 * The worker version of jar without blocking the event loop: the probe runs
 * with the same deadline (10 s, process group killed on overrun) and
 * cb(version, arg) gets a new string ("" when none; cb frees it) from the
 * loop. Returns 0, or -1 when the probe cannot start (cb not called).
 */
int host_worker_version_async(const char *jar,
    void (*cb)(char *version, void *arg), void *arg);
/**
 * The java binary inside a JDK directory: <dir>/bin/java, on macOS
 * <dir>/Contents/Home/bin/java (GoAgent HEAD third_components/jdk.go).
 * New string, caller frees.
 */
char *host_java_in(const char *jdk_dir);
/**
 * Full path of the java of the JDK 8 (version 8: devops.agent.jdk.dir.path)
 * or JDK 17 (version 17: devops.agent.jdk17.dir.path) when that file
 * exists, else NULL. New string, caller frees.
 */
char *host_java_if_present(int version);
/**
 * Add the worker variables of GoAgent HEAD (src/agent/agent/src/pkg/job/
 * build.go) to env: DEVOPS_AGENT_JDK_8_PATH and DEVOPS_AGENT_JDK_17_PATH
 * (full java path, "" when the file is missing) and
 * DEVOPS_AGENT_INSTALL_MODE (trimmed, upper-cased WORKDIR/.install_type,
 * read with fs_read_regular and at most 4096 bytes; "" when missing or
 * unreadable). Call after the DEVOPS_* variables and before the heartbeat
 * envs, which override them.
 */
void host_worker_env(struct envlist *env);
/**
 * Pick the JDK 17 version lines out of `java --version` output (text,
 * already trimmed), as GoAgent HEAD trimJdk17VersionList does: the first
 * line whose lower-case form contains "openjdk 17", then a later line
 * containing " Runtime Environment ", then a later one containing
 * " Server VM "; "" for a line not found. Lines are split on '\n' with a
 * trailing '\r' removed. lines[0..2]: new strings, caller frees each.
 */
void host_jdk17_lines(const char *text, char *lines[3]);
/**
 * Refresh the reported JDK 17 version (GoAgent HEAD jdk.go SyncJdkVersion):
 * the jdk17 directory missing -> []; else `<jdk17 java> --version` runs
 * (10 s limit for the whole run, its process group killed on overrun) when
 * force is set, the directory's mtime changed, or the cached value is blank
 * (null or 3 empty lines; then at most once a minute); a failed probe gives
 * null. force: run now and wait for it (only before the event loop runs);
 * otherwise the probe runs on the loop and its result lands later.
 */
void host_jdk_sync(int force);
/**
 * Check without blocking the event loop that dir holds a JDK 17: `<dir
 * java> --version` exits 0 within 10 s and prints an "openjdk 17" line.
 * cb(ok, arg) runs from the loop (ok 1 or 0, logged). Returns 0, or -1 when
 * the probe cannot start (cb not called).
 */
int host_jdk17_verify(const char *dir, void (*cb)(int ok, void *arg), void *arg);
/** 1 while host_jdk_sync's asynchronous probe runs (the version may be stale). */
int host_jdk_probing(void);
/**
 * jdkVersion for heartbeat and upgrade bodies: null (never probed or the
 * last probe failed), [] (no jdk17 directory) or the 3 lines. New item,
 * caller owns it.
 */
cJSON *host_jdk_json(void);

/**
 * Proxy setting name ("HTTP_PROXY", "HTTPS_PROXY" or "NO_PROXY") for the
 * next request, in GoAgent HEAD's order (src/agent/agent/src/pkg/util/
 * httputil/httputil.go fetchProxyEnv): the name in the heartbeat envs, then
 * in the process environment, then the lower-case name in the same two
 * places, then the .agent.properties key; until the first heartbeat envs
 * arrive the key stands in for them (config.go Init). Empty values are
 * skipped. Returns a borrowed string (valid until A.envs or A.cfg change)
 * or NULL. The lookup handed to http_set_proxy_lookup.
 */
const char *host_proxy_lookup(const char *name);
/**
 * Copy HTTP_PROXY, HTTPS_PROXY and NO_PROXY of a heartbeat envs object
 * (upper-case name first, even when empty, then lower-case; trimmed) into
 * the .agent.properties keys (GoAgent HEAD config.go SyncPersistedProxyEnvs).
 * A name missing from envs clears its key, as HEAD does: the server's envs
 * are the source of these keys. envs NULL (absent from the answer): nothing
 * changes. Returns 1 when a key changed (the caller then calls
 * agent_save_config), else 0. Never logs the values.
 */
int host_proxy_from_envs(const cJSON *envs);

/* poll.c: the server poll (ask or legacy loops); see poll.c's header. */
enum poll_mode { POLL_ASK, POLL_LEGACY };
/**
 * Arm the startup call (retried with backoff 1 s doubling to 60 s until the
 * server answers status 0). Nothing else is sent before that: then the
 * outbox, the pipeline reports, the metrics and the poll in the mode that
 * devops.agent.poll.mode chooses ("auto": ask, falling back to the legacy
 * loops on a server that answers 404) start.
 */
void poll_start(void);
/**
 * A build slot freed or a gate opened: poll for work again as soon as the
 * server's rate window allows (3 s after the previous ask or GET status),
 * and no sooner.
 */
void poll_kick(void);
/** The poll mode in use (POLL_ASK until a 404 says otherwise). */
enum poll_mode poll_mode(void);

/** The parts of an ask answer (bk-ci ThirdPartyAskResp). */
enum ask_part { ASK_HEARTBEAT, ASK_BUILD, ASK_UPGRADE, ASK_PIPELINE, ASK_DEBUG,
	ASK_PARTS };
/** What an ask answer says as a whole. */
enum ask_verdict {
	ASK_OK,			/* status 0: the parts are in part[] */
	ASK_UNSUPPORTED,	/* HTTP 404 or status 404: a server before ask */
	ASK_TOO_FREQUENT,	/* status != 0, "request too frequently" (3 s window) */
	ASK_REFUSED,		/* any other status != 0 ("data is null", ...) */
	ASK_BAD,		/* not an envelope, or data not an object */
};
struct ask_answer {
	struct envelope	 env;			/* owns the parse tree */
	const cJSON	*part[ASK_PARTS];	/* borrowed from env; NULL when absent or null */
};
/**
 * Decode an ask answer (bk-ci DA/pojo/thirdpartyagent/ThirdPartyAskInfo.kt
 * ThirdPartyAskResp in an AgentResult; a pre-ask server answers HTTP 404
 * with {"status":404,...}, CW/handler/NotFoundExceptionMapper.kt).
 * http_code: the HTTP status; body: len bytes. Fills a (free with
 * ask_answer_free, whatever the verdict) and returns the verdict; err
 * (errlen bytes) says why for ASK_TOO_FREQUENT, ASK_REFUSED and ASK_BAD.
 * Each part is only located, not checked: its handler decodes it, so a part
 * of the wrong type costs that part only. No side effects (fuzz_ask).
 */
int ask_answer_parse(long http_code, const char *body, size_t len,
    struct ask_answer *a, char *err, size_t errlen);
/** Free what ask_answer_parse holds; a is zeroed. */
void ask_answer_free(struct ask_answer *a);

/* heartbeat.c: the heartbeat part */
/** A decoded heartbeat response (protocol §7.3 HeartbeatResponse). */
struct hb_response {
	char	*agent_status;		/* NULL when absent */
	int	 parallel, has_parallel;
	int	 docker_parallel, has_docker_parallel;
	char	*gateway, *file_gateway, *language;	/* NULL when absent */
	int	 keep_hours, has_keep_hours;		/* props.keepLogsHours */
	char	*ignore_local_ips;			/* props.ignoreLocalIps */
	int	 enable_pipeline, has_enable_pipeline;	/* props.enablePipeline */
	cJSON	*envs;			/* owned copy of envs, or NULL */
};
/**
 * Decode the data object of a heartbeat answer (legacy newHeartbeat data,
 * or the ask answer's heartbeat part: bk-ci AskHeartbeatResponse) with Go's
 * rules (keys case-insensitive, absent = zero, any type mismatch fails the
 * whole decode, envs values must be strings). Returns 0 and fills r (free
 * with heartbeat_response_free), or -1 with r empty.
 */
int heartbeat_parse(const cJSON *data, struct hb_response *r);
/** Free what heartbeat_parse allocated; r is zeroed. */
void heartbeat_response_free(struct hb_response *r);
/**
 * The heartbeat body (bk-ci NewHeartbeatInfo: the legacy newHeartbeat body
 * and the ask's heartbeat part), with props.osVersion and lower-camel
 * errorExitData {errorEnum, message} when an exit error is pending. New
 * object, caller deletes.
 */
cJSON *heartbeat_request(void);
/**
 * Apply a heartbeat answer (data: borrowed): DELETE starts the uninstall
 * path; otherwise counts, gateways, language, envs, props are merged and
 * persisted. Returns 0, or -1 when data does not decode (nothing applied).
 */
int heartbeat_handle(const cJSON *data);
/** The server deleted this agent: uninstall once running builds are done. */
void heartbeat_deleted(void);

/* build.c: the build part */
/** Load the build journal and re-adopt or report its builds. */
void build_start(void);
/**
 * Why no build may be claimed now (mode, startup, the upgrade's swap lock, a
 * local fault, both caps: the binary and the container one), or NULL.
 * Downloads of an upgrade do not stop claims: a build that arrives
 * meanwhile wins and the upgrade waits.
 */
const char *build_gate(void);
/**
 * askEnable.build / buildType (GoAgent HEAD agent/ask.go checkBuildType):
 * "ALL" when a binary and a container build may both be claimed, "BINARY"
 * or "DOCKER" when one kind may (its cap not reached; for containers the
 * engine answered its last probe, docker.h), "NONE" when neither may or a
 * gate is closed. Static string.
 */
const char *build_ask_type(void);
/**
 * A build the server handed over (ask build part or legacy pull data;
 * borrowed, copied). It is journaled and started, or reported as failed,
 * whatever the gates say: the server already marked it running. A build
 * whose ids cannot be read cannot be reported and is logged as dropped.
 * Returns 1 when claimed, -1 when dropped.
 */
int build_handle(const cJSON *data);
/** Builds that count against the cap (claimed or running). */
int build_active_count(void);
/** Builds known at all (active or waiting to report). */
int build_total_count(void);
/** Heartbeat taskList: array of running builds, or NULL when none. */
cJSON *build_task_list(void);
/** Arm every finish report that waits for nothing (after startup). */
void outbox_kick(void);
/** On exit: try each pending finish report once within budget_ms. */
void outbox_flush(int budget_ms);

/* cleanup.c */
/** Start the cleanup loop (at start, then every 2 h; §9). */
void cleanup_start(void);
/** After each build: old build_tmp files and start scripts (§6.9.1). */
void cleanup_build_tmp(void);

/* pipeline.c: the pipeline part */
/**
 * Open the executor when devops.pipeline.enable is true: COMMAND items run
 * on it (common/executor.h) in devops.pipeline.workspace; results from
 * before a restart that were not reported yet are queued for reporting
 * (sent once startup is acknowledged).
 */
void pipeline_start(void);
/** 1 when a pipeline item may be taken now (enabled, no task running). */
int pipeline_wanted(void);
/**
 * A pending pipeline item (protocol §7.9; data borrowed), from the answer to
 * a request sent at sent_ms (mono ms). An item whose result the server
 * acknowledged after sent_ms is not reported again: the request crossed the
 * report. One served by a later request is reported again (the server lost
 * it), never run again.
 */
void pipeline_handle(const cJSON *data, int64_t sent_ms);
/** Startup acknowledged: send the queued status updates. */
void pipeline_kick_reports(void);
/**
 * Agent exit: stop running tasks (they end as FAILURE) and try the pending
 * status updates once, all within budget_ms; the rest is reported at the
 * next start.
 */
void pipeline_stop(int64_t budget_ms);
/** Remove reported pipeline task dirs older than max_age_sec (§9); count. */
int pipeline_prune(long long max_age_sec);

/* metrics.c */
/**
 * Start the host-metrics collector (§10) unless devops.agent.collectorOn is
 * false: /proc and statvfs every 60 s, telegraf's measurement and field
 * names, InfluxDB line protocol POSTed to EP_METRIX "/write?db=agentMetrix"
 * in batches, at most 10000 points kept while the server is down. Never
 * writes a config file and never tags a point with the secret key (W17).
 */
void metrics_start(void);

/* upgrade.c: the upgrade part */
/** Init the upgrade state (timers); no request is made. */
void upgrade_init(void);
/**
 * askEnable.upgrade (bk-ci A/pkg/agent/ask.go): 1 unless in debug mode,
 * not running normally, any build exists, an attempt runs, or a refused
 * foreign agent binary is cooling down.
 */
int upgrade_wanted(void);
/** An attempt runs (askEnable.upgrade is then false). */
int upgrade_running(void);
/** The upgrade check body {workerVersion, goAgentVersion, jdkVersion, dockerInitFileInfo}; new object. */
cJSON *upgrade_request(void);
/**
 * An UpgradeItem {agent, worker, jdk, dockerInitFile} from the server
 * (borrowed). Nothing asked: nothing happens. Otherwise the attempt runs,
 * unless refuse (a reason) is given or an upgrade may not run now: then
 * DELETE upgrade?success=false is sent at once, so the server's 60 s
 * "upgrading" mark does not hold back jobs. An agent/daemon upgrade ends
 * this process (exit 0) after handing runtime/total-lock.lock to
 * tmp/upgrader (docs/upgrader.md).
 */
void upgrade_handle(const cJSON *item, const char *refuse);
/**
 * Decode an UpgradeItem object: want[4] (agent, worker, jdk,
 * dockerInitFile) 0 or 1; absent keys are 0. Returns 1 when anything is
 * asked, 0 when nothing is, -1 when item is not an object or a key is not a
 * bool (err says why; want all 0).
 */
int upgrade_item_parse(const cJSON *item, int want[4], char *err, size_t errlen);
/**
 * Decode the upgrade check answer (protocol §7.4: an AgentResult whose data
 * is an UpgradeItem; bk-ci BuildAgentThirdPartyAgentUpgradeResource
 * upgradeNew). body: len bytes. Fills want[4] (agent, worker, jdk,
 * dockerInitFile: 0 or 1). Returns 1 when anything is asked; 0 when nothing
 * is, or status != 0 (err then says so, else err is untouched), or
 * agentStatus is DELETE, or data is absent or not an object; -1 when the
 * body is not an envelope or an item is not a bool (err says why). want is
 * all 0 unless 1 is returned. No side effects (fuzz/fuzz_upgrade.c).
 */
int upgrade_answer_parse(const char *body, size_t len, int want[4], char *err,
    size_t errlen);

#endif
