/*
 * journal.c - the build journal on disk: one JSON file per build in
 * runtime/builds/, rewritten atomically before each step of the build's life
 * cycle takes effect, and read back at start (docs/durability.md).
 *
 * This file knows the format and the files; what a recovered entry means
 * (watch the worker again, report it, fail it) is build.c's decision.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "build.h"
#include "fsutil.h"
#include "json.h"
#include "log.h"
#include "util.h"

#define JOURNAL_DIR	"runtime/builds"
#define JOURNAL_VERSION	1		/* "version" of the journal format */
#define JOURNAL_MAX	(1 << 20)	/* bytes; bigger files are corrupt */

static const char *state_names[] = { "claimed", "running", "finished" };

/* Atomically rewrite the journal entry of b. */
int
journal_write(struct build *b)
{
	cJSON *j = cJSON_CreateObject(), *res, *info, *dbi;
	char *text;
	int rc;

	cJSON_AddNumberToObject(j, "version", JOURNAL_VERSION);
	/*
	 * A registry credential is needed only for the pull, which a restarted
	 * agent never repeats: it is never written to disk (docs/docker.md).
	 */
	info = cJSON_Duplicate(b->info, 1);
	dbi = cJSON_GetObjectItemCaseSensitive(info, "dockerBuildInfo");
	if (cJSON_IsObject(dbi))
		cJSON_DeleteItemFromObjectCaseSensitive(dbi, "credential");
	cJSON_AddItemToObject(j, "build", info);
	json_add_str(j, "state", state_names[b->state]);
	cJSON_AddNumberToObject(j, "pid", b->pid);
	cJSON_AddNumberToObject(j, "startTime", (double)b->start_time);
	cJSON_AddNumberToObject(j, "pgid", b->pid);
	if (b->cgroup != NULL)
		json_add_str(j, "cgroup", b->cgroup);
	if (b->container != NULL)
		json_add_str(j, "container", b->container);
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

/* Delete the journal entry of an acknowledged (or abandoned) build. */
void
journal_remove(const struct build *b)
{
	if (unlink(b->journal) == -1 && errno != ENOENT)
		log_warn("build %s: cannot remove journal %s", b->key, b->journal);
}

/*
 * Journal path of a new build: runtime/builds/<key>.json, or <key>.<n>.json
 * when a re-run of the same job arrives while the report of the previous
 * run is still in the outbox (both must survive a restart).
 */
char *
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
	char *state = NULL, *cgroup = NULL, *msg = NULL, *container = NULL;
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
	} else if (json_get_str(j, "container", &container) == -1 ||
	    (container != NULL && (container[0] == '\0' ||
	    strspn(container, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789._-") != strlen(container)))) {
		snprintf(why, whylen, "bad container name");
	} else if (json_get_ll(j, "pid", &pid, &has_pid) == -1 ||
	    json_get_ll(j, "startTime", &start, NULL) == -1 || pid < 0 ||
	    start < 0 || (st == B_RUNNING && pid <= 1 && container == NULL)) {
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
		b->container = container;
		container = NULL;
		if (st == B_FINISHED) {
			b->success = ok;
			b->message = msg ? msg : xstrdup("");
			b->error_code = ok ? 0 : code;
			msg = NULL;
		}
	}
	free(state);
	free(cgroup);
	free(container);
	free(msg);
	cJSON_Delete(j);
	return b;
}

/* Read one journal file and hand its entry to recover (corrupt: set aside). */
static void
journal_read_one(const char *path, void (*recover)(struct build *))
{
	char *text = NULL, why[200];
	struct build *b;

	if (fs_read_file(path, JOURNAL_MAX, &text, NULL) == -1) {
		if (errno == EFBIG)
			journal_corrupt(path, "too large");
		else if (errno == EINVAL)
			journal_corrupt(path, "not a regular file");
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
	recover(b);
}

/* Load every journal entry and hand each to recover. */
void
journal_load(void (*recover)(struct build *))
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
		journal_read_one(path, recover);
		free(path);
	}
	closedir(d);
}
