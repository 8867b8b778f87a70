/*
 * build.c - the life cycle of one build (agent-behaviour §6; protocol §7.7,
 * §7.8): claimed from a poll answer, journaled, its worker started
 * (worker.c), its end detected (reaped, or watched by pidfd after a
 * restart), its leftover processes ended (tree.h), its outcome decided and
 * handed to the outbox (outbox.c). See build.h for the states and
 * docs/durability.md for why.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#ifdef __APPLE__
#include <sys/event.h>
#endif
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "build.h"
#include "child.h"
#include "docker.h"
#include "fsutil.h"
#include "json.h"
#include "log.h"
#include "md5.h"
#include "ops.h"
#include "proc.h"
#include "tree.h"
#include "util.h"

#define ERROR_FILE_MAX	(64 * 1024)

static struct build *builds;

/* A local reason builds cannot start (build_local_fault), and its probe. */
static struct {
	char		*cause;
	int64_t		 backoff;
	struct timer	 probe;
} fault;

/* ---------------------------------------------------------------- helpers */

/* Copy member key of src into dst as a string ("" when absent or not a string). */
static void
copy_str(cJSON *dst, const cJSON *src, const char *key, int null_if_absent)
{
	const cJSON *it = json_get(src, key);

	if (cJSON_IsString(it))
		cJSON_AddStringToObject(dst, key, it->valuestring);
	else if (null_if_absent)
		cJSON_AddNullToObject(dst, key);
	else
		cJSON_AddStringToObject(dst, key, "");
}

/* The eight ThirdPartyBuildInfo keys, in wire order (build.h). */
cJSON *
build_info_obj(const cJSON *info)
{
	cJSON *o = cJSON_CreateObject();
	const cJSON *dbi = json_get(info, "dockerBuildInfo");
	const cJSON *ec = json_get(info, "executeCount");

	copy_str(o, info, "projectId", 0);
	copy_str(o, info, "buildId", 0);
	copy_str(o, info, "vmSeqId", 0);
	copy_str(o, info, "workspace", 0);
	copy_str(o, info, "pipelineId", 0);
	if (cJSON_IsObject(dbi))
		cJSON_AddItemToObject(o, "dockerBuildInfo", cJSON_Duplicate(dbi, 1));
	else
		cJSON_AddNullToObject(o, "dockerBuildInfo");
	if (cJSON_IsNumber(ec))
		cJSON_AddNumberToObject(o, "executeCount", ec->valuedouble);
	else
		cJSON_AddNullToObject(o, "executeCount");
	copy_str(o, info, "containerHashId", 0);
	return o;
}

/* ---------------------------------------------------------------- table */

int
build_active_count(void)
{
	struct build *b;
	int n = 0;

	for (b = builds; b != NULL; b = b->next)
		if (b->state != B_FINISHED)
			n++;
	return n;
}

int
build_total_count(void)
{
	struct build *b;
	int n = 0;

	for (b = builds; b != NULL; b = b->next)
		n++;
	return n;
}

cJSON *
build_task_list(void)
{
	cJSON *arr = NULL;
	struct build *b;

	for (b = builds; b != NULL; b = b->next) {
		cJSON *t;
		if (b->state == B_FINISHED || build_is_docker(b))
			continue;
		if (arr == NULL)
			arr = cJSON_CreateArray();
		t = cJSON_CreateObject();
		json_add_str(t, "projectId", b->project_id);
		json_add_str(t, "buildId", b->build_id);
		json_add_str(t, "vmSeqId", b->vm_seq_id);
		json_add_str(t, "workspace", b->workspace);
		cJSON_AddItemToArray(arr, t);
	}
	return arr;
}

