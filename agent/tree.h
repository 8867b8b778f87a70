/*
 * tree.h - ending whatever a build leaves behind (issue 6: no orphaned
 * processes; docs/durability.md).
 *
 * A worker runs in its own session, so its process group id and session id
 * are its pid. Where cgroup v2 is mounted and writable, each build also gets
 * its own cgroup, <agent's cgroup>/<tag>/<build>, which the worker joins
 * before exec: it holds every descendant, including children that called
 * setsid, and cgroup.kill ends them all at once. Otherwise the process group
 * and session of the worker are the fallback.
 *
 * When the leader ends, the rest gets SIGTERM, then SIGKILL after a grace
 * period; the cgroup is removed once empty.
 */
#ifndef TREE_H
#define TREE_H

#include <stdint.h>
#include <sys/types.h>

/**
 * Choose the mechanism once per process and log it: find a cgroup v2 mount
 * (/proc/self/mountinfo), the agent's own cgroup (/proc/self/cgroup) and
 * create <own>/<tag> as the parent of the build cgroups (the test that
 * cgroups are usable here). tag is a directory
 * name (copied; characters outside [A-Za-z0-9._-] become '_'). The
 * environment variable DEVOPS_AGENT_CGROUP=off forces the process-group
 * fallback. Safe to call again (no-op).
 */
void tree_init(const char *tag);

/** "cgroup v2 (<dir>, cgroup.kill)" or "process group/session (<why>)". Static. */
const char *tree_mechanism(void);

/**
 * Create the cgroup directory of build name (a file-name-safe key) under
 * the parent made by tree_init. Returns the new directory (caller frees) or
 * NULL when cgroups are off or mkdir failed (logged; the process group is
 * then the only mechanism for this build). An existing empty directory of
 * the same name is reused.
 */
char *tree_cgroup_create(const char *name);

/** "<cgroup>/cgroup.procs" for spawn_opts.cgroup_procs, or NULL. Static buffer. */
const char *tree_cgroup_procs(const char *cgroup);

/**
 * Turn cgroups off for the rest of the process (a worker could not join its
 * cgroup: the hierarchy is not delegated to us). why is logged.
 */
void tree_cgroup_disable(const char *why);

/**
 * Remove an (empty) cgroup directory, and the parent made by tree_init
 * when that is left empty; NULL and ENOENT are ignored.
 */
void tree_cgroup_remove(const char *cgroup);

/**
 * Remove every empty build cgroup left under the parent by an earlier run,
 * then the parent itself when empty (call after the journal is loaded;
 * populated ones are left alone). The parent is created again with the
 * next build cgroup, so no empty directory outlives the builds.
 */
void tree_cgroup_sweep(void);

/**
 * Processes still alive in cgroup (when non-NULL), else in process group or
 * session pgid that started at or after since (proc_start_time units of the
 * leader; 0 = any) and, when pid pgid now names another process, before
 * that one (pid reuse). 0 = none; -1 when the cgroup cannot be read;
 * without /proc the group is probed with kill(-pgid, 0), zombies included.
 */
int tree_count(pid_t pgid, unsigned long long since, const char *cgroup);

/** Called once the tree is gone (or given up on). */
typedef void (*tree_done_fn)(void *arg);

/**
 * End the tree of a worker whose leader exited: SIGTERM every process in
 * cgroup (or, without one, in process group/session pgid started at or
 * after since), then SIGKILL what is left after grace_ms (ms; cgroup.kill
 * where available), then remove the cgroup. Runs from the event loop and
 * returns at once; done(arg) runs from the loop once nothing is left (or 5 s
 * after SIGKILL when processes refuse to die, logged), never before
 * tree_terminate returns. pgid <= 1 and no cgroup: done runs at once.
 * cgroup is copied. done may be NULL.
 */
void tree_terminate(pid_t pgid, unsigned long long since, const char *cgroup,
    int64_t grace_ms, tree_done_fn done, void *arg);

/**
 * Signal every process of cgroup (a dir from tree_cgroup_create) with sig;
 * SIGKILL goes through cgroup.kill where the kernel has it (else the cgroup
 * is frozen while its pids are read and killed).
 */
void tree_cgroup_signal(const char *cgroup, int sig);

struct exec_tree;
/**
 * The executor's per-task cgroup hooks (common/executor.h struct
 * exec_tree) over this layer, or NULL when cgroups are off here (then the
 * executor ends a task's process group and session only). Call after
 * tree_init. Static, never freed.
 */
const struct exec_tree *tree_exec_hooks(void);

#endif
