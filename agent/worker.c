/*
 * worker.c - launching the binary worker of a claimed build (agent-behaviour
 * §6.3-6.8): the worker jar check, the start and prepare scripts, the error
 * file, the environment, the build user and the build's own cgroup.
 *
 * Its end is build.c's business (build_worker_exited).
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "base64.h"
#include "build.h"
#include "child.h"
#include "envlist.h"
#include "fsutil.h"
#include "json.h"
#include "log.h"
#include "ops.h"
#include "proc.h"
#include "tree.h"
#include "util.h"

/* The build info the worker gets in argv, docker info nulled (build.h). */
char *
build_info_json(const cJSON *info)
{
	cJSON *o = build_info_obj(info);
	char *s;

	/*
	 * The worker must get this in argv (WorkRunner decodes args[0]), where
	 * every local user can read it: never the docker credentials (W17).
	 * Only binary builds reach a worker, for which the key is null anyway.
	 */
	cJSON_ReplaceItemInObjectCaseSensitive(o, "dockerBuildInfo", cJSON_CreateNull());
	s = json_print(o);

	cJSON_Delete(o);
	return s;
}

/* Text of the start script (build.h). */
char *
build_start_script(const char *shell, const char *java, const char *workdir,
    const struct build *b, const char *b64arg)
{
	char *qw = shell_quote(workdir), *qj = shell_quote(java);
	char *qs = shell_quote(b->start_script), *qp = shell_quote(b->prepare_script);
	char *qe = shell_quote(b->error_file);
	char *tmp = xasprintf("%s/" BUILD_TMP, workdir), *qt = shell_quote(tmp);
	char *jar = xasprintf("%s/worker-agent.jar", workdir), *qjar = shell_quote(jar);
	char *out;

	out = xasprintf("#!%s\ncd %s\n%s -Ddevops.slave.agent.start.file=%s "
	    "-Ddevops.slave.agent.prepare.start.file=%s "
	    "-Ddevops.agent.error.file=%s -Dbuild.type=AGENT "
	    "-DAGENT_LOG_PREFIX=%s_agent -Xmx2g -Djava.io.tmpdir=%s -jar %s %s",
	    shell, qw, qj, qs, qp, qe, b->key, qt, qjar, b64arg);
	free(qw); free(qj); free(qs); free(qp); free(qe);
	free(tmp); free(qt); free(jar); free(qjar);
	return out;
}

/* Text of the prepare script (build.h). */
char *
build_prepare_script(const char *shell, const char *start_script)
{
	char *q = shell_quote(start_script), *out;

	/* tcsh takes the login flag after the script (§6.4). */
	if (strcmp(shell, "/bin/tcsh") == 0)
		out = xasprintf("#!%s\nexec %s %s -l\n", shell, shell, q);
	else
		out = xasprintf("#!%s\nexec %s -l %s\n", shell, shell, q);
	free(q);
	return out;
}

/* Resolve the user a build runs as (§6.7). Returns 0, or -1 with err. */
static int
build_user(struct envlist *env, struct spawn_opts *o, char *err, size_t errlen)
{
	const char *want = A.cfg.slave_user && *A.cfg.slave_user ?
	    A.cfg.slave_user : A.user;
	struct passwd *pw;

	if (strcmp(want, A.user) == 0 && !str_blank(getenv("HOME")) &&
	    !str_blank(getenv("USER")) && !str_blank(getenv("LOGNAME")))
		return 0;
	if ((pw = getpwnam(want)) == NULL) {
		snprintf(err, errlen, "user '%s' not found: check devops.slave.user "
		    "in .agent.properties", want);
		return -1;
	}
	if (pw->pw_uid != geteuid()) {
		o->switch_user = 1;
		o->uid = pw->pw_uid;
		o->gid = pw->pw_gid;
		o->user = want;
	}
	envlist_set(env, "HOME", pw->pw_dir);
	envlist_set(env, "USER", pw->pw_name);
	envlist_set(env, "LOGNAME", pw->pw_name);
	return 0;
}

/* The build user for a hook (ops.h). */
int
worker_user(struct envlist *env, struct spawn_opts *o, char *err, size_t errlen)
{
	return build_user(env, o, err, errlen);
}

/* The worker's environment (§6.6). */
void
build_env(const struct build *b, struct envlist *env)
{
	char *gw = config_gateway_base(A.cfg.gateway);
	const cJSON *it;

	envlist_init(env, 1);
	envlist_set(env, "DEVOPS_AGENT_VERSION", AGENT_VERSION);
	envlist_set(env, "DEVOPS_WORKER_VERSION", A.worker_version);
	envlist_set(env, "DEVOPS_PROJECT_ID", b->project_id);
	envlist_set(env, "DEVOPS_BUILD_ID", b->build_id);
	envlist_set(env, "DEVOPS_VM_SEQ_ID", b->vm_seq_id);
	envlist_set(env, "DEVOPS_SLAVE_VERSION", A.worker_version);
	envlist_set(env, "PROJECT_ID", b->project_id);
	envlist_set(env, "BUILD_ID", b->build_id);
	envlist_set(env, "VM_SEQ_ID", b->vm_seq_id);
	envlist_set(env, "DEVOPS_FILE_GATEWAY", A.cfg.file_gateway);
	envlist_set(env, "DEVOPS_GATEWAY", gw);
	envlist_set(env, "BK_CI_LOCALE_LANGUAGE", A.cfg.language);
	host_worker_env(env);
	cJSON_ArrayForEach(it, A.envs)
		if (it->string != NULL && cJSON_IsString(it))
			envlist_set(env, it->string, it->valuestring);
	/* Test knob of the agent itself; workers never need it. */
	envlist_unset(env, "DEVOPS_AGENT_TEST_FAST");
	free(gw);
}

