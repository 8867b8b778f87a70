/*
 * tree.h - ending whatever a build leaves behind (issue: no orphaned
 * processes). A worker runs in its own session, so its process group id is
 * its pid. When the leader ends, the rest of the group (and, where cgroup v2
 * is writable, the build's cgroup, which also holds children that called
 * setsid) gets SIGTERM, then SIGKILL after a grace period.
 */
#ifndef TREE_H
#define TREE_H

#include <stdint.h>
#include <sys/types.h>

/**
 * SIGTERM the process group pgid and every process in cgroup (a directory,
 * or NULL), then SIGKILL whatever is left after grace_ms (cgroup.kill where
 * available). Runs from the event loop; returns at once. The cgroup
 * directory is removed once empty. cgroup is copied.
 */
void tree_terminate(pid_t pgid, const char *cgroup, int64_t grace_ms);

/**
 * Create a cgroup v2 directory for build key under the agent's own cgroup
 * when cgroup v2 is mounted and writable. Returns the new directory (caller
 * frees) or NULL (then the process group is the only mechanism). The choice
 * is logged once.
 */
char *tree_cgroup_create(const char *key);

/** "<cgroup>/cgroup.procs" for spawn_opts.cgroup_procs, or NULL. Static buffer. */
const char *tree_cgroup_procs(const char *cgroup);

/** Remove an (empty) cgroup directory; NULL is ignored. */
void tree_cgroup_remove(const char *cgroup);

/** Number of processes still alive in group pgid or cgroup (0 = none). */
int tree_count(pid_t pgid, const char *cgroup);

#endif
