/*
 * executor.h - the safe script executor: runs local script tasks (the
 * pipeline loop's COMMAND items, agent-behaviour §8, and any other local
 * script task) from the event loop, with the guarantees GoAgent lacks (W16):
 *
 *  - every task has its own directory <workspace>/<id>/ and any path a task
 *    names (its id, its working directory, a script path) is resolved with
 *    realpath() and refused when it leaves the workspace, through ".." or a
 *    symlink;
 *  - optional integrity check: a script runs only when its sha256 is listed
 *    in an allow-list file (sha256sum format);
 *  - a timeout: the task's whole process group gets SIGTERM, then SIGKILL
 *    after a grace period; a task is over only when its leader is reaped,
 *    its output pipe hit EOF and no process of its group is left; with
 *    exec_config.tree, the task's cgroup too (processes that left the
 *    session included);
 *  - it runs as a given user (devops.slave.user) in a session of its own;
 *  - the full output (stdout + stderr) streams to <task>/output.log while
 *    memory keeps only the last EXEC_TAIL_MAX bytes, which is what a result
 *    carries (seed 000's truncation rule);
 *  - <workdir>/output.env (KEY=VALUE lines) becomes the result's params;
 *  - the result is persisted as <task>/result.json with a done flag and a
 *    reported flag (seed 000's done flags): a restarted agent reports a
 *    finished task it has not reported yet and never runs a task again;
 *  - <task>/debug.sh re-runs the task by hand with the same environment
 *    (seed 002).
 *
 * Files of a task, all inside <workspace>/<id>/ (see docs/pipeline.md):
 *   task.json     the request (written first: marks an executor task dir)
 *   <script>      the inline script as run (script_name, default script.sh)
 *   output.log    the full output, between "=== Execution ..." header/footer
 *   result.json   status, exit code, times, output tail, params, flags
 *   debug.sh      re-run by hand
 *   output.env    written by the task itself (in its working directory)
 *
 * Everything runs from the one event loop (ev.h): the output pipe is an
 * ev_fd_add watcher, the exit a child_watch callback, the timeout and the
 * kill grace timers; nothing ever blocks waiting for a task.
 */
#ifndef EXECUTOR_H
#define EXECUTOR_H

#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

/** Bytes of output a result keeps: the last 64 KiB. */
#define EXEC_TAIL_MAX		((size_t)64 * 1024)
/** Largest output.env read, bytes; at most EXEC_PARAMS_MAX parameters. */
#define EXEC_ENV_FILE_MAX	((size_t)64 * 1024)
#define EXEC_PARAMS_MAX		1000
/** Longest task id. */
#define EXEC_ID_MAX		128
/** Default grace between SIGTERM and SIGKILL, ms. */
#define EXEC_DEFAULT_GRACE_MS	10000

enum exec_status {
	EXEC_RUNNING,		/* started (or starting), no outcome yet */
	EXEC_SUCCESS,		/* exit code 0 */
	EXEC_FAILURE,		/* non-zero exit, signal, start failure, restart */
	EXEC_TIMEOUT,		/* killed after the timeout */
	EXEC_KILLED,		/* killed on request (exec_kill) */
};

/* Why exec_start refused a task (nothing ran, nothing was persisted). */
enum exec_error {
	EXEC_OK,
	EXEC_E_REQUEST,		/* bad id/request, unknown user, path escape */
	EXEC_E_EXISTS,		/* the task already has a result: never re-run */
	EXEC_E_DENIED,		/* integrity check: sha256 not allowed */
	EXEC_E_PREPARE,		/* cannot create the task dir or write its files */
};

/**
 * Per-task cgroup hooks of the owner (the agent's process-tree layer,
 * agent/tree.h): where cgroup v2 is usable each task runs in a cgroup of its
 * own, so that its processes that left its session (setsid, a double fork)
 * are counted and killed with it. create(name) returns a new cgroup dir
 * (caller frees) or NULL; procs(cgroup) its cgroup.procs path (borrowed);
 * count(cgroup) its live processes (-1 when unreadable); signal(cgroup, sig)
 * signals them all (SIGKILL through cgroup.kill where it exists);
 * remove(cgroup) removes it when empty.
 */
struct exec_tree {
	char		*(*create)(const char *name);
	const char	*(*procs)(const char *cgroup);
	int		 (*count)(const char *cgroup);
	void		 (*signal)(const char *cgroup, int sig);
	void		 (*remove)(const char *cgroup);
};

