/*
 * ops.c - the running agent's state for operators: runtime/status.json
 * (rewritten atomically, at most once a second, for `devopsAgent status`),
 * the counters and gauges of the local Prometheus endpoint, and the disk
 * guard that stops claiming builds when the install dir's file system runs
 * low on free space or inodes.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "agent.h"
#include "build.h"
#include "ev.h"
#include "fsutil.h"
#include "http.h"
#include "log.h"
#include "ops.h"
#include "tree.h"
#include "util.h"

#define WRITE_MIN_MS	1000	/* state file: at most once a second */
#define REFRESH_MS	10000	/* and at least every 10 s, */
#define REFRESH_SLACK_MS 5000	/* or up to 5 s later, on the next wakeup */
#define DISK_EVERY_MS	30000
#define DISK_SLACK_MS	5000	/* may run this much late (timer_set_slack) */
#define MSG_MAX		300

/* Latency buckets of the server calls, seconds. */
static const double buckets[] = { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
#define NBUCKETS	(sizeof(buckets) / sizeof(buckets[0]))

struct endpoint {
	char			 name[40];
	unsigned long long	 calls, errors;
	unsigned long long	 le[NBUCKETS];	/* cumulative at print time */
	double			 sum_sec;
};

static struct {
	time_t			 started;
	time_t			 last_ok[OPS_CALLS];
	time_t			 error_time;
	char			 error_what[32];
	char			 error_msg[MSG_MAX];
	char			 agent_status[32];
	unsigned long long	 builds[OPS_BUILD_EVENTS];
	unsigned long long	 upgrades_ok, upgrades_fail;
	struct endpoint		 ep[OPS_ENDPOINTS_MAX];
	size_t			 nep;
	int64_t			 written;	/* mono ms of the last write */
	struct timer		 write_timer;
	struct timer		 disk_timer;
	/* disk guard */
	int			 disk_low;
	char			 disk_why[200];
	unsigned long long	 disk_free;	/* bytes */
	double			 disk_inodes_pct;	/* free inodes, % (-1 unknown) */
} O;

static const char *call_names[OPS_CALLS] = { "startup", "heartbeat", "ask" };

/* The endpoint entry of path's last segment ("other" once the table is full). */
static struct endpoint *
endpoint_of(const char *path)
{
	const char *name = strrchr(path, '/');
	size_t i;

	name = name != NULL ? name + 1 : path;
	for (i = 0; i < O.nep; i++)
		if (strncmp(O.ep[i].name, name, sizeof(O.ep[i].name) - 1) == 0)
			return &O.ep[i];
	if (O.nep == OPS_ENDPOINTS_MAX - 1)
		name = "other";
	if (O.nep == OPS_ENDPOINTS_MAX)
		return &O.ep[OPS_ENDPOINTS_MAX - 1];
	/* Only [A-Za-z0-9_] reach a label value. */
	snprintf(O.ep[O.nep].name, sizeof(O.ep[O.nep].name), "%s", name);
	for (char *p = O.ep[O.nep].name; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9')))
			*p = '_';
	return &O.ep[O.nep++];
}

/* HTTP observer (http.h): count the call, its latency and its error. */
static void
observe(const char *path, const struct http_result *r)
{
	struct endpoint *e = endpoint_of(path);
	double sec = (double)r->elapsed_ms / 1000.0;
	size_t i;

	e->calls++;
	if (!r->ok || r->code >= 400)
		e->errors++;
	e->sum_sec += sec;
	for (i = 0; i < NBUCKETS; i++)
		if (sec <= buckets[i]) {
			e->le[i]++;
			break;
		}
}

/* Mode name of the agent. */
static const char *
mode_name(void)
{
	switch (A.mode) {
	case MODE_RUN: return "run";
	case MODE_DRAIN: return "drain";
	case MODE_UNINSTALL: return "uninstall";
	case MODE_STOP: return "stop";
	}
	return "?";
}

/* A unix time as a JSON number, or null when 0. */
static void
add_time(cJSON *o, const char *key, time_t t)
{
	if (t == 0)
		cJSON_AddNullToObject(o, key);
	else
		cJSON_AddNumberToObject(o, key, (double)t);
}

/* The state object written to the state file. New object. */
static cJSON *
state_json(void)
{
	cJSON *o = cJSON_CreateObject(), *last, *err, *arr, *disk;
	const char *gate = build_gate();
	struct build *b;
	time_t now = time(NULL);
	int outbox = 0, i;

	cJSON_AddNumberToObject(o, "pid", (double)getpid());
	json_add_str(o, "version", AGENT_VERSION);
	add_time(o, "started", O.started);
	add_time(o, "written", now);
	json_add_str(o, "mode", mode_name());
	json_add_str(o, "poll", poll_mode() == POLL_ASK ? "ask" : "legacy");
	json_add_str(o, "processTree", tree_mechanism());
	cJSON_AddBoolToObject(o, "startupAcknowledged", A.started);
	last = cJSON_AddObjectToObject(o, "lastSuccess");
	for (i = 0; i < OPS_CALLS; i++)
		add_time(last, call_names[i], O.last_ok[i]);
	if (O.error_time != 0) {
		err = cJSON_AddObjectToObject(o, "lastError");
		add_time(err, "time", O.error_time);
		json_add_str(err, "what", O.error_what);
		json_add_str(err, "message", O.error_msg);
	} else {
		cJSON_AddNullToObject(o, "lastError");
	}
	if (O.agent_status[0] != '\0')
		json_add_str(o, "agentStatus", O.agent_status);
	else
		cJSON_AddNullToObject(o, "agentStatus");
	if (gate != NULL)
		json_add_str(o, "notClaiming", gate);
	else
		cJSON_AddNullToObject(o, "notClaiming");
	arr = cJSON_AddArrayToObject(o, "builds");
	for (b = build_first(); b != NULL; b = b->next) {
		cJSON *t;
		if (b->state == B_FINISHED) {
			outbox++;
			continue;
		}
		t = cJSON_CreateObject();
		json_add_str(t, "buildId", b->build_id);
		json_add_str(t, "vmSeqId", b->vm_seq_id);
		json_add_str(t, "projectId", b->project_id);
		json_add_str(t, "state", b->state == B_RUNNING ? "running" : "claimed");
		cJSON_AddNumberToObject(t, "pid", (double)b->pid);
		cJSON_AddNumberToObject(t, "started", (double)b->claimed_at);
		cJSON_AddItemToArray(arr, t);
	}
	cJSON_AddNumberToObject(o, "outbox", outbox);
	cJSON_AddNumberToObject(o, "deadLetters",
	    (double)O.builds[OPS_DEAD_LETTER]);
	disk = cJSON_AddObjectToObject(o, "diskGuard");
	cJSON_AddBoolToObject(disk, "low", O.disk_low);
	if (O.disk_low)
		json_add_str(disk, "reason", O.disk_why);
	cJSON_AddNumberToObject(disk, "freeBytes", (double)O.disk_free);
	cJSON_AddNumberToObject(disk, "freeInodesPercent", O.disk_inodes_pct);
	return o;
}

/*
 * Write the state file (atomic rename, mode 0644: it holds no secret). No
 * fsync: the file is rewritten at least every 10 s, and the fsyncs of each
 * write were most of the idle agent's wakeups (bench/idle_cost.py).
 */
static void
state_write(void *arg)
{
	cJSON *o = state_json();
	char *text = cJSON_PrintUnformatted(o);

	(void)arg;
	cJSON_Delete(o);
	if (text == NULL)
		return;
	if (fs_write_replace(OPS_STATE_FILE, text, strlen(text), 0644) == -1)
		log_debug("cannot write %s: %s", OPS_STATE_FILE, strerror(errno));
	free(text);
	O.written = mono_ms();
	/* idle cost: the refresh rides on the next wakeup (an ask every 5 s) */
	timer_set_slack(&O.write_timer, A.fast ? 0 : REFRESH_SLACK_MS);
	timer_set(&O.write_timer, REFRESH_MS);
}

/* Rewrite soon, at most once a second (ops.h). */
void
ops_dirty(void)
{
	int64_t due = O.written + WRITE_MIN_MS - mono_ms();

	if (O.started == 0)
		return;
	if (O.write_timer.slack == 0 && timer_remaining(&O.write_timer) >= 0 &&
	    timer_remaining(&O.write_timer) <= (due < 0 ? 0 : due))
		return;		/* a write on time is already due soon enough */
	timer_set_slack(&O.write_timer, 0);
	timer_set(&O.write_timer, due < 0 ? 0 : due);
}

/* Write now (ops.h). */
void
ops_write_now(void)
{
	if (O.started != 0)
		state_write(NULL);
}

/*
 * Record a success (ops.h). The first one, and one after an error, are
 * written soon; later ones only move a timestamp, which the 10 s refresh
 * carries: an ask every 5 s rewriting the file was the idle agent's main
 * disk work.
 */
void
ops_note_ok(enum ops_call c)
{
	time_t prev = O.last_ok[c];

	O.last_ok[c] = time(NULL);
	if (prev == 0 || O.error_time >= prev)
		ops_dirty();
}

/* Record an error (ops.h). */
void
ops_note_error(const char *what, const char *msg)
{
	O.error_time = time(NULL);
	snprintf(O.error_what, sizeof(O.error_what), "%s", what);
	snprintf(O.error_msg, sizeof(O.error_msg), "%s", msg ? msg : "");
	ops_dirty();
}

/* Record the server's agentStatus (ops.h). */
void
ops_note_agent_status(const char *status)
{
	if (status == NULL || strncmp(O.agent_status, status,
	    sizeof(O.agent_status) - 1) == 0)
		return;		/* every answer carries it: only a change writes */
	snprintf(O.agent_status, sizeof(O.agent_status), "%s", status);
	ops_dirty();
}

/* Count a build event (ops.h). */
void
ops_note_build(enum ops_build_event e)
{
	O.builds[e]++;
	ops_dirty();
}

/* Count an upgrade (ops.h). */
void
ops_note_upgrade(int success)
{
	if (success)
		O.upgrades_ok++;
	else
		O.upgrades_fail++;
	ops_dirty();
}

/* ---------------------------------------------------------------- disk */

/* Check the install dir's file system against the thresholds. */
static void
disk_check(void *arg)
{
	struct statvfs sv;
	unsigned long long min = (unsigned long long)
	    (A.cfg.disk_min_free_mb > 0 ? A.cfg.disk_min_free_mb : 0) * 1024 * 1024;
	int pct = A.cfg.disk_min_inodes_pct, low = 0;
	char why[200] = "";

	(void)arg;
	timer_set(&O.disk_timer, A.fast ? 1000 : DISK_EVERY_MS);
	if (statvfs(A.workdir, &sv) == -1) {
		log_debug("disk guard: statvfs %s: %s", A.workdir, strerror(errno));
		return;
	}
	O.disk_free = (unsigned long long)sv.f_bavail * sv.f_frsize;
	O.disk_inodes_pct = sv.f_files > 0 ?
	    (double)sv.f_favail * 100.0 / (double)sv.f_files : -1;
	if (min > 0 && O.disk_free < min) {
		low = 1;
		snprintf(why, sizeof(why), "disk guard: %llu MiB free on the "
		    "install dir's file system, below "
		    "devops.agent.disk.min.free.mb=%lld", O.disk_free >> 20,
		    A.cfg.disk_min_free_mb);
	} else if (pct > 0 && sv.f_files > 0 && O.disk_inodes_pct < pct) {
		low = 1;
		snprintf(why, sizeof(why), "disk guard: %.1f %% of the inodes "
		    "free on the install dir's file system, below "
		    "devops.agent.disk.min.inodes.percent=%d", O.disk_inodes_pct,
		    pct);
	}
	if (low && !O.disk_low) {
		snprintf(O.disk_why, sizeof(O.disk_why), "%s", why);
		O.disk_low = 1;
		log_warnx("%s; not claiming builds; running the cleanup now", why);
		cleanup_now();
		ops_dirty();
	} else if (!low && O.disk_low) {
		O.disk_low = 0;
		O.disk_why[0] = '\0';
		log_info("disk guard: %llu MiB and %.1f %% of the inodes free "
		    "again; claiming builds again", O.disk_free >> 20,
		    O.disk_inodes_pct);
		ops_dirty();
		poll_kick();
	}
}

/* Why the disk guard stops claims, or NULL (ops.h). */
const char *
ops_disk_gate(void)
{
	return O.disk_low ? O.disk_why : NULL;
}

/* ---------------------------------------------------------------- prometheus */

/* Append to a growing string. */
static void
sb_add(char **s, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Append formatted text to *s. */
static void
sb_add(char **s, size_t *len, size_t *cap, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(*s + *len, *cap - *len, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if ((size_t)n < *cap - *len) {
			*len += (size_t)n;
			return;
		}
		*cap = *cap * 2 + (size_t)n;
		*s = xrealloc(*s, *cap);
	}
}

/* This process's RSS (bytes) and open fds; -1 when unknown. */
static void
self_usage(long long *rss, long long *fds)
{
	char *text = NULL, *end;
	long long res;
	struct dirent *e;
	DIR *d;

	*rss = *fds = -1;
	/* statm: "<size> <resident> ..." in pages. */
	if (fs_read_regular("/proc/self/statm", 256, &text, NULL) == 0) {
		(void)strtoll(text, &end, 10);
		res = strtoll(end, NULL, 10);
		if (res > 0)
			*rss = res * sysconf(_SC_PAGESIZE);
		free(text);
	}
	if ((d = opendir("/proc/self/fd")) != NULL) {
		*fds = 0;
		while ((e = readdir(d)) != NULL)
			if (e->d_name[0] != '.')
				(*fds)++;
		(void)closedir(d);
		(*fds)--;	/* the directory's own fd */
	}
}

/* The exposition text (ops.h). */
char *
ops_prom_text(void)
{
	size_t len = 0, cap = 8192, i, j;
	char *s = xmalloc(cap);
	long long rss, fds;
	struct build *b;
	int running = 0, claimed = 0, outbox = 0;

	s[0] = '\0';
	for (b = build_first(); b != NULL; b = b->next) {
		if (b->state == B_RUNNING)
			running++;
		else if (b->state == B_CLAIMED)
			claimed++;
		else
			outbox++;
	}
#define H(name, type, help) sb_add(&s, &len, &cap, \
	"# HELP " name " " help "\n# TYPE " name " " type "\n")
	H("devops_agent_info", "gauge", "Version of the agent (value 1).");
	sb_add(&s, &len, &cap, "devops_agent_info{version=\"%s\"} 1\n",
	    AGENT_VERSION);
	H("devops_agent_builds_running", "gauge", "Builds whose worker runs.");
	sb_add(&s, &len, &cap, "devops_agent_builds_running %d\n", running);
	H("devops_agent_builds_waiting", "gauge",
	    "Builds claimed whose worker has not started.");
	sb_add(&s, &len, &cap, "devops_agent_builds_waiting %d\n", claimed);
	H("devops_agent_builds_claimed_total", "counter",
	    "Builds handed to this agent by the server.");
	sb_add(&s, &len, &cap, "devops_agent_builds_claimed_total %llu\n",
	    O.builds[OPS_CLAIMED]);
	H("devops_agent_builds_finished_total", "counter",
	    "Builds finished, by outcome.");
	sb_add(&s, &len, &cap, "devops_agent_builds_finished_total{outcome="
	    "\"success\"} %llu\n", O.builds[OPS_FINISHED_OK]);
	sb_add(&s, &len, &cap, "devops_agent_builds_finished_total{outcome="
	    "\"failure\"} %llu\n", O.builds[OPS_FINISHED_FAIL]);
	H("devops_agent_finish_reports_pending", "gauge",
	    "Finish reports not yet acknowledged by the server.");
	sb_add(&s, &len, &cap, "devops_agent_finish_reports_pending %d\n", outbox);
	H("devops_agent_finish_report_retries_total", "counter",
	    "Finish reports that failed and were retried.");
	sb_add(&s, &len, &cap, "devops_agent_finish_report_retries_total %llu\n",
	    O.builds[OPS_REPORT_RETRY]);
	H("devops_agent_finish_report_dead_letters_total", "counter",
	    "Finish reports given up.");
	sb_add(&s, &len, &cap, "devops_agent_finish_report_dead_letters_total "
	    "%llu\n", O.builds[OPS_DEAD_LETTER]);
	H("devops_agent_server_requests_total", "counter",
	    "Calls to the server, by endpoint.");
	for (i = 0; i < O.nep; i++)
		sb_add(&s, &len, &cap, "devops_agent_server_requests_total"
		    "{endpoint=\"%s\"} %llu\n", O.ep[i].name, O.ep[i].calls);
	H("devops_agent_server_errors_total", "counter",
	    "Calls to the server without an answer or with HTTP >= 400, by "
	    "endpoint.");
	for (i = 0; i < O.nep; i++)
		sb_add(&s, &len, &cap, "devops_agent_server_errors_total"
		    "{endpoint=\"%s\"} %llu\n", O.ep[i].name, O.ep[i].errors);
	H("devops_agent_server_request_seconds", "histogram",
	    "Duration of the calls to the server, by endpoint.");
	for (i = 0; i < O.nep; i++) {
		unsigned long long cum = 0;
		for (j = 0; j < NBUCKETS; j++) {
			cum += O.ep[i].le[j];
			sb_add(&s, &len, &cap, "devops_agent_server_request_seconds"
			    "_bucket{endpoint=\"%s\",le=\"%g\"} %llu\n",
			    O.ep[i].name, buckets[j], cum);
		}
		sb_add(&s, &len, &cap, "devops_agent_server_request_seconds_bucket"
		    "{endpoint=\"%s\",le=\"+Inf\"} %llu\n", O.ep[i].name,
		    O.ep[i].calls);
		sb_add(&s, &len, &cap, "devops_agent_server_request_seconds_sum"
		    "{endpoint=\"%s\"} %.3f\n", O.ep[i].name, O.ep[i].sum_sec);
		sb_add(&s, &len, &cap, "devops_agent_server_request_seconds_count"
		    "{endpoint=\"%s\"} %llu\n", O.ep[i].name, O.ep[i].calls);
	}
	H("devops_agent_last_success_timestamp_seconds", "gauge",
	    "Unix time of the last successful startup, heartbeat or ask (0: "
	    "none yet).");
	for (i = 0; i < OPS_CALLS; i++)
		sb_add(&s, &len, &cap, "devops_agent_last_success_timestamp_seconds"
		    "{call=\"%s\"} %lld\n", call_names[i], (long long)O.last_ok[i]);
	H("devops_agent_upgrades_total", "counter", "Upgrade attempts, by outcome.");
	sb_add(&s, &len, &cap, "devops_agent_upgrades_total{outcome=\"success\"} "
	    "%llu\n", O.upgrades_ok);
	sb_add(&s, &len, &cap, "devops_agent_upgrades_total{outcome=\"failure\"} "
	    "%llu\n", O.upgrades_fail);
	H("devops_agent_disk_low", "gauge",
	    "1 while the disk guard stops claiming builds.");
	sb_add(&s, &len, &cap, "devops_agent_disk_low %d\n", O.disk_low);
	self_usage(&rss, &fds);
	H("devops_agent_resident_memory_bytes", "gauge",
	    "Resident set size of the agent process.");
	sb_add(&s, &len, &cap, "devops_agent_resident_memory_bytes %lld\n", rss);
	H("devops_agent_open_fds", "gauge", "Open file descriptors of the agent.");
	sb_add(&s, &len, &cap, "devops_agent_open_fds %lld\n", fds);
#undef H
	return s;
}

/* ---------------------------------------------------------------- start */

/* Start the operator side (ops.h). */
void
ops_start(void)
{
	O.started = time(NULL);
	O.disk_inodes_pct = -1;
	http_set_observer(observe);
	(void)fs_mkdir_p("runtime", 0755);
	timer_init(&O.write_timer, "status-file", state_write, NULL);
	timer_init(&O.disk_timer, "disk-guard", disk_check, NULL);
	/* idle cost: the check rides on the next wakeup (an ask every 5 s) */
	timer_set_slack(&O.disk_timer, A.fast ? 0 : DISK_SLACK_MS);
	disk_check(NULL);
	timer_set(&O.write_timer, 0);
	if (A.cfg.metrics_listen != NULL && *A.cfg.metrics_listen != '\0')
		(void)prom_start(A.cfg.metrics_listen, A.cfg.metrics_remote);
}