int
build_info_check(const cJSON *info, char *err, size_t errlen)
{
	static const char *strs[] = { "projectId", "buildId", "vmSeqId" };
	static const char *opt_strs[] = { "workspace", "pipelineId", "containerHashId" };
	const cJSON *o;
	long long ll;
	size_t i;

	for (i = 0; i < nitems(strs); i++) {
		const cJSON *it = json_get(info, strs[i]);
		if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
			snprintf(err, errlen, "build has no string '%s'", strs[i]);
			return -1;
		}
		/*
		 * Used in file names and unquoted in the start script
		 * (-DAGENT_LOG_PREFIX): only [A-Za-z0-9._-], no dot-dot, at
		 * most 128 bytes. BK-CI ids are project codes, b-<hex> and
		 * digits (fuzz/fuzz_build_info.c found '\n', ';', ' ' passing).
		 */
		if (strspn(it->valuestring, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "abcdefghijklmnopqrstuvwxyz0123456789._-") !=
		    strlen(it->valuestring) || strlen(it->valuestring) > 128 ||
		    strstr(it->valuestring, "..") != NULL) {
			snprintf(err, errlen, "build '%s' is not a safe name", strs[i]);
			return -1;
		}
	}
	for (i = 0; i < nitems(opt_strs); i++) {
		const cJSON *it = json_get(info, opt_strs[i]);
		if (it != NULL && !cJSON_IsNull(it) && !cJSON_IsString(it)) {
			snprintf(err, errlen, "build '%s' is not a string", opt_strs[i]);
			return -1;
		}
	}
	if (json_get_ll(info, "executeCount", &ll, NULL) == -1 ||
	    json_get_obj(info, "dockerBuildInfo", &o) == -1) {
		snprintf(err, errlen, "build executeCount/dockerBuildInfo has the wrong type");
		return -1;
	}
	return 0;
}

/* 1 when b is a container build (build.h). */
int
build_is_docker(const struct build *b)
{
	return cJSON_IsObject(json_get(b->info, "dockerBuildInfo"));
}

/* First entry of the table (build.h). */
struct build *
build_first(void)
{
	return builds;
}

/* The table entry journaled at path, or NULL. */
struct build *
build_by_journal(const char *path)
{
	struct build *b;

	for (b = builds; b != NULL; b = b->next)
		if (strcmp(b->journal, path) == 0)
			return b;
	return NULL;
}

/*
 * New table entry for a pulled build (journal NULL: a new journal path) or
 * a journaled one (journal: its file, copied); takes info.
 */
struct build *
build_new(cJSON *info, const char *journal)
{
	struct build *b = xcalloc(1, sizeof(*b));
	const cJSON *ws = json_get(info, "workspace");

	b->info = info;
	b->project_id = json_get(info, "projectId")->valuestring;
	b->build_id = json_get(info, "buildId")->valuestring;
	b->vm_seq_id = json_get(info, "vmSeqId")->valuestring;
	b->workspace = cJSON_IsString(ws) ? ws->valuestring : "";
	b->key = xasprintf("%s_%s", b->build_id, b->vm_seq_id);
	b->journal = journal ? xstrdup(journal) : journal_path_new(b->key);
	b->error_file = xasprintf("%s/" BUILD_TMP "/%s_build_msg.log", A.workdir, b->key);
	b->start_script = xasprintf("%s/devops_agent_start_%s_%s.sh", A.workdir,
	    b->project_id, b->key);
	b->prepare_script = xasprintf("%s/devops_agent_prepare_start_%s_%s.sh",
	    A.workdir, b->project_id, b->key);
	b->pidfd = -1;
	b->claimed_at = (long long)time(NULL);
	timer_init(&b->report_timer, "finish-report", outbox_send, b);
	b->next = builds;
	builds = b;
	return b;
}

/* Unlink b from the table and free it (build.h). */
void
build_free(struct build *b)
{
	struct build **pp;

	for (pp = &builds; *pp != NULL; pp = &(*pp)->next)
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	timer_cancel(&b->watch_timer);
	timer_cancel(&b->report_timer);
	docker_build_free(b);
	free(b->container);
	if (b->pidfd != -1) {
		ev_fd_del(b->pidfd);
		close(b->pidfd);
	}
	cJSON_Delete(b->info);
	free(b->key);
	free(b->journal);
	free(b->error_file);
	free(b->start_script);
	free(b->prepare_script);
	free(b->cgroup);
	free(b->message);
	free(b);
}

/* ---------------------------------------------------------------- end */

/* Read the worker's error file: new string ("" when missing/empty). */
static char *
error_file_read(const struct build *b)
{
	char *buf = NULL;

	/* The build user can replace it: no symlink, FIFO or device. */
	if (fs_read_regular(b->error_file, (size_t)ERROR_FILE_MAX, &buf, NULL) == -1)
		return xstrdup("");
	str_trim(buf);
	return buf;
}

/*
 * The worker leader ended and its leftovers are gone: decide the outcome
 * from the error file (§6.8) and, when we reaped it, its wait status too
 * (W12: a non-zero exit without a message is a failure, not a success).
 * Deciding only now lets a worker that outlived a killed leader write its
 * error file when the tree cleanup stops it.
 */
