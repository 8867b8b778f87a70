/*
 * build.c - the build pull loop, worker launch, end detection, the build
 * journal and the finish outbox (agent-behaviour §6; protocol §7.2, §7.7,
 * §7.8). See build.h for the life cycle and docs/durability.md for why.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#ifdef __APPLE__
#include <sys/event.h>
#endif
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "base64.h"
#include "build.h"
#include "child.h"
#include "envlist.h"
#include "fsutil.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "md5.h"
#include "proc.h"
#include "tree.h"
#include "util.h"

#define JOURNAL_DIR	"runtime/builds"
#define BUILD_TMP	"build_tmp"
#define ERROR_FILE_MAX	(64 * 1024)
#define UNINSTALL_REPORT_TRIES 5	/* finish reports of a deleted agent */
#define JOURNAL_VERSION	1	/* "version" of the journal format */
#define JOURNAL_MAX	(1 << 20)	/* bytes; bigger files are corrupt */

/* The text the worker replaces when it ends normally (§6.8). */
#define KILLED_MSG	"Builder process was killed by the OS or another program."

static struct build *builds;
static struct timer pull_timer;
static int pull_busy;

static void build_finish(struct build *b, int success, const char *msg, int code);
static void report_send(void *arg);

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

/* The eight ThirdPartyBuildInfo keys, in wire order (Appendix B). */
static cJSON *
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

char *
build_finish_json(const struct build *b)
{
	cJSON *o = build_info_obj(b->info), *e;
	char *s;

	cJSON_AddBoolToObject(o, "success", b->success);
	json_add_str(o, "message", b->message ? b->message : "");
	if (b->success || b->error_code == 0) {
		cJSON_AddNullToObject(o, "error");
	} else {
		e = cJSON_AddObjectToObject(o, "error");
		json_add_str(e, "errorType", "USER");
		json_add_str(e, "errorMessage", b->message ? b->message : "");
		cJSON_AddNumberToObject(e, "errorCode", b->error_code);
	}
	s = json_print(o);
	cJSON_Delete(o);
	return s;
}

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
		if (b->state == B_FINISHED)
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

/* The table entry journaled at path, or NULL. */
static struct build *
build_by_journal(const char *path)
{
	struct build *b;

	for (b = builds; b != NULL; b = b->next)
		if (strcmp(b->journal, path) == 0)
			return b;
	return NULL;
}

/*
 * Journal path of a new build: runtime/builds/<key>.json, or <key>.<n>.json
 * when a re-run of the same job arrives while the report of the previous
 * run is still in the outbox (both must survive a restart).
 */
static char *
journal_path_new(const char *key)
{
	char *path = xasprintf(JOURNAL_DIR "/%s.json", key);
	int n;

	for (n = 2; build_by_journal(path) != NULL; n++) {
		free(path);
		path = xasprintf(JOURNAL_DIR "/%s.%d.json", key, n);
	}
	return path;
}

/*
 * New table entry for a pulled build (journal NULL: a new journal path) or
 * a journaled one (journal: its file, copied); takes info.
 */
static struct build *
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
	timer_init(&b->report_timer, "finish-report", report_send, b);
	b->next = builds;
	builds = b;
	return b;
}

static void
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

/* ---------------------------------------------------------------- journal */

static const char *state_names[] = { "claimed", "running", "finished" };

