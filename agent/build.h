/*
 * build.h - one build (a claimed job) from claim to acknowledged finish, and
 * the interface between the files that share it: build.c (life cycle),
 * worker.c (launch), journal.c (on disk) and outbox.c (finish reports).
 *
 * Life cycle, each step journaled to runtime/builds/<buildId>_<vmSeqId>.json
 * by an atomic rewrite before it takes effect (docs/durability.md):
 *
 *   CLAIMED  -> the server handed it out; nothing started yet
 *   RUNNING  -> the worker runs (pid + start time identify it)
 *   FINISHED -> the outcome is known; the finish report is in the outbox,
 *               sent once the worker's leftover processes are gone (tree.h)
 *   (gone)   -> the server acknowledged workerBuildFinish; journal deleted
 */
#ifndef BUILD_H
#define BUILD_H

#include <stddef.h>
#include <sys/types.h>
#include <cjson/cJSON.h>

#include "ev.h"

/* workerBuildFinish error codes (protocol Appendix A). */
#define ERR_BUILD_PROCESS_RUN	2128040
#define ERR_RECOVER_RUN_FILE	2128041
#define ERR_LOSE_RUN_FILE	2128042
#define ERR_MAKE_TMP_DIR	2128043
#define ERR_BUILD_PROCESS_START	2128044
#define ERR_PREPARE_SCRIPT	2128045
#define ERR_DOCKER_OS		2128046

#define BUILD_TMP	"build_tmp"	/* worker temp and error files */
/* The error file's text until the worker replaces it (agent-behaviour §6.8). */
#define KILLED_MSG	"Builder process was killed by the OS or another program."

enum build_state { B_CLAIMED, B_RUNNING, B_FINISHED };

struct build {
	cJSON		*info;		/* pulled ThirdPartyBuildInfo (owned) */
	const char	*project_id;	/* borrowed from info */
	const char	*build_id;
	const char	*vm_seq_id;
	const char	*workspace;
	char		*key;		/* "<buildId>_<vmSeqId>" */
	char		*journal;	/* runtime/builds/<key>.json */
	char		*error_file;	/* build_tmp/<key>_build_msg.log (absolute) */
	char		*start_script;	/* absolute paths */
	char		*prepare_script;
	enum build_state state;
	long long	 claimed_at;	/* unix time the table entry was made */
	int		 hook_busy;	/* a job hook runs (hooks.c): outcome or report waits */
	int		 worker_ran;	/* a worker was started: post-build hook due */
	pid_t		 pid;		/* worker leader (prepare script shell) */
	unsigned long long start_time;	/* proc_start_time(pid) */
	int		 adopted;	/* not our child: watched by pidfd/poll */
	int		 pidfd;		/* adopted watch: pidfd/kqueue, -1 if none */
	char		*cgroup;	/* per-build cgroup dir, or NULL (tree.h) */
	/* container builds (docker.h) */
	char		*container;	/* container name, journaled before create */
	struct dock	*dock;		/* docker.c's state, or NULL */
	int		 tree_busy;	/* leftovers being ended: outcome waits */
	int		 have_status;	/* we reaped the leader: wait_status valid */
	int		 wait_status;
	/* outcome */
	int		 success;
	char		*message;
	int		 error_code;	/* 0 when success */
	/* timers */
	struct timer	 watch_timer;	/* /proc poll fallback for adopted workers */
	struct timer	 report_timer;	/* outbox retry */
	int64_t		 report_backoff;
	int		 report_busy;
	int		 reports_sent;
	int		 refusals;	/* refusals in a row (outbox.c: dead letter) */
	struct build	*next;
};

/**
 * Check a pulled ThirdPartyBuildInfo (protocol §7.7) with Go's decoding
 * rules: projectId, buildId and vmSeqId non-empty strings of at most 128
 * bytes of [A-Za-z0-9._-] without "..", because they name files and appear
 * unquoted in the start script; workspace, pipelineId, containerHashId
 * strings or null; executeCount an integer or null; dockerBuildInfo an
 * object or null. Returns 0, or -1 with the reason in err (errlen bytes).
 */
int build_info_check(const cJSON *info, char *err, size_t errlen);