static void
build_decide(struct build *b)
{
	char *msg = error_file_read(b), *text;
	int status = b->wait_status;

	free(b->message);
	b->message = NULL;
	if (*msg != '\0' && !(b->have_status && WIFEXITED(status) &&
	    WEXITSTATUS(status) >= 126 && strcmp(msg, KILLED_MSG) == 0)) {
		b->success = 0;
		b->message = msg;
		b->error_code = ERR_BUILD_PROCESS_RUN;
		return;
	}
	if (b->have_status && WIFEXITED(status) &&
	    (WEXITSTATUS(status) == 126 || WEXITSTATUS(status) == 127) &&
	    strcmp(msg, KILLED_MSG) == 0) {
		/* The shell could not run the worker: say so, not "killed". */
		char *java = agent_java_path();
		text = xasprintf("the worker never started: its start script exited "
		    "with status %d (%s; java is %s)", WEXITSTATUS(status),
		    WEXITSTATUS(status) == 127 ? "command not found" :
		    "not executable", java);
		build_local_fault(text);
		free(java);
		free(msg);
		b->success = 0;
		b->message = text;
		b->error_code = ERR_BUILD_PROCESS_START;
		return;
	}
	free(msg);
	if (b->have_status &&
	    !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		text = xasprintf("worker process %ld ended with %s and left no "
		    "message", (long)b->pid, child_status_str(status));
		b->success = 0;
		b->error_code = ERR_BUILD_PROCESS_RUN;
	} else {
		text = xasprintf("worker process %ld exited", (long)b->pid);
		b->success = 1;
		b->error_code = 0;
	}
	b->message = text;
}

/* Finish b with the outcome build_decide() stored in it. */
static void
build_finish_decided(struct build *b)
{
	char *msg = b->message;

	b->message = NULL;	/* build_finish() replaces it with a copy */
	build_finish(b, b->success, msg, b->error_code);
	free(msg);
}

/* hooks/post-build ended (ops.h hook_done_fn): the report may go now. */
static void
post_build_done(struct build *b, int ok, const char *msg)
{
	(void)ok;
	(void)msg;	/* logged by hooks.c; the outcome stays the worker's */
	free(b->cgroup);	/* ended and removed with the hook's leftovers */
	b->cgroup = NULL;
	build_finish_decided(b);
}

/*
 * The worker's outcome is known: run hooks/post-build (in the build's
 * cgroup, made again), then finish.
 */
static void
build_post_hook(struct build *b)
{
	char err[300], *name, *cg = NULL;
	const char *base = strrchr(b->journal, '/');

	if (b->cgroup != NULL) {
		name = xstrdup(base != NULL ? base + 1 : b->journal);
		if (str_ends(name, ".json"))
			name[strlen(name) - 5] = '\0';
		cg = tree_cgroup_create(name);
		free(name);
	}
	free(b->cgroup);
	b->cgroup = cg;
	if (cg != NULL)
		(void)journal_write(b);	/* a restart ends what runs in it */
	switch (hook_run(HOOK_POST_BUILD, b, cg, post_build_done, err,
	    sizeof(err))) {
	case 1:
		return;
	case -1:
		log_warnx("build %s: hooks/post-build: %s", b->key, err);
		break;
	}
	tree_cgroup_remove(b->cgroup);
	free(b->cgroup);
	b->cgroup = NULL;
	build_finish_decided(b);
}

/*
 * The leftovers of b's worker are gone: decide the outcome of a build whose
 * leader ended, or let the pending finish report go.
 */
static void
tree_gone(void *arg)
{
	struct build *b = arg;

	b->tree_busy = 0;
	if (b->state == B_RUNNING && !b->hook_busy) {
		build_decide(b);
		build_post_hook(b);	/* then finish, which arms the report */
	} else if (b->state == B_FINISHED && !b->report_busy &&
	    timer_remaining(&b->report_timer) < 0)
		timer_set(&b->report_timer, 0);
}

/*
 * End whatever b's worker left behind (its cgroup, else its process group
 * and session). The finish report waits until that is done, so that the
 * server never hands this agent a new build while the old one still runs
 * (the build keeps counting against the cap and in taskList until then).
 */
static void
build_tree_end(struct build *b)
{
	b->tree_busy = 1;
	tree_terminate(b->pid, b->start_time, b->cgroup,
	    agent_period(P_KILL_GRACE), tree_gone, b);
}