/*
 * The build could not start for a reason of this host, not of the build
 * (disk, java, worker jar): report it with the cause and stop claiming until
 * the cause is gone (build_local_fault), so the queue is not burnt.
 */
static void
launch_fault(struct build *b, const char *msg, int code)
{
	build_finish(b, 0, msg, code);
	build_local_fault(msg);
}

/* The restored jar's version probe ended: it is the reported version now. */
static void
worker_version_probed(char *version, void *arg)
{
	(void)arg;
	if (*version == '\0') {
		log_warnx("the restored worker-agent.jar does not report a version");
		free(version);
		return;
	}
	free(A.worker_version);
	A.worker_version = version;
}

/*
 * Worker jar self-heal (§6.10): restore it from tmp/ when missing. Unlike
 * GoAgent, a build that cannot run is not started. 0 or -1 (reported).
 */
static int
worker_jar_check(struct build *b)
{

	if (fs_is_file("worker-agent.jar"))
		return 0;
	if (!fs_is_file("tmp/worker-agent.jar")) {
		launch_fault(b, "worker-agent.jar is missing and there is no "
		    "copy in tmp/ to restore it from", ERR_LOSE_RUN_FILE);
		return -1;
	}
	log_warnx("worker-agent.jar missing: restoring it from tmp/");
	if (fs_copy_file("tmp/worker-agent.jar", "worker-agent.jar", 0644) == -1) {
		char *m = xasprintf("cannot restore worker-agent.jar from tmp/: %s",
		    strerror(errno));
		launch_fault(b, m, ERR_RECOVER_RUN_FILE);
		free(m);
		return -1;
	}
	/* The build goes on; the reported version follows from the loop. */
	if (host_worker_version_async("worker-agent.jar", worker_version_probed,
	    NULL) == -1)
		log_warnx("cannot probe the restored worker-agent.jar's version");
	return 0;
}

/* Write one per-build file (mode, owner of the build user). Replaced by
   rename, not fsynced: the scripts and the error file serve this launch
   only (a machine crash ends the build anyway, and the journal, which is
   fsynced, says what to report), and their fsyncs were most of the time
   from a claim to the worker's exec. */
static int
write_build_file(const char *path, const char *text, mode_t mode,
    const struct spawn_opts *o)
{
	if (fs_write_replace(path, text, strlen(text), mode) == -1)
		return -1;
	/* lchown: build_tmp is world-writable; a symlink swapped in after the
	 * rename must not hand its target to the build user. */
	if (o->switch_user && lchown(path, o->uid, o->gid) == -1)
		return -1;
	return 0;
}

/* The build's own cgroup, named after its journal file; NULL when off. */
static char *
build_cgroup_create(const struct build *b)
{
	const char *base = strrchr(b->journal, '/');
	char *name, *dir;

	name = xstrdup(base != NULL ? base + 1 : b->journal);
	if (str_ends(name, ".json"))
		name[strlen(name) - 5] = '\0';
	dir = tree_cgroup_create(name);
	free(name);
	return dir;
}

static void worker_spawn(struct build *b);

/* hooks/pre-build ended (ops.h hook_done_fn): start the worker, or fail. */
static void
pre_build_done(struct build *b, int ok, const char *msg)
{
	free(b->cgroup);	/* ended and removed with the hook's leftovers */
	b->cgroup = NULL;
	if (!ok) {
		build_finish(b, 0, msg, ERR_BUILD_PROCESS_START);
		return;
	}
	if (A.mode == MODE_STOP)
		return;	/* the next start fails it as claimed, never started */
	b->cgroup = build_cgroup_create(b);
	if (b->cgroup != NULL)
		(void)journal_write(b);
	worker_spawn(b);
}