struct exec_config {
	const char	*workspace;	/* prefix of every task dir; created (0755)
					   if missing; copied */
	const char	*allowlist;	/* sha256 allow-list file; NULL or "" = no
					   integrity check; copied */
	int64_t		 kill_grace_ms;	/* SIGTERM -> SIGKILL, ms; <= 0 -> default */
	const struct exec_tree *tree;	/* cgroup hooks (borrowed, must outlive the
					   executor) or NULL: process group only */
	const char	*taskdir;	/* where the task dirs <taskdir>/<id>/ live;
					   NULL or "" = the workspace; created (0755)
					   if missing; copied */
};

/**
 * Live output hook: called from the event loop with each chunk the task
 * wrote, in order, before it goes to output.log. id and data (len bytes, not
 * NUL-terminated, any bytes) are borrowed for the call; stream is 1 for
 * stdout, 2 for stderr (always 1 unless exec_request.split_stderr).
 */
typedef void (*exec_output_fn)(const char *id, int stream, const char *data,
    size_t len, void *arg);

struct exec_request {
	const char	*id;		/* [A-Za-z0-9._-], 1..EXEC_ID_MAX chars, not
					   "." or ".."; names the task dir */
	const char	*tag;		/* owner label ("pipeline"), stored; NULL = "" */
	const char	*script;	/* inline script text, or NULL (see below) */
	const char	*script_name;	/* file name of the inline script in the task
					   dir; NULL = "script.sh" */
	const char	*script_path;	/* or: an existing script, relative to the
					   workspace; exactly one of script and
					   script_path is set */
	char *const	*args;		/* extra arguments (NULL-terminated) or NULL */
	const char	*workdir;	/* cwd relative to the workspace; NULL = the
					   task dir */
	char *const	*env;		/* "KEY=VALUE" added to the agent's own
					   environment (NULL-terminated) or NULL */
	const char	*user;		/* run as this user; NULL or "" = the user
					   running the agent */
	int64_t		 timeout_ms;	/* <= 0: no timeout */
	exec_output_fn	 on_output;	/* live output, or NULL */
	void		*output_arg;	/* passed to on_output */
	int		 split_stderr;	/* stderr on a pipe of its own (stream 2);
					   else it shares stdout's */
};

/* A task's outcome, as persisted in result.json. */
struct exec_result {
	char		*id;
	char		*tag;
	enum exec_status status;
	int		 done;		/* the outcome is final */
	int		 reported;	/* the owner acknowledged it (exec_mark_reported) */
	int		 exit_code;	/* -1 when killed by a signal or never run */
	int		 term_signal;	/* signal that ended the leader, or 0 */
	int64_t		 start_ms;	/* wall clock, ms since the epoch */
	int64_t		 end_ms;
	int64_t		 duration_ms;
	long long	 output_bytes;	/* everything the task wrote */
	char		*output;	/* the last EXEC_TAIL_MAX bytes, valid UTF-8
					   (invalid bytes and NUL become U+FFFD) */
	char		*error;		/* why it failed, Go style: "exit status 3",
					   "signal: killed", "timed out after 5 s";
					   "" on success */
	cJSON		*params;	/* output.env as an object of strings; never NULL */
};

/**
 * Called from the event loop when a task is over and its result.json says
 * done. res is owned by the callee (free with exec_result_free).
 */
typedef void (*exec_done_fn)(struct exec_result *res, void *arg);

struct executor;

/**
 * Create an executor over c->workspace (created with mode 0755; its real
 * path is used from then on). Returns NULL with a message in err (errlen
 * bytes) when the workspace cannot be created or resolved.
 */
struct executor *exec_new(const struct exec_config *c, char *err, size_t errlen);

/**
 * Free e. Running tasks are not touched (call exec_shutdown first); their
 * callbacks will never run.
 */
void exec_free(struct executor *e);

/** Real path of the workspace (borrowed, valid until exec_free). */
const char *exec_workspace(const struct executor *e);

/**
 * Start task r (all strings are copied). On EXEC_OK the task runs (or, when
 * the spawn itself fails, ends at once as EXEC_FAILURE) and fn(res, arg)
 * runs exactly once from the event loop, after result.json holds the final
 * result. Any other value means nothing ran and nothing was persisted; err
 * (errlen bytes) then says why, e.g. "path 'a/../../x' leaves the
 * workspace", "script sha256 3f2a... is not in the allow-list ...",
 * "write script file .../script.sh: No space left on device".
 */
enum exec_error exec_start(struct executor *e, const struct exec_request *r,
    exec_done_fn fn, void *arg, char *err, size_t errlen);

/**
 * Kill running task id on request: SIGTERM to its process group, SIGKILL
 * after the grace period; it ends as EXEC_KILLED ("killed on request") and
 * its callback runs as usual. Returns 1 when the task was running (the kill
 * is under way), 0 when no such task runs here (nothing done).
 */
int exec_kill(struct executor *e, const char *id);