/* Atomically rewrite the journal entry of b. 0, or -1 (logged). */
static int
journal_write(struct build *b)
{
	cJSON *j = cJSON_CreateObject(), *res;
	char *text;
	int rc;

	cJSON_AddNumberToObject(j, "version", JOURNAL_VERSION);
	cJSON_AddItemToObject(j, "build", cJSON_Duplicate(b->info, 1));
	json_add_str(j, "state", state_names[b->state]);
	cJSON_AddNumberToObject(j, "pid", b->pid);
	cJSON_AddNumberToObject(j, "startTime", (double)b->start_time);
	cJSON_AddNumberToObject(j, "pgid", b->pid);
	if (b->cgroup != NULL)
		json_add_str(j, "cgroup", b->cgroup);
	if (b->state == B_FINISHED) {
		res = cJSON_AddObjectToObject(j, "result");
		cJSON_AddBoolToObject(res, "success", b->success);
		json_add_str(res, "message", b->message);
		cJSON_AddNumberToObject(res, "errorCode", b->error_code);
	}
	text = json_print(j);
	cJSON_Delete(j);
	rc = fs_write_atomic(b->journal, text, strlen(text), 0600);
	free(text);
	if (rc == -1) {
		log_warn("build %s: cannot write journal %s", b->key, b->journal);
		agent_check_io_error(errno, "build journal");
	}
	return rc;
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

	if (*msg != '\0') {
		build_finish(b, 0, msg, ERR_BUILD_PROCESS_RUN);
	} else if (b->have_status &&
	    !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		text = xasprintf("worker process %ld ended with %s and left no "
		    "message", (long)b->pid, child_status_str(status));
		build_finish(b, 0, text, ERR_BUILD_PROCESS_RUN);
		free(text);
	} else {
		text = xasprintf("worker process %ld exited", (long)b->pid);
		build_finish(b, 1, text, 0);
		free(text);
	}
	free(msg);
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
	if (b->state == B_RUNNING)
		build_decide(b);	/* arms the report */
	else if (b->state == B_FINISHED && !b->report_busy &&
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

/* Reaper callback for a worker we started. */
static void
worker_exited(pid_t pid, int status, void *arg)
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
static void
build_finish(struct build *b, int success, const char *msg, int code)
{
	b->state = B_FINISHED;
	b->success = success;
	free(b->message);
	b->message = xstrdup(msg ? msg : "");
	b->error_code = success ? 0 : code;
	if (success)
		log_info("build %s: success: %s", b->key, b->message);
	else
		log_warnx("build %s: failed (%d): %s", b->key, code, b->message);
	(void)journal_write(b);
	build_remove_files(b);
	cleanup_build_tmp();
	timer_set(&b->report_timer, success ? agent_period(P_FINISH_DELAY) : 0);
	build_kick();
}

/* ---------------------------------------------------------------- outbox */

/* workerBuildFinish answered: status 0 ends the build; else retry later. */
static void
report_done(struct http_result *r, void *arg)
{
	struct build *b = arg;
	struct envelope env;
	char err[300];
	int64_t delay;

	b->report_busy = 0;
	b->reports_sent++;
	if (r->ok && envelope_parse(r->body, r->len, &env, err, sizeof(err)) == 0) {
		if (env.status == 0) {
			envelope_free(&env);
			log_info("build %s: finish report acknowledged", b->key);
			if (unlink(b->journal) == -1 && errno != ENOENT)
				log_warn("build %s: cannot remove journal", b->key);
			build_free(b);
			agent_maybe_finish();
			return;
		}
		snprintf(err, sizeof(err), "status %lld: %s", env.status,
		    env.message ? env.message : "(no message)");
		envelope_free(&env);
	} else if (!r->ok) {
		snprintf(err, sizeof(err), "%s", r->error);
	}
	/*
	 * A deleted agent: the real server answers 404 to finish reports once
	 * the agent is gone, so retrying forever would keep the agent from ever
	 * uninstalling. Give up after a few tries; the server already ended
	 * these builds when it deleted the agent.
	 */
	if (A.mode == MODE_UNINSTALL && b->reports_sent >= UNINSTALL_REPORT_TRIES) {
		log_error("build %s: finish report failed %d times while the agent "
		    "is being uninstalled (%s); giving up on it", b->key,
		    b->reports_sent, err);
		if (unlink(b->journal) == -1 && errno != ENOENT)
			log_warn("build %s: cannot remove journal", b->key);
		build_free(b);
		agent_maybe_finish();
		return;
	}
	/* Exponential backoff 1 s .. 60 s with +-20 % jitter. */
	b->report_backoff = b->report_backoff ? b->report_backoff * 2 : 1000;
	if (b->report_backoff > 60000)
		b->report_backoff = 60000;
	if (A.fast && b->report_backoff > 1000)
		b->report_backoff = 1000;
	delay = b->report_backoff * (80 + random() % 41) / 100;
	log_warnx("build %s: finish report failed (%s); retry in %lld ms",
	    b->key, err, (long long)delay);
	timer_set(&b->report_timer, delay);
}

/* POST workerBuildFinish for b. */
static void
report_send(void *arg)
{
	struct build *b = arg;
	char *body;

	/* tree_gone() sends it once the leftovers are gone. */
	if (b->report_busy || b->state != B_FINISHED || b->tree_busy)
		return;
	body = build_finish_json(b);
	if (http_json("POST", EP_FINISH, body, report_done, b) == -1)
		timer_set(&b->report_timer, 1000);
	else
		b->report_busy = 1;
	free(body);
}

void
build_flush_reports(int budget_ms)
{
	int64_t end = mono_ms() + budget_ms;
	struct build *b;
	int pending;

	for (b = builds; b != NULL; b = b->next)
		if (b->state == B_FINISHED && !b->report_busy && !b->tree_busy) {
			timer_cancel(&b->report_timer);
			report_send(b);
		}
	do {
		pending = 0;
		for (b = builds; b != NULL; b = b->next)
			if (b->report_busy)
				pending = 1;
		if (pending)
			ev_run_once(50);
	} while (pending && mono_ms() < end);
}

/* ---------------------------------------------------------------- launch */

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
 * Worker jar self-heal (§6.10): restore it from tmp/ when missing. Unlike
 * GoAgent, a build that cannot run is not started (W11). 0 or -1 (reported).
 */
static int
worker_jar_check(struct build *b)
{
	char *v;

	if (fs_is_file("worker-agent.jar"))
		return 0;
	if (!fs_is_file("tmp/worker-agent.jar")) {
		agent_set_exit_error("THIRD_AGENT_EXIT_NOT_WORKER",
		    "worker-agent.jar is missing and tmp/worker-agent.jar too");
		build_finish(b, 0, "worker-agent.jar is missing and there is no "
		    "copy in tmp/ to restore it from", ERR_LOSE_RUN_FILE);
		return -1;
	}
	log_warnx("worker-agent.jar missing: restoring it from tmp/");
	if (fs_copy_file("tmp/worker-agent.jar", "worker-agent.jar", 0644) == -1) {
		char *m = xasprintf("cannot restore worker-agent.jar from tmp/: %s",
		    strerror(errno));
		build_finish(b, 0, m, ERR_RECOVER_RUN_FILE);
		free(m);
		return -1;
	}
	v = host_worker_version("worker-agent.jar", A.workdir);
	if (v[0] != 'v') {
		free(v);
		build_finish(b, 0, "restored worker-agent.jar does not report a "
		    "version", ERR_RECOVER_RUN_FILE);
		return -1;
	}
	free(A.worker_version);
	A.worker_version = v;
	return 0;
}

/* Write one per-build file (mode, owner of the build user). */
static int
write_build_file(const char *path, const char *text, mode_t mode,
    const struct spawn_opts *o)
{
	if (fs_write_atomic(path, text, strlen(text), mode) == -1)
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

/* Start the worker of a claimed build (§6.3-6.8). */
static void
build_launch(struct build *b)
{
	struct spawn_opts o;
	struct envlist env;
	char err[512], *java, *info, *b64, *text;
	const char *shell = "/bin/bash";
	const char *sh_env = getenv("SHELL");
	pid_t pid;

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
	/* 0777 as GoAgent (builds of any user), plus the sticky bit: one
	 * build user cannot remove or swap another's (or the agent's) files. */
	if (fs_mkdir_p(BUILD_TMP, 0777) == -1 || chmod(BUILD_TMP, 01777) == -1) {
		snprintf(err, sizeof(err), "cannot create %s: %s", BUILD_TMP,
		    strerror(errno));
		agent_check_io_error(errno, "build_tmp");
		envlist_free(&env);
		build_finish(b, 0, err, ERR_MAKE_TMP_DIR);
		return;
	}
	if (A.cfg.detect_shell && sh_env != NULL && !str_blank(sh_env))
		shell = sh_env;
	java = agent_java_path();
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
		agent_check_io_error(errno, "build scripts");
		free(text);
		envlist_free(&env);
		build_finish(b, 0, err, ERR_PREPARE_SCRIPT);
		return;
	}
	free(text);
	text = build_prepare_script(shell, b->start_script);
	if (write_build_file(b->prepare_script, text, 0700, &o) == -1) {
		snprintf(err, sizeof(err), "cannot write build scripts: %s",
		    strerror(errno));
		agent_check_io_error(errno, "build scripts");
		free(text);
		envlist_free(&env);
		build_finish(b, 0, err, ERR_PREPARE_SCRIPT);
		return;
	}
	free(text);

	/*
	 * The cgroup is journaled before the spawn: should the agent die
	 * between the spawn and the next journal write, the next start still
	 * finds (and ends) whatever runs in it.
	 */
	b->cgroup = build_cgroup_create(b);
	if (b->cgroup != NULL)
		(void)journal_write(b);
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
		build_finish(b, 0, err, ERR_BUILD_PROCESS_START);
		return;
	}
	b->pid = pid;
	b->start_time = proc_start_time(pid);
	b->state = B_RUNNING;
	child_watch(pid, worker_exited, b);
	(void)journal_write(b);
	log_info("build %s: worker started, pid %ld%s", b->key, (long)pid,
	    b->cgroup ? " (own cgroup)" : "");
}

/* A build arrived from the pull: journal it, then launch it. */
static void
build_claimed(cJSON *info)
{
	struct build *b = build_new(info, NULL);
	const cJSON *dbi = json_get(info, "dockerBuildInfo");

	log_info("build %s claimed (project %s, workspace '%s')", b->key,
	    b->project_id, b->workspace);
	(void)journal_write(b);
	if (cJSON_IsObject(dbi)) {
		/* Never dropped (W24): a docker job is reported as failed. */
		log_warnx("build %s is a docker build; docker builds are not "
		    "supported by this agent", b->key);
		build_finish(b, 0, "docker builds are not supported by this agent "
		    "(binary builds only)", ERR_DOCKER_OS);
		return;
	}
	build_launch(b);
}

/* ---------------------------------------------------------------- pull loop */

/* 1 when another normal build may start (0 would mean unlimited: W9). */
static int
can_run(void)
{
	int cap = A.cfg.parallel_task_count;

	return cap <= 0 ? 1 : build_active_count() < cap;
}

/* Why the pull loop waits, or NULL when it may claim. */
static const char *
pull_gate(void)
{
	if (A.mode != MODE_RUN)
		return "not claiming (stopping or draining)";
	if (!A.started)
		return "startup not acknowledged yet";
	if (A.build_lock)
		return "build lock held by an upgrade";
	if (!can_run())
		return "parallel task cap reached";
	return NULL;
}

static void pull_tick(void *arg);

/* Schedule the next pull. */
static void
pull_again(int64_t ms)
{
	pull_busy = 0;
	timer_set(&pull_timer, ms);
}

/* GET startup?buildType= answered. */
static void
pull_done(struct http_result *r, void *arg)
{
	struct envelope env;
	char err[160];

	(void)arg;
	if (!r->ok || envelope_parse(r->body, r->len, &env, err, sizeof(err)) == -1) {
		log_warnx("build pull failed: %s", r->ok ? err : r->error);
		pull_again(agent_period(P_BUILD_PULL));
		return;
	}
	if (env.status != 0 || env.data == NULL) {
		if (env.status != 0)
			log_warnx("build pull: status %lld: %s", env.status,
			    env.message ? env.message : "");
		envelope_free(&env);
		pull_again(agent_period(P_BUILD_PULL));
		return;
	}
	if (!cJSON_IsObject(env.data) || build_info_check(env.data, err, sizeof(err)) == -1) {
		log_error("build pull: malformed build, not started: %s",
		    cJSON_IsObject(env.data) ? err : "data is not an object");
		envelope_free(&env);
		pull_again(agent_period(P_BUILD_PULL));
		return;
	}
	cJSON *info = cJSON_Duplicate(env.data, 1);
	envelope_free(&env);
	build_claimed(info);
	/* More may be queued: ask again at once while slots are free. */
	pull_again(0);
}

/* GET status answered: claim only when IMPORT_OK (§5.5). */
static void
status_done(struct http_result *r, void *arg)
{
	char err[300], *st = NULL;
	const char *gate;

	(void)arg;
	/* The same decoder as the startup answer (json.h, fuzz_status). */
	if (!r->ok || envelope_data_str(r->body, r->len, &st, err, sizeof(err)) == -1) {
		log_warnx("status check failed: %s", r->ok ? err : r->error);
		pull_again(agent_period(P_BUILD_PULL));
		return;
	}
	if (st == NULL || strcmp(st, "IMPORT_OK") != 0) {
		log_info("status check: %s; not claiming", st ? st : "no status");
		free(st);
		pull_again(agent_period(P_BUILD_PULL));
		return;
	}
	free(st);
	if ((gate = pull_gate()) != NULL) {
		log_debug("build pull: %s", gate);
		pull_again(agent_period(P_BUILD_PULL));
		return;
	}
	if (http_json("GET", EP_PULL "?buildType=BINARY", NULL, pull_done, NULL) == -1)
		pull_again(agent_period(P_BUILD_PULL));
}

/* Pull tick: gates, then GET status. */
static void
pull_tick(void *arg)
{
	const char *gate;

	(void)arg;
	if (pull_busy)
		return;
	if ((gate = pull_gate()) != NULL) {
		log_debug("build pull: %s", gate);
		timer_set(&pull_timer, agent_period(P_BUILD_PULL));
		return;
	}
	pull_busy = 1;
	if (http_json("GET", EP_STATUS, NULL, status_done, NULL) == -1)
		pull_again(agent_period(P_BUILD_PULL));
}

void
build_kick(void)
{
	if (!pull_busy && pull_gate() == NULL)
		timer_set(&pull_timer, 0);
}

/* ---------------------------------------------------------------- recovery */

/* Move a journal file that cannot be used aside as <path>.corrupt. */
static void
journal_corrupt(const char *path, const char *why)
{
	char *bad = xasprintf("%s.corrupt", path);

	log_error("journal %s is corrupt (%s); kept as %s for inspection",
	    path, why, bad);
	if (rename(path, bad) == -1)
		log_warn("cannot rename %s", path);
	free(bad);
}

/* enum build_state of a journaled state name, or -1. */
static int
state_parse(const char *name)
{
	size_t i;

	for (i = 0; i < nitems(state_names); i++)
		if (strcmp(name, state_names[i]) == 0)
			return (int)i;
	return -1;
}

/*
 * Parse journal text into a new table entry (state, pid, start time, cgroup
 * and result restored; nothing started). NULL with why when corrupt.
 */
static struct build *
journal_parse(const char *path, const char *text, char *why, size_t whylen)
{
	cJSON *j = cJSON_Parse(text), *info;
	const cJSON *res = NULL;
	char *state = NULL, *cgroup = NULL, *msg = NULL;
	long long pid = 0, start = 0;
	int has_pid = 0, st = -1, ok = 0, code = 0;
	struct build *b = NULL;

	info = j != NULL ? (cJSON *)json_get(j, "build") : NULL;
	if (!cJSON_IsObject(j) || !cJSON_IsObject(info)) {
		snprintf(why, whylen, "not a JSON object with a build");
	} else if (build_info_check(info, why, whylen) == -1) {
		/* why says which field */
	} else if (json_get_str(j, "state", &state) == -1 || state == NULL ||
	    (st = state_parse(state)) == -1) {
		snprintf(why, whylen, "no valid state");
	} else if (json_get_ll(j, "pid", &pid, &has_pid) == -1 ||
	    json_get_ll(j, "startTime", &start, NULL) == -1 || pid < 0 ||
	    start < 0 || (st == B_RUNNING && pid <= 1)) {
		snprintf(why, whylen, "bad pid or startTime");
	} else if (json_get_str(j, "cgroup", &cgroup) == -1 ||
	    (cgroup != NULL && cgroup[0] != '/')) {
		snprintf(why, whylen, "bad cgroup");
	} else if (json_get_obj(j, "result", &res) == -1 ||
	    (st == B_FINISHED && (res == NULL ||
	    json_get_bool(res, "success", &ok) == -1 ||
	    json_get_int(res, "errorCode", &code, NULL) == -1 ||
	    json_get_str(res, "message", &msg) == -1))) {
		snprintf(why, whylen, "bad result");
	} else {
		b = build_new(cJSON_DetachItemViaPointer(j, info), path);
		b->state = (enum build_state)st;
		b->pid = (pid_t)pid;
		b->start_time = (unsigned long long)start;
		b->cgroup = cgroup;
		cgroup = NULL;
		if (st == B_FINISHED) {
			b->success = ok;
			b->message = msg ? msg : xstrdup("");
			b->error_code = ok ? 0 : code;
			msg = NULL;
		}
	}
	free(state);
	free(cgroup);
	free(msg);
	cJSON_Delete(j);
	return b;
}

/*
 * Re-adopt one journal entry after a restart (docs/durability.md):
 * running and alive -> watched again; running but gone -> outcome from the
 * error file; finished -> its report goes out again; claimed -> failed.
 * Leftover processes are ended first in every case but the first.
 */
static void
journal_recover(const char *path)
{
	char *text = NULL, why[200];
	struct build *b;

	if (fs_read_file(path, JOURNAL_MAX, &text, NULL) == -1) {
		if (errno == EFBIG)
			journal_corrupt(path, "too large");
		else
			log_warn("journal %s unreadable", path);
		return;
	}
	b = journal_parse(path, text, why, sizeof(why));
	free(text);
	if (b == NULL) {
		journal_corrupt(path, why);
		return;
	}
	switch (b->state) {
	case B_FINISHED:
		log_info("build %s: finish report pending from before the "
		    "restart", b->key);
		build_tree_end(b);	/* the report follows from tree_gone() */
		break;
	case B_RUNNING:
		if (proc_same(b->pid, b->start_time)) {
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

/* Load every journal entry. */
static void
journal_load(void)
{
	DIR *d;
	struct dirent *e;

	if (fs_mkdir_p(JOURNAL_DIR, 0700) == -1) {
		log_warn("cannot create %s", JOURNAL_DIR);
		return;
	}
	if ((d = opendir(JOURNAL_DIR)) == NULL) {
		log_warn("cannot open %s", JOURNAL_DIR);
		return;
	}
	while ((e = readdir(d)) != NULL) {
		char *path;
		if (e->d_name[0] == '.' || !str_ends(e->d_name, ".json"))
			continue;
		path = xasprintf(JOURNAL_DIR "/%s", e->d_name);
		journal_recover(path);
		free(path);
	}
	closedir(d);
}

void
build_start_loop(void)
{
	char md5[MD5_HEX_LEN], *tag;

	/* One parent cgroup per install: agent id + a digest of the workdir. */
	md5_hex(A.workdir, strlen(A.workdir), md5);
	tag = xasprintf("devops-agent-%s-%.8s", A.cfg.agent_id ?
	    A.cfg.agent_id : "", md5);
	tree_init(tag);
	free(tag);
	timer_init(&pull_timer, "build-pull", pull_tick, NULL);
	journal_load();
	tree_cgroup_sweep();
	if (builds != NULL)
		log_info("journal: %d build(s) recovered, %d counting against the cap",
		    build_total_count(), build_active_count());
	timer_set(&pull_timer, agent_period(P_BUILD_PULL));
}
