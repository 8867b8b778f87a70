/*
 * executor_int.h - what the three files of the executor share: the task and
 * executor structures, the task dir's file names and limits, and the few
 * functions one file calls in another. Not for callers of the executor
 * (they use executor.h).
 *
 *   executor.c   the run/kill engine: start, process tree, timeout, kill, end
 *   taskstore.c  the on-disk task state: task dirs, result.json and its done
 *                and reported flags, recovery after a restart, pruning
 *   output.c     output capture: pipes, output.log, the tail ring, UTF-8
 */
#ifndef EXECUTOR_INT_H
#define EXECUTOR_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#include "ev.h"
#include "executor.h"

#define RESULT_FILE	"result.json"
#define TASK_FILE	"task.json"
#define LOG_FILE	"output.log"
#define DEBUG_FILE	"debug.sh"
#define ENV_FILE	"output.env"
#define RESULT_MAX	((size_t)1 << 20)	/* result.json read cap, bytes */
#define SCRIPT_MAX	((size_t)16 << 20) /* script/allow-list read cap */
#define READ_CHUNK	65536
#define READS_PER_TURN	16		/* then let the loop serve others */
#define KILL_POLL_MS	100		/* group check while waiting for TERM */
#define KILL_SETTLE_MS	300		/* after SIGKILL, before forcing EOF */
#define DRAIN_MS	1000		/* leader gone, pipe held open: wait */

enum kill_stage {
	K_NONE,		/* nothing sent */
	K_TERM,		/* SIGTERM sent; polling the group until the deadline */
	K_KILL,		/* SIGKILL sent; settling */
	K_DONE,		/* the group is gone (or was SIGKILLed) */
};

struct task {
	struct executor	*ex;
	char		*id;
	char		*tag;
	char		*dir;		/* real path of the task dir */
	char		*workdir;	/* real path of the cwd */
	char		*script;	/* what runs (for logs) */
	char		*user;		/* "" = the agent's user */
	int64_t		 timeout_ms;
	exec_done_fn	 fn;
	void		*arg;

	pid_t		 pid;		/* leader = process group = session */
	unsigned long long proc_start;	/* proc_start_time(pid) */
	int64_t		 start_ms;	/* wall clock */
	int		 out_fd;	/* pipe read end; -1 after EOF */
	int		 err_fd;	/* stderr pipe when split; -1 otherwise/after EOF */
	exec_output_fn	 out_fn;	/* live output hook, or NULL */
	void		*out_arg;
	int		 killed;	/* exec_kill */
	int		 paused;	/* exec_output_pause: pipes not watched */
	char		*cgroup;	/* the task's own cgroup, or NULL */
	int		 log_fd;	/* output.log; -1 when not writable */
	char		 ring[EXEC_TAIL_MAX];
	size_t		 ring_head, ring_len;
	long long	 total;

	int		 reaped;
	int		 wstatus;
	int		 timed_out;
	int		 stopping;	/* exec_shutdown */
	char		*start_error;	/* spawn failed */
	enum kill_stage	 kill;
	int64_t		 kill_deadline;	/* mono_ms */
	int		 drain_armed;
	int		 ended;

	struct timer	 timeout_timer;
	struct timer	 kill_timer;
	struct timer	 end_timer;	/* deliver a start failure from the loop */
	struct task	*next;
};

struct executor {
	char		*ws;		/* real path */
	char		*td;		/* real path of the task dirs' parent */
	const struct exec_tree *tree;	/* cgroup hooks or NULL */
	char		*allowlist;	/* NULL = no integrity check */
	int64_t		 grace_ms;
	struct task	*tasks;
};

/* executor.c */
/** End t when the leader is reaped, the pipes closed and the group gone. */
void exec_task_maybe_end(struct task *t);

/* taskstore.c */
/** 1 when path (a real path) is root or below it. */
int taskstore_path_under(const char *root, const char *path);
/** Atomically write dir/result.json. 0, or -1 (logged). */
int taskstore_result_write(const char *dir, const struct exec_result *r, pid_t pid,
    unsigned long long pstart);
/** Read <workdir>/output.env into params (an empty object when absent). */
cJSON *taskstore_read_params(const char *id, const char *workdir);

/* output.c */
/**
 * Copy n bytes of src into a new string of valid UTF-8 (caller frees):
 * invalid sequences and NUL bytes become U+FFFD, as Go's json.Marshal does
 * for the GoAgent's response text. skip_partial drops continuation bytes at
 * the start (the tail of a truncated output may begin inside a character).
 */
char *output_utf8_clean(const char *src, size_t n, int skip_partial);
/** Wall-clock time as "YYYY-MM-DD HH:MM:SS" (local time) into buf. */
void output_fmt_time(int64_t ms, char *buf, size_t size);
/** Append text to output.log (best effort: the tail in memory is what counts). */
void output_log_put(struct task *t, const char *text, size_t len);
/** The ring as one clean UTF-8 string. */
char *output_ring_text(const struct task *t);
/** Stop watching the output pipes and close them. */
void output_pipe_close(struct task *t);
/** The split stderr pipe is readable. */
void output_on_stderr(int fd, short revents, void *arg);
/**
 * The stdout pipe is readable: read what the task wrote (a bounded number of
 * chunks per turn so one chatty task cannot starve the loop) to output.log,
 * the tail ring and the live output hook.
 */
void output_on_stdout(int fd, short revents, void *arg);
#endif