/**
 * Build the JSON the worker receives in base64 (protocol Appendix B): keys
 * projectId, buildId, vmSeqId, workspace, pipelineId, dockerBuildInfo,
 * executeCount, containerHashId in that order, absent values "" / null.
 * dockerBuildInfo is always null: the text ends up in the worker's argv
 * (bk-ci WorkRunner.getBuildInfo reads args[0]), visible in ps, and must
 * not carry its credentials (docs/security.md). Returns a new string
 * (caller frees).
 */
char *build_info_json(const cJSON *info);

/**
 * The workerBuildFinish body (protocol §7.8): the pulled build flattened with
 * success, message and error {errorType USER, errorMessage, errorCode} (null
 * on success). New string, caller frees.
 */
char *build_finish_json(const struct build *b);

/**
 * Text of the unix start script (agent-behaviour §6.4) with every path
 * single-quoted (W18). shell: interpreter; java: java binary; workdir:
 * install dir; b64arg: the worker's last argument. New string, caller frees.
 */
char *build_start_script(const char *shell, const char *java,
    const char *workdir, const struct build *b, const char *b64arg);

/** Text of the prepare script: "#!<shell>\nexec <shell> -l '<start>'". */
char *build_prepare_script(const char *shell, const char *start_script);

/**
 * The eight ThirdPartyBuildInfo keys of info in wire order (protocol
 * Appendix B; bk-ci ThirdPartyBuildInfo.kt), absent strings "" and absent
 * dockerBuildInfo/executeCount null. New object, caller deletes.
 */
cJSON *build_info_obj(const cJSON *info);

/* ---- the table (build.c) */
/** 1 when b runs in a container (its dockerBuildInfo is an object). */
int build_is_docker(const struct build *b);
/** First build of the table (then ->next), or NULL. Borrowed. */
struct build *build_first(void);
/** The build journaled at path, or NULL. Borrowed. */
struct build *build_by_journal(const char *path);
/**
 * New table entry for a claimed build (journal NULL: a fresh journal path)
 * or a journaled one (journal: its file, copied). Takes ownership of info,
 * which must have passed build_info_check. Never NULL.
 */
struct build *build_new(cJSON *info, const char *journal);
/** Unlink b from the table and free it and its timers and fds. */
void build_free(struct build *b);
/**
 * The outcome of b is known: journal it, remove its scripts and queue the
 * finish report (after P_FINISH_DELAY on success, as GoAgent's 8 s).
 * msg copied; code is the workerBuildFinish errorCode (ignored on success).
 */
void build_finish(struct build *b, int success, const char *msg, int code);
/**
 * A build could not start for a reason of this host (a full, read-only or
 * failing disk, java missing, the worker jar lost; cause copied, one line):
 * stop claiming, and probe the host with backoff (5 s doubling to 5 min)
 * until build_tmp is writable, java is executable and the worker jar (or
 * its copy in tmp/) is there; then claim again. Logged once per fault.
 */
void build_local_fault(const char *cause);
/** The local fault that stops claiming (borrowed), or NULL. */
const char *build_fault(void);
/** child_watch callback of a worker we started: arg is its struct build. */
void build_worker_exited(pid_t pid, int status, void *arg);

/* ---- the worker (worker.c) */
/**
 * Start the worker of a claimed, journaled build b: on success b is
 * RUNNING and journaled with pid, start time and cgroup; on any failure b
 * is finished as failed with the reason (never left CLAIMED).
 */
void worker_launch(struct build *b);

/* ---- the journal (journal.c), runtime/builds/<key>[.<n>].json */
/** Rewrite b's entry atomically (mode 0600). 0, or -1 (logged). */
int journal_write(struct build *b);
/** Delete b's entry (a missing file is fine; other errors are logged). */
void journal_remove(const struct build *b);
/** Journal path for a new build of key; new string, caller frees. */
char *journal_path_new(const char *key);
/**
 * Read every entry: each valid one becomes a table entry (build_new) handed
 * to recover; an unreadable or invalid one is renamed <file>.corrupt with a
 * log line saying why. Files bigger than 1 MiB count as corrupt.
 */
void journal_load(void (*recover)(struct build *b));

/* ---- the outbox (outbox.c) */
/** The report timer's callback (arg: struct build); sends when due. */
void outbox_send(void *arg);

struct envlist;
/**
 * The worker's environment (agent-behaviour §6.6): the agent's own
 * environment plus DEVOPS_* variables and the heartbeat envs (which win).
 * env is initialised here; free with envlist_free.
 */
void build_env(const struct build *b, struct envlist *env);


#endif
