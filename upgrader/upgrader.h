/*
 * upgrader.h - tmp/upgrader internals shared by main.c, upgrade.c,
 * instance.c and uninstall.c. docs/upgrader.md describes the behaviour.
 *
 * All paths are relative to WORKDIR, which main() enters first.
 */
#ifndef UPGRADER_H
#define UPGRADER_H

#include <stdint.h>
#include <sys/types.h>

#define AGENT_BIN	"devopsAgent"
#define DAEMON_BIN	"devopsDaemon"
#define AGENT_NEW	"tmp/devopsAgent"	/* downloaded by the agent (§7.2) */
#define DAEMON_NEW	"tmp/devopsDaemon"
#define BAK_SUFFIX	".bak"
#define UPGRADER_LOG	"logs/devopsUpgrader.log"

/* protocol §7.6: DELETE .../thirdPartyAgent/upgrade?success=<bool> */
#define EP_UPGRADE_END	"/ms/dispatch/api/buildAgent/agent/thirdPartyAgent/upgrade"

/* Health check: the new agent must hold agent.lock this long (issue 4). */
#define HEALTH_ENV	"DEVOPS_UPGRADER_HEALTH_SEC"
#define HEALTH_SEC	15
/* ... after it took agent.lock within this long of the swap. */
#define START_ENV	"DEVOPS_UPGRADER_START_SEC"
#define START_SEC	60
/* SIGTERM -> exit grace before SIGKILL, ms. The agent may flush reports. */
#define AGENT_GRACE_MS	30000
#define DAEMON_GRACE_MS	10000
#define KILL_WAIT_MS	5000
#define RELOCK_MS	30000	/* rollback: wait this long for total-lock */
#define REEXEC_MS	10000	/* a SIGUSR2'd daemon must run the new file by then */

/* An instance of one of our binaries, named as in runtime/<name>.lock. */
struct instance {
	const char	*name;		/* "agent", "daemon" */
	const char	*bin;		/* AGENT_BIN, DAEMON_BIN */
	int		 grace_ms;	/* SIGTERM -> SIGKILL */
};

extern const struct instance INST_AGENT, INST_DAEMON;

/**
 * -action=upgrade (agent-behaviour §7.5, docs/upgrader.md): swap the agent
 * and/or daemon binaries from tmp/, health-check the new agent, roll back
 * on failure, send one FinishUpgrade. workdir: absolute WORKDIR (the cwd).
 * total_fd: the held runtime/total-lock.lock (adopted from the agent or
 * taken by main); released and closed here. Returns the exit code: 0 on
 * success or nothing to do, 1 on failure (after a rollback when needed).
 */
int upgrade_run(const char *workdir, int total_fd);

/**
 * Send DELETE upgrade?success= once (protocol §7.6) with the identity of
 * .agent.properties; the answer is only logged. Returns 0 when the server
 * answered, -1 (logged) when the config cannot be read or the call failed.
 */
int upgrade_report(const char *workdir, int success);

/**
 * -action=uninstall: run `WORKDIR/devopsAgent uninstall` (cwd WORKDIR, at
 * most 120 s, then its process group is killed), log its combined output.
 * Returns 0 when it exited 0, else 1.
 */
int uninstall_run(const char *workdir);

/**
 * 1 when runtime/<name>.lock is held, i.e. the instance runs (§3.4),
 * 0 when free, -1 on error.
 */
int instance_running(const struct instance *in);

/**
 * Stop a running instance (W3): the pid of runtime/<name>.pid is signalled
 * only when it is alive and runs WORKDIR/<bin> (proc_exe_is); SIGTERM, then
 * wait until runtime/<name>.lock is free (no fixed sleep), SIGKILL after
 * in->grace_ms, wait again. *stopped (may be NULL) is set to 1 when a
 * process was signalled. Returns 0 when the instance no longer runs, -1
 * when the lock stays held (by an unverifiable pid, or a process that
 * survived SIGKILL). The caller holds total-lock, so nothing restarts it.
 */
int instance_stop(const struct instance *in, int *stopped);

/**
 * The running daemon, verified (W3: runtime/daemon.pid alive and running
 * WORKDIR/devopsDaemon); call before the swap renames that file. Returns
 * its pid and start time (*start), or -1 when no verified daemon runs.
 */
pid_t daemon_pid(unsigned long long *start);

/**
 * Make the daemon (pid, started at start, verified before the swap)
 * re-execute WORKDIR/devopsDaemon in place with SIGUSR2, so that a service
 * manager keeps supervising it (docs/devopsDaemon.md). Waits up to
 * timeout_ms until that process runs the file now at WORKDIR/devopsDaemon.
 * It then waits for total-lock in its CheckProcess like a new daemon.
 * Returns 0, or -1 (logged) when it did not happen.
 */
int daemon_reexec(pid_t pid, unsigned long long start, int timeout_ms);

/**
 * Start WORKDIR/devopsDaemon detached (own session, stdio on /dev/null,
 * cwd WORKDIR). It waits for total-lock in its CheckProcess, so it runs
 * only once the caller releases that lock. Returns 0 or -1 (logged).
 */
int daemon_start(const char *workdir);

/**
 * Wait up to timeout_ms for an agent that holds runtime/agent.lock, whose
 * runtime/agent.pid names a live WORKDIR/devopsAgent, and that is not the
 * process (old_pid, old_start). Returns its pid and start time (*start), or
 * -1 on timeout.
 */
pid_t agent_wait_up(pid_t old_pid, unsigned long long old_start, int timeout_ms,
    unsigned long long *start);

/**
 * 1 when agent pid (started at start) keeps runtime/agent.lock and lives
 * for ms milliseconds; 0 as soon as it dies or the lock is free.
 */
int agent_stays_up(pid_t pid, unsigned long long start, int64_t ms);

/** Sleep ms milliseconds (restarted after signals). */
void msleep(int ms);

#endif