/* The worker leader ended (reaped: have_status, or seen gone when adopted). */
static void
build_ended(struct build *b, int have_status, int status)
{
	log_info("build %s: worker %ld ended (%s)", b->key, (long)b->pid,
	    have_status ? child_status_str(status) : "adopted, status unknown");
	b->have_status = have_status;
	b->wait_status = status;
	build_tree_end(b);
}

/* Reaper callback for a worker we started (build.h). */
void
build_worker_exited(pid_t pid, int status, void *arg)
{
	(void)pid;
	build_ended(arg, 1, status);
}

/* pidfd of an adopted worker became readable: it exited. */
static void
adopted_fd_ready(int fd, short revents, void *arg)
{
	struct build *b = arg;

	(void)revents;
	ev_fd_del(fd);
	close(fd);
	b->pidfd = -1;
	build_ended(b, 0, 0);
}

/* Fallback watch: poll /proc once a second. */
static void
adopted_poll(void *arg)
{
	struct build *b = arg;

	if (proc_same(b->pid, b->start_time))
		timer_set(&b->watch_timer, 1000);
	else
		build_ended(b, 0, 0);
}

/* Watch a worker that is not our child (adopted after a restart). */
static void
watch_adopted(struct build *b)
{
#ifdef SYS_pidfd_open
	int fd = (int)syscall(SYS_pidfd_open, b->pid, 0);

	if (fd != -1) {
		(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
		/* Re-check identity: the pid may have been reused meanwhile. */
		if (proc_same(b->pid, b->start_time) &&
		    ev_fd_add(fd, POLLIN, adopted_fd_ready, b) == 0) {
			b->pidfd = fd;
			log_info("build %s: watching adopted worker %ld (pidfd)",
			    b->key, (long)b->pid);
			return;
		}
		close(fd);
	}
#elif defined(__APPLE__)
	/* kqueue: its fd turns readable once NOTE_EXIT fired. */
	int kq = kqueue();
	struct kevent kev;

	if (kq != -1) {
		(void)fcntl(kq, F_SETFD, FD_CLOEXEC);
		EV_SET(&kev, b->pid, EVFILT_PROC, EV_ADD | EV_ONESHOT, NOTE_EXIT,
		    0, NULL);
		if (kevent(kq, &kev, 1, NULL, 0, NULL) == 0 &&
		    proc_same(b->pid, b->start_time) &&
		    ev_fd_add(kq, POLLIN, adopted_fd_ready, b) == 0) {
			b->pidfd = kq;
			log_info("build %s: watching adopted worker %ld (kqueue)",
			    b->key, (long)b->pid);
			return;
		}
		close(kq);
	}
#endif
	log_info("build %s: watching adopted worker %ld (1 s /proc poll)",
	    b->key, (long)b->pid);
	timer_init(&b->watch_timer, "adopted-watch", adopted_poll, b);
	timer_set(&b->watch_timer, 1000);
}

/* Remove the per-build files the worker no longer needs (§6.9 step 1). */
static void
build_remove_files(const struct build *b)
{
	(void)unlink(b->start_script);
	(void)unlink(b->prepare_script);
	(void)unlink(b->error_file);
}

/*
 * The outcome is known: journal it first, then queue the report (outbox).
 * A successful report waits P_FINISH_DELAY to give the worker's own end
 * report a head start, as GoAgent does (§6.9 step 3).
 */
void
build_finish(struct build *b, int success, const char *msg, int code)
{
	b->state = B_FINISHED;
	b->success = success;
	free(b->message);
	b->message = xstrdup(msg ? msg : "");
	b->error_code = success ? 0 : code;
	ops_note_build(success ? OPS_FINISHED_OK : OPS_FINISHED_FAIL);
	if (success)
		log_info("build %s: success: %s", b->key, b->message);
	else
		log_warnx("build %s: failed (%d): %s", b->key, code, b->message);
	(void)journal_write(b);
	build_remove_files(b);
	cleanup_build_tmp();
	timer_set(&b->report_timer, success ? agent_period(P_FINISH_DELAY) : 0);
	poll_kick();
}

/* A build arrived: journal it, then launch it (info: taken). */
static void
build_claimed(cJSON *info)
{
	struct build *b = build_new(info, NULL);
	const cJSON *dbi = json_get(info, "dockerBuildInfo");

	log_info("build %s claimed (project %s, workspace '%s')", b->key,
	    b->project_id, b->workspace);
	ops_note_build(OPS_CLAIMED);
	(void)journal_write(b);
	if (cJSON_IsObject(dbi)) {
		/* Never dropped: a malformed one fails with the reason. */
		docker_launch(b);
		return;
	}
	worker_launch(b);
}

/* Binary builds that count against devops.parallel.task.count. */
static int
binary_active_count(void)
{
	struct build *b;
	int n = 0;

	for (b = builds; b != NULL; b = b->next)
		if (b->state != B_FINISHED && !build_is_docker(b))
			n++;
	return n;
}

/* 1 when another normal build may start (0 would mean unlimited: W9). */
static int
can_run(void)
{
	int cap = A.cfg.parallel_task_count;

	return cap <= 0 ? 1 : binary_active_count() < cap;
}

/*
 * 1 when another container build may start: the engine answered its last
 * probe and devops.docker.parallel.task.count (0: unlimited, as GoAgent
 * HEAD job/build.go CheckParallelTaskCount) is not reached.
 */
static int
docker_can_run(void)
{
	int cap = A.cfg.docker_parallel_task_count;

	if (!docker_engine_up())
		return 0;
	return cap <= 0 ? 1 : docker_active_count() < cap;
}

/* Why no build may be claimed now, or NULL (agent.h). */
const char *
build_gate(void)
{
	const char *why;

	if (A.mode != MODE_RUN)
		return "not claiming (stopping or draining)";
	if (!A.started)
		return "startup not acknowledged yet";
	if (A.build_lock)
		return "build lock held by an upgrade";
	if (fault.cause != NULL)
		return "builds cannot start on this host (see the local fault)";
	if ((why = ops_disk_gate()) != NULL)	/* disk guard (ops.c) */
		return why;
	if (!can_run() && !docker_can_run())
		return "parallel task caps reached";
	return NULL;
}

/*
 * The host checks a build launch needs: build_tmp writable, java
 * executable, a worker jar (or its copy in tmp/). 0, or -1 with why.
 */
static int
local_probe(char *why, size_t whylen)
{
	char *java = agent_java_path(), *probe = NULL;
	int rc = -1;

	if (fs_mkdir_p(BUILD_TMP, 0777) == -1) {
		snprintf(why, whylen, "cannot create %s: %s", BUILD_TMP, strerror(errno));
		goto out;
	}
	probe = xasprintf(BUILD_TMP "/.agent-probe.%ld", (long)getpid());
	if (fs_write_atomic(probe, "probe\n", 6, 0600) == -1) {
		snprintf(why, whylen, "cannot write in %s: %s", BUILD_TMP, strerror(errno));
		goto out;
	}
	(void)unlink(probe);
	if (access(java, X_OK) == -1) {
		snprintf(why, whylen, "java not found or not executable: %s (%s)",
		    java, strerror(errno));
		goto out;
	}
	if (!fs_is_file("worker-agent.jar") && !fs_is_file("tmp/worker-agent.jar")) {
		snprintf(why, whylen, "worker-agent.jar is missing and tmp/ has no copy");
		goto out;
	}
	rc = 0;
out:
	free(probe);
	free(java);
	return rc;
}

/* Probe timer: clear the fault when the host is fit again, else back off. */
static void
fault_probe(void *arg)
{
	char why[512];

	(void)arg;
	if (fault.cause == NULL)
		return;
	if (local_probe(why, sizeof(why)) == 0) {
		log_info("local fault gone (was: %s); claiming builds again",
		    fault.cause);
		free(fault.cause);
		fault.cause = NULL;
		fault.backoff = 0;
		poll_kick();
		return;
	}
	fault.backoff = fault.backoff ? fault.backoff * 2 : 5000;
	if (fault.backoff > 300000)
		fault.backoff = 300000;
	if (A.fast && fault.backoff > 500)
		fault.backoff = 500;
	log_debug("local fault persists (%s); next check in %lld ms", why,
	    (long long)fault.backoff);
	timer_set(&fault.probe, fault.backoff);
}

/* Stop claiming until the host is fit again (build.h). */
void
build_local_fault(const char *cause)
{
	if (fault.cause != NULL)
		return;
	fault.cause = xstrdup(cause);
	fault.backoff = 0;
	log_error("builds cannot start on this host: %s; not claiming until "
	    "the cause is gone (checked with backoff)", cause);
	timer_init(&fault.probe, "local-fault", fault_probe, NULL);
	timer_set(&fault.probe, A.fast ? 500 : 5000);
}

/* The local fault that stops claiming, or NULL (build.h). */
const char *
build_fault(void)
{
	return fault.cause;
}

/*
 * askEnable.build / buildType (agent.h), as GoAgent HEAD agent/ask.go
 * checkBuildType: ALL when both kinds may start, DOCKER or BINARY when one
 * may, NONE when neither (or a gate is closed).
 */
const char *
build_ask_type(void)
{
	int bin, dock;

	if (build_gate() != NULL)
		return "NONE";
	bin = can_run();
	dock = docker_can_run();
	if (bin && dock)
		return "ALL";
	return dock ? "DOCKER" : bin ? "BINARY" : "NONE";
}

/*
 * A build the server handed over (agent.h). A malformed one whose ids are
 * usable is journaled with those ids only and reported as failed, so the
 * server learns of it at once instead of after its own timeout.
 */
int
build_handle(const cJSON *data)
{
	static const char *ids[] = { "projectId", "buildId", "vmSeqId" };
	char err[400], why[160];
	cJSON *info;
	struct build *b;
	size_t i;

	if (cJSON_IsObject(data) && build_info_check(data, err, sizeof(err)) == 0) {
		build_claimed(cJSON_Duplicate(data, 1));
		return 1;
	}
	snprintf(why, sizeof(why), "%.150s", cJSON_IsObject(data) ? err :
	    "build is not an object");
	info = cJSON_CreateObject();
	for (i = 0; i < nitems(ids); i++) {
		const cJSON *it = cJSON_IsObject(data) ? json_get(data, ids[i]) : NULL;
		if (it != NULL && cJSON_IsString(it))
			cJSON_AddStringToObject(info, ids[i], it->valuestring);
	}
	if (build_info_check(info, err, sizeof(err)) == -1) {
		log_error("malformed build from the server dropped (%s); its ids "
		    "are not usable, so it cannot be reported", why);
		cJSON_Delete(info);
		return -1;
	}
	b = build_new(info, NULL);
	log_error("build %s: malformed build info (%s); reported as failed",
	    b->key, why);
	(void)journal_write(b);
	snprintf(err, sizeof(err), "the agent could not start this build: "
	    "malformed build info from the server (%s)", why);
	build_finish(b, 0, err, ERR_BUILD_PROCESS_START);
	return 1;
}

/*
 * Re-adopt one journal entry after a restart (docs/durability.md):
 * running and alive -> watched again; running but gone -> outcome from the
 * error file; finished -> its report goes out again; claimed -> failed.
 * Leftover processes are ended first in every case but the first.
 */
static void
build_recover(struct build *b)
{
	switch (b->state) {
	case B_FINISHED:
		log_info("build %s: finish report pending from before the "
		    "restart", b->key);
		build_tree_end(b);	/* the report follows from tree_gone() */
		break;
	case B_RUNNING:
		if (b->container != NULL) {
			docker_recover(b);
		} else if (proc_same(b->pid, b->start_time)) {
			b->adopted = 1;
			log_info("build %s: worker %ld still running; re-adopted",
			    b->key, (long)b->pid);
			watch_adopted(b);
		} else {
			log_info("build %s: worker %ld ended while the agent was "
			    "down", b->key, (long)b->pid);
			build_ended(b, 0, 0);
		}
		break;
	case B_CLAIMED:
		log_warnx("build %s: claimed but never started before the "
		    "restart", b->key);
		b->pid = 0;	/* no worker of ours: only its cgroup may hold one */
		build_tree_end(b);
		build_finish(b, 0, "the agent restarted before the worker started",
		    ERR_BUILD_PROCESS_START);
		break;
	}
}

/* Init the process-tree layer, recover the journal (agent.h). */
void
build_start(void)
{
	char md5[MD5_HEX_LEN], *tag;

	/* One parent cgroup per install: agent id + a digest of the workdir. */
	md5_hex(A.workdir, strlen(A.workdir), md5);
	tag = xasprintf("devops-agent-%s-%.8s", A.cfg.agent_id ?
	    A.cfg.agent_id : "", md5);
	tree_init(tag);
	free(tag);
	journal_load(build_recover);
	tree_cgroup_sweep();
	if (builds != NULL)
		log_info("journal: %d build(s) recovered, %d counting against the cap",
		    build_total_count(), build_active_count());
}
