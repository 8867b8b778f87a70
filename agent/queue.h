/*
 * queue.h - tasks from a Redis queue (docs/queue.md): a second task source
 * of the agent on the same executor as pipeline tasks (common/executor.h).
 * Off unless devops.queue.redis is set.
 */
#ifndef QUEUE_H
#define QUEUE_H

#include <stddef.h>
#include <stdint.h>

/** Largest message accepted (task or control), bytes; larger ones are refused. */
#define QUEUE_MSG_MAX		((size_t)256 * 1024)
/** Most words of cmdline plus cmd_args. */
#define QUEUE_ARGS_MAX		256

/** A decoded task message {"id","type","tube","task":{"cmdline","cmd_args","timeout"}}. */
struct queue_task {
	char	*id;		/* the message id (copied), or NULL when unreadable */
	char	*type;		/* "type", "" when absent */
	char	**argv;		/* cmdline's words then cmd_args; NULL-terminated */
	int64_t	 timeout_ms;	/* <= 0: no timeout */
};

/**
 * Decode task message msg (len bytes, any bytes) into *t (caller frees with
 * queue_task_free, in every case). Returns 0 when the task can run; -1 when
 * it cannot but t->id holds a usable task id (a done message with the
 * reason in err can be sent); -2 when no usable id can be read (dead
 * letter). err (errlen bytes) says why on -1/-2. Rules: at most
 * QUEUE_MSG_MAX bytes, a JSON object; id a string (or an integer) that is a
 * valid executor task id; type a string when present; task an object;
 * cmdline a non-blank string, split at blanks into words (no shell, no
 * quoting), the first naming the program inside the command dir; cmd_args
 * an array of strings when present; timeout a number (seconds) when present;
 * at most QUEUE_ARGS_MAX words in all.
 */
int queue_task_decode(const char *msg, size_t len, struct queue_task *t,
    char *err, size_t errlen);

/** Free what queue_task_decode filled in t (t itself is not freed). */
void queue_task_free(struct queue_task *t);

/**
 * Decode control message msg (len bytes) {"id","type":"kill"}. Returns 0
 * with *id (new string, caller frees) for a kill of a valid task id, or -1
 * with a reason in err (nothing allocated).
 */
int queue_control_decode(const char *msg, size_t len, char **id, char *err,
    size_t errlen);

/**
 * Start the queue source when devops.queue.redis is set: open its executor
 * (task dirs in WORKDIR/queue_tasks, programs in devops.queue.cmd.dir),
 * recover what a previous run left, and connect (from the event loop, with
 * backoff). Never blocks; logs and stays off on a bad configuration.
 */
void queue_start(void);

/**
 * Remove the task dirs (WORKDIR/queue_tasks/<id>) of reported tasks older
 * than max_age_sec seconds (exec_prune). Returns how many; 0 when off.
 */
int queue_prune(long long max_age_sec);

/**
 * Agent exit: stop running queue tasks (budget_ms, ms, shared with the
 * flush of their done messages) and close the connections.
 */
void queue_stop(int64_t budget_ms);

#endif
