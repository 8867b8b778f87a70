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
	P_HEARTBEAT,		/* 10 s */
	P_BUILD_PULL,		/* 5 s */
	P_UPGRADE,		/* 20 s */
	P_PIPELINE,		/* 30 s (first run after 10 s) */
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

/* host.c */
/** Detect host name, IP, OS, arch and user into A. */
void host_detect(void);
/** Re-detect the IP (gateway or ignore list changed). */
void host_detect_ip(void);
/** Probe the worker version of jar (§5.1 step 7); new string ("" if none). */
char *host_worker_version(const char *jar, const char *cwd);
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
 * null.
 */
void host_jdk_sync(int force);
/**
 * 1 when dir holds a JDK 17: `<dir java> --version` exits 0 within 10 s and
 * prints an "openjdk 17" line; else 0 (logged).
 */
int host_jdk17_verify(const char *dir);
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

/* startup / heartbeat (heartbeat.c) */
/** A decoded heartbeat response (protocol §7.3 HeartbeatResponse). */
struct hb_response {
	char	*agent_status;		/* NULL when absent */
	int	 parallel, has_parallel;
	int	 docker_parallel, has_docker_parallel;
	char	*gateway, *file_gateway, *language;	/* NULL when absent */
	int	 keep_hours, has_keep_hours;		/* props.keepLogsHours */
	char	*ignore_local_ips;			/* props.ignoreLocalIps */
	cJSON	*envs;			/* owned copy of envs, or NULL */
};
/**
 * Decode the data object of a heartbeat answer with Go's rules (keys
 * case-insensitive, absent = zero, any type mismatch fails the whole
 * decode, envs values must be strings). Returns 0 and fills r (free with
 * heartbeat_response_free), or -1 with r empty.
 */
int heartbeat_parse(const cJSON *data, struct hb_response *r);
/** Free what heartbeat_parse allocated; r is zeroed. */
void heartbeat_response_free(struct hb_response *r);
/** Start the startup call (retried with backoff) and the heartbeat loop. */
void heartbeat_start(void);

/* builds (build.c) */
/** Load the build journal, re-adopt running workers, start the pull loop. */
void build_start_loop(void);
/** Builds that count against the cap (claimed or running). */
int build_active_count(void);
/** Builds known at all (active or waiting to report). */
int build_total_count(void);
/** Heartbeat taskList: array of running builds, or NULL when none. */
cJSON *build_task_list(void);
/** Try to claim again now (a slot freed or a gate opened). */
void build_kick(void);
/** On SIGTERM: try each pending finish report once within budget_ms. */
void build_flush_reports(int budget_ms);

/* cleanup.c */
/** Start the cleanup loop (at start, then every 2 h; §9). */
void cleanup_start(void);
/** After each build: old build_tmp files and start scripts (§6.9.1). */
void cleanup_build_tmp(void);

/* pipeline.c */
/**
 * Start the pipeline loop when devops.pipeline.enable is true (§8: first
 * run after 10 s, then every 30 s): COMMAND items run on the executor
 * (common/executor.h) in devops.pipeline.workspace; results from before a
 * restart that were not reported yet are queued for reporting first.
 */
void pipeline_start(void);
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

/* upgrade.c */
/**
 * Start the upgrade loop (§7.1: every 20 s, skipped in debug mode and while
 * any build exists). An agent/daemon upgrade ends this process (exit 0)
 * after handing runtime/total-lock.lock to tmp/upgrader (docs/upgrader.md).
 */
void upgrade_start(void);
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