/* Start the worker of a claimed build (§6.3-6.8). */
void
worker_launch(struct build *b)
{
	struct spawn_opts o;
	struct envlist env;
	char err[512], *java, *info, *b64, *text;
	const char *shell = "/bin/bash";
	const char *sh_env = getenv("SHELL");
	int rc;

	if (worker_jar_check(b) == -1)
		return;
	memset(&o, 0, sizeof(o));
	o.stdin_fd = o.stdout_fd = o.stderr_fd = -1;
	build_env(b, &env);
	if (build_user(&env, &o, err, sizeof(err)) == -1) {
		envlist_free(&env);
		build_finish(b, 0, err, ERR_BUILD_PROCESS_START);
		return;
	}
	envlist_free(&env);
	/* 0777 as GoAgent (builds of any user), plus the sticky bit: one
	 * build user cannot remove or swap another's (or the agent's) files. */
	if (fs_mkdir_p(BUILD_TMP, 0777) == -1 || chmod(BUILD_TMP, 01777) == -1) {
		snprintf(err, sizeof(err), "cannot create %s: %s", BUILD_TMP,
		    strerror(errno));
		launch_fault(b, err, ERR_MAKE_TMP_DIR);
		return;
	}
	if (A.cfg.detect_shell && sh_env != NULL && !str_blank(sh_env))
		shell = sh_env;
	java = agent_java_path();
	/* The start script would exit 127 and the report say "killed". */
	if (access(java, X_OK) == -1) {
		snprintf(err, sizeof(err), "java not found or not executable: %s (%s)",
		    java, strerror(errno));
		free(java);
		envlist_free(&env);
		launch_fault(b, err, ERR_BUILD_PROCESS_START);
		return;
	}
	info = build_info_json(b->info);
	b64 = base64_encode(info, strlen(info));
	free(info);
	text = build_start_script(shell, java, A.workdir, b, b64);
	free(b64);
	free(java);
	/*
	 * The worker clears the error file when it starts and rewrites it with
	 * its errors at exit; a SIGKILLed worker leaves this text (§6.8).
	 * Written before the start, unlike GoAgent (W12 race).
	 */
	if (write_build_file(b->error_file, KILLED_MSG, 0644, &o) == -1 ||
	    write_build_file(b->start_script, text, 0700, &o) == -1) {
		snprintf(err, sizeof(err), "cannot write build scripts: %s",
		    strerror(errno));
		free(text);
		launch_fault(b, err, ERR_PREPARE_SCRIPT);
		return;
	}
	free(text);
	text = build_prepare_script(shell, b->start_script);
	if (write_build_file(b->prepare_script, text, 0700, &o) == -1) {
		snprintf(err, sizeof(err), "cannot write build scripts: %s",
		    strerror(errno));
		free(text);
		launch_fault(b, err, ERR_PREPARE_SCRIPT);
		return;
	}
	free(text);

	/*
	 * The cgroup is journaled before the spawn: should the agent die
	 * between the spawn and the next journal write, the next start still
	 * finds (and ends) whatever runs in it (the pre-build hook's too).
	 */
	b->cgroup = build_cgroup_create(b);
	if (b->cgroup != NULL)
		(void)journal_write(b);
	/* Job hook (hooks.c): the worker starts once it succeeded. */
	rc = hook_run(HOOK_PRE_BUILD, b, b->cgroup, pre_build_done, err,
	    sizeof(err));
	if (rc == 1)
		return;
	if (rc == -1) {
		tree_cgroup_remove(b->cgroup);
		free(b->cgroup);
		b->cgroup = NULL;
		text = xasprintf("hooks/pre-build: %s", err);
		build_finish(b, 0, text, ERR_BUILD_PROCESS_START);
		free(text);
		return;
	}
	worker_spawn(b);
}

/* Spawn the prepared worker of b in its cgroup (or process group). */
static void
worker_spawn(struct build *b)
{
	struct spawn_opts o;
	struct envlist env;
	char err[512];
	pid_t pid;

	memset(&o, 0, sizeof(o));
	o.stdin_fd = o.stdout_fd = o.stderr_fd = -1;
	build_env(b, &env);
	if (build_user(&env, &o, err, sizeof(err)) == -1) {
		envlist_free(&env);
		tree_cgroup_remove(b->cgroup);
		free(b->cgroup);
		b->cgroup = NULL;
		build_finish(b, 0, err, ERR_BUILD_PROCESS_START);
		return;
	}
	char *argv[] = { b->prepare_script, NULL };
	o.path = b->prepare_script;
	o.argv = argv;
	o.envp = env.v;
	o.cwd = A.workdir;
	o.new_session = 1;	/* an agent restart never touches the worker */
	o.cgroup_procs = tree_cgroup_procs(b->cgroup);
	pid = child_spawn(&o, err, sizeof(err));
	if (pid == -1 && b->cgroup != NULL && strncmp(err, "cgroup", 6) == 0) {
		/* Not delegated to us after all: the process group must do. */
		tree_cgroup_disable(err);
		tree_cgroup_remove(b->cgroup);
		free(b->cgroup);
		b->cgroup = NULL;
		o.cgroup_procs = NULL;
		pid = child_spawn(&o, err, sizeof(err));
	}
	envlist_free(&env);
	if (pid == -1) {
		tree_cgroup_remove(b->cgroup);
		free(b->cgroup);
		b->cgroup = NULL;
		launch_fault(b, err, ERR_BUILD_PROCESS_START);
		return;
	}
	b->pid = pid;
	b->start_time = proc_start_time(pid);
	b->state = B_RUNNING;
	child_watch(pid, build_worker_exited, b);
	(void)journal_write(b);
	ops_dirty();
	log_info("build %s: worker started, pid %ld%s", b->key, (long)pid,
	    b->cgroup ? " (own cgroup)" : "");
}
