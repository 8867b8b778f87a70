/*
 * child.h - the one child table and reaper of a process (STYLE.md §5),
 * plus fork/exec with a clean child: signals reset, fds closed, optional new
 * session and user switch, and exec errors reported back to the parent.
 */
#ifndef CHILD_H
#define CHILD_H

#include <stddef.h>
#include <sys/types.h>

struct spawn_opts {
	const char	*path;		/* executable to exec */
	char *const	*argv;		/* NULL-terminated */
	char *const	*envp;		/* NULL-terminated; NULL = inherit environ */
	const char	*cwd;		/* NULL = inherit */
	int		 new_session;	/* setsid(): own session and process group */
	int		 switch_user;	/* run as uid/gid with user's groups */
	uid_t		 uid;
	gid_t		 gid;
	const char	*user;		/* for initgroups() when switch_user */
	int		 stdin_fd;	/* -1 = /dev/null */
	int		 stdout_fd;	/* -1 = /dev/null */
	int		 stderr_fd;	/* -1 = /dev/null; -2 = same as stdout */
	const char	*cgroup_procs;	/* child writes its pid here first; NULL = none */
};

typedef void (*child_exit_fn)(pid_t pid, int status, void *arg);

/**
 * fork + exec per opts. Returns the child's pid, or -1 with a reason in err
 * (errlen bytes) when fork, the user switch, chdir or exec failed (the
 * failure is detected before returning, through a close-on-exec pipe).
 */
pid_t child_spawn(const struct spawn_opts *o, char *err, size_t errlen);

/**
 * Start path (argv[0] = path; argv NULL-terminated, borrowed) detached: in a
 * session of its own, cwd as given (NULL: inherit), stdin, stdout and stderr
 * on /dev/null, the environment inherited; nobody watches it (its exit is
 * reaped and logged as unknown). Makes path executable first (chmod 0755:
 * a copied install may have lost the bit). Returns the pid, or -1 with the
 * reason in err (errlen bytes).
 */
pid_t child_spawn_detached(const char *path, char *const argv[], const char *cwd,
    char *err, size_t errlen);

/**
 * In a child between fork and exec: default dispositions for every signal
 * and an empty mask, so a worker inherits neither the agent's handlers nor
 * an ignored SIGPIPE or SIGQUIT from whoever started the agent.
 * Async-signal-safe.
 */
void child_reset_signals(void);

/** Call fn(pid, wait status, arg) from child_reap() when pid exits. */
void child_watch(pid_t pid, child_exit_fn fn, void *arg);
/** Forget pid (its exit will be reaped and logged as unknown). */
void child_unwatch(pid_t pid);
/**
 * Reap every exited child (waitpid(-1, WNOHANG) until 0/ECHILD) and run the
 * watchers. The only waitpid(-1) in a process. Call on SIGCHLD.
 */
void child_reap(void);

/**
 * Run argv synchronously (for short probes such as `java -version`), with
 * stdout+stderr captured into *out (new string, caller frees, at most max
 * bytes kept). The child runs in its own session and process group (setsid
 * before exec); timeout_ms covers the whole run, the wait for its exit after
 * it closed its output included, and on overrun the whole group is killed
 * (SIGKILL). Returns 0 and the wait status in *status, or -1 on spawn
 * failure / timeout (errno ETIMEDOUT).
 */
int child_run_capture(char *const argv[], const char *cwd, int timeout_ms,
    size_t max, char **out, int *status);

/** Describe a wait status: "exit code N" or "signal N (NAME)". Static buffer. */
const char *child_status_str(int status);

#endif
