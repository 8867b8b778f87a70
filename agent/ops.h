/*
 * ops.h - the operator's side of the running agent: the state file that
 * `devopsAgent status` reads (runtime/status.json), the counters behind the
 * local Prometheus endpoint (prom.c), the disk guard and the job hooks
 * (hooks.c). Everything runs on the agent's event loop (ev.h).
 */
#ifndef OPS_H
#define OPS_H

#include <stdint.h>
#include <sys/types.h>

struct build;

/** State file of the running agent, relative to the install dir. */
#define OPS_STATE_FILE	"runtime/status.json"

/** Server calls whose last success is recorded. */
enum ops_call { OPS_STARTUP, OPS_HEARTBEAT, OPS_ASK, OPS_CALLS };

/** Build events counted for the metrics. */
enum ops_build_event {
	OPS_CLAIMED,		/* a build arrived from the server */
	OPS_FINISHED_OK,	/* outcome decided: success */
	OPS_FINISHED_FAIL,	/* outcome decided: failure */
	OPS_REPORT_RETRY,	/* a finish report failed and is retried */
	OPS_DEAD_LETTER,	/* a finish report was given up */
	OPS_BUILD_EVENTS,
};

/**
 * Start the operator side: the HTTP observer (call counts, latency and
 * errors per endpoint), the state file writer, the disk guard check (every
 * 30 s, 1 s in test mode) and the Prometheus endpoint when
 * devops.agent.metrics.listen is set. Call once, after http_init().
 */
void ops_start(void);

/** Write the state file now (on exit: mode stop, builds left). */
void ops_write_now(void);

/** The state changed: rewrite the state file, at most once a second. */
void ops_dirty(void);

/**
 * A call of kind c succeeded (its wall time is kept). The state file is
 * rewritten soon for the first success and one after an error, else by
 * the 10 s refresh.
 */
void ops_note_ok(enum ops_call c);

/** A server call failed: what (e.g. "ask") and msg (copied, one line). */
void ops_note_error(const char *what, const char *msg);

/**
 * The server's agentStatus from a heartbeat (copied; NULL ignored). Every
 * answer carries it; only a change rewrites the state file soon.
 */
void ops_note_agent_status(const char *status);

/** Count a build event. */
void ops_note_build(enum ops_build_event e);

/** Count an upgrade attempt by outcome (1 success, 0 failure). */
void ops_note_upgrade(int success);

/**
 * The disk guard: why no build may be claimed because the install dir's
 * file system is below devops.agent.disk.min.free.mb or
 * devops.agent.disk.min.inodes.percent, or NULL. Borrowed text.
 */
const char *ops_disk_gate(void);

/**
 * The Prometheus text exposition (version 0.0.4) of the counters and
 * gauges. New string, caller frees; its size is bounded (a fixed set of
 * series: the endpoint table holds at most OPS_ENDPOINTS_MAX entries).
 */
char *ops_prom_text(void);
#define OPS_ENDPOINTS_MAX	16

/** Run a cleanup round (cleanup.c) on the next loop turn. */
void cleanup_now(void);

/* ---- prom.c: the local Prometheus endpoint */
/**
 * Listen on listen ("host:port", IPv4 or [IPv6]) with libmicrohttpd driven
 * by the event loop (no thread). A non-loopback address is refused unless
 * remote is 1. 0, or -1 with the reason logged.
 */
int prom_start(const char *listen, int remote);
/** Stop listening and free the server (safe when never started). */
void prom_stop(void);

struct envlist;
struct spawn_opts;
/**
 * The build user (worker.c): sets HOME, USER and LOGNAME in env and the
 * user switch in o when devops.slave.user names another user. 0, or -1
 * with the reason in err (errlen bytes).
 */
int worker_user(struct envlist *env, struct spawn_opts *o, char *err,
    size_t errlen);

/* ---- hooks.c: hooks/pre-build and hooks/post-build in the install dir */
/** Hook kinds. */
enum hook_kind { HOOK_PRE_BUILD, HOOK_POST_BUILD };
/** Called once the hook ended and nothing of it is left: ok 1 when it
 * exited 0 (or does not exist), else 0 with msg its output and reason. */
typedef void (*hook_done_fn)(struct build *b, int ok, const char *msg);
/**
 * Run hook kind for b when hooks/<name> exists and is executable, as the
 * build user with the build's env (plus BUILD_OUTCOME and BUILD_MESSAGE for
 * post-build), in a new session and in cgroup (NULL: the process group),
 * with devops.agent.hooks.timeout.sec. When it ends, whatever it started
 * is ended too (tree.h), then done runs from the loop. Returns 1 when the
 * hook started (done follows), 0 when there is no hook (done not called),
 * -1 when it could not start (msg in err; done not called).
 */
int hook_run(enum hook_kind kind, struct build *b, const char *cgroup,
    hook_done_fn done, char *err, size_t errlen);

#endif