/**
 * Back-pressure: pause != 0 stops reading task id's output (the task blocks
 * once its pipe is full), 0 reads it again. The end of the task still drains
 * the pipe. Returns 1 when the task runs here, 0 when not (nothing done).
 */
int exec_output_pause(struct executor *e, const char *id, int pause);

/** Number of tasks running now. */
int exec_running(const struct executor *e);
/** 1 when task id is running now, else 0. */
int exec_is_running(const struct executor *e, const char *id);

/**
 * Load the persisted result of task id. Returns 1 with *out (caller frees
 * with exec_result_free) when result.json exists and says done, 0 when the
 * task never ran here or is still running, -1 when the id is not a valid
 * task id or result.json is unreadable (errno set).
 */
int exec_load(struct executor *e, const char *id, struct exec_result **out);

/** Record that task id's result was delivered (result.json reported=true). 0 or -1/errno. */
int exec_mark_reported(struct executor *e, const char *id);

/**
 * After a restart: for every task dir whose result.json has tag tag (NULL =
 * any) and that this executor is not running: a done but unreported result
 * is handed to fn; a task that was still running when the previous agent
 * stopped is ended (its process group, if still alive and identified by pid
 * and start time, gets SIGKILL), finalised as EXEC_FAILURE "interrupted: the
 * agent stopped while the task ran" with the tail of its output.log, and
 * handed to fn. fn runs synchronously. Returns the number of results handed.
 */
int exec_recover(struct executor *e, const char *tag, exec_done_fn fn, void *arg);

/**
 * Stop every running task (agent exit): SIGTERM to each process group, up
 * to budget_ms of event-loop turns for them to end, then SIGKILL. Each ends
 * as EXEC_FAILURE "stopped: the agent is shutting down" and its callback
 * runs. Returns when all are over.
 */
void exec_shutdown(struct executor *e, int64_t budget_ms);

/**
 * Remove task dirs (those holding task.json) of finished and reported tasks
 * whose result.json is older than max_age_sec seconds (mtime), and task dirs
 * that never got a result.json and whose task.json is that old. Running and
 * unreported tasks are kept. An error on one entry is logged and the scan
 * goes on. Returns the number of dirs removed.
 */
int exec_prune(struct executor *e, long long max_age_sec);

/**
 * Resolve rel (a relative path) under root (an absolute real path) without
 * leaving it: ".." is applied lexically and may not climb above root; the
 * deepest existing ancestor is passed through realpath(), so a symlink that
 * points outside root is caught. Writes the absolute resolved path into out
 * (outlen bytes). Returns 0, or -1 with errno EINVAL (empty, absolute or
 * escaping path; ENAMETOOLONG when too long) and a reason in err.
 */
int exec_resolve(const char *root, const char *rel, char *out, size_t outlen,
    char *err, size_t errlen);

/** 1 when id is a valid task id (see exec_request.id), else 0. */
int exec_id_valid(const char *id);

/**
 * The script file for an inline command (agent-behaviour §8 step 5, unix):
 * if the first line (trimmed) starts with "#!", that line, "set -e",
 * "cd '<dir>'", then the other lines; otherwise "#!/bin/bash", "", "set -e",
 * "cd '<dir>'", then every line. Each line ends with '\n'. dir is
 * shell-quoted (GoAgent writes it bare, which breaks on spaces: W18).
 * New string, caller frees.
 */
char *exec_wrap_script(const char *command, const char *dir);

/**
 * Parse output.env text into *out (a new cJSON object of strings; caller
 * deletes): lines "KEY=VALUE" or "export KEY=VALUE"; KEY matches
 * [A-Za-z_][A-Za-z0-9_]*; VALUE is trimmed and one pair of surrounding
 * double or single quotes is removed; blank lines and '#' comments are
 * skipped; a later KEY wins; at most EXEC_PARAMS_MAX keys. Returns the
 * number of malformed lines skipped.
 */
int exec_parse_env(const char *text, cJSON **out);

/**
 * Integrity check: 1 when the sha256 of data (len bytes) is listed in the
 * allow-list file (lines "<64 hex digits>[ <name>]", '#' comments; hex in
 * either case), 0 when not listed or the file cannot be read (fail closed);
 * err (errlen bytes) says which.
 */
int exec_allowed(const char *allowlist, const void *data, size_t len,
    char *err, size_t errlen);

/** Lower-case hex sha256 of data into hex (65 bytes). */
void exec_sha256_hex(const void *data, size_t len, char hex[65]);

/** "RUNNING", "SUCCESS", "FAILURE", "TIMEOUT" or "KILLED". */
const char *exec_status_name(enum exec_status s);

/** Free a result (NULL is fine). */
void exec_result_free(struct exec_result *r);

#endif
