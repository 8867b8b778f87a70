/*
 * taskstore.c - the executor's on-disk task state (executor.h,
 * executor_int.h): task ids and paths that never leave the workspace, the
 * task dir's result.json with its done and reported flags, output.env
 * params, loading a result, recovery after a restart and pruning.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "child.h"
#include "envlist.h"
#include "ev.h"
#include "executor.h"
#include "executor_int.h"
#include "fsutil.h"
#include "json.h"
#include "log.h"
#include "proc.h"
#include "util.h"

/* Wire name of a status (protocol §7.10 values). */
const char *
exec_status_name(enum exec_status s)
{
	switch (s) {
	case EXEC_SUCCESS:
		return "SUCCESS";
	case EXEC_FAILURE:
		return "FAILURE";
	case EXEC_TIMEOUT:
		return "TIMEOUT";
	case EXEC_KILLED:
		return "KILLED";
	default:
		return "RUNNING";
	}
}

/* Inverse of exec_status_name; -1 when unknown. */
static int
status_parse(const char *s)
{
	static const enum exec_status all[] = { EXEC_RUNNING, EXEC_SUCCESS,
	    EXEC_FAILURE, EXEC_TIMEOUT, EXEC_KILLED };
	size_t i;

	for (i = 0; s != NULL && i < nitems(all); i++)
		if (strcmp(s, exec_status_name(all[i])) == 0)
			return (int)all[i];
	return -1;
}

/* A task id is one safe path component. */
int
exec_id_valid(const char *id)
{
	size_t i, n;

	if (id == NULL || (n = strlen(id)) == 0 || n > EXEC_ID_MAX ||
	    strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
		return 0;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)id[i]) && id[i] != '.' &&
		    id[i] != '_' && id[i] != '-')
			return 0;
	return 1;
}

/*
 * Read a regular file without following a symlink in its last component
 * (a task may plant "output.env -> /etc/shadow"; the agent often runs as
 * root). At most max bytes are read: *truncated says whether more existed.
 * New NUL-terminated buffer in *out. 0, or -1/errno (ENOENT, ELOOP, EINVAL
 * for a non-regular file).
 */
static int
read_nofollow(const char *path, size_t max, off_t from_end, char **out,
    size_t *len, int *truncated)
{
	struct stat st;
	size_t n = 0, want;
	off_t off = 0;
	char *buf;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

	*out = NULL;
	if (fd == -1)
		return -1;
	if (fstat(fd, &st) == -1) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	want = (size_t)st.st_size < max ? (size_t)st.st_size : max;
	if (truncated != NULL)
		*truncated = (size_t)st.st_size > max;
	if (from_end && (size_t)st.st_size > max)
		off = st.st_size - (off_t)max;
	buf = xmalloc(want + 1);
	while (n < want) {
		ssize_t r = pread(fd, buf + n, want - n, off + (off_t)n);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	*out = buf;
	if (len != NULL)
		*len = n;
	return 0;
}

/* 1 when path (a real path) is root or below it. */
int
taskstore_path_under(const char *root, const char *path)
{
	size_t n = strlen(root);

	if (strcmp(root, "/") == 0)
		return path[0] == '/';
	return strncmp(path, root, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Resolve rel under root; refuse "..", absolute paths and symlinks out. */
int
exec_resolve(const char *root, const char *rel, char *out, size_t outlen,
    char *err, size_t errlen)
{
	char norm[PATH_MAX], probe[PATH_MAX], real[PATH_MAX];
	size_t rl = strlen(root), nl;
	const char *p = rel;

	if (rel == NULL || *rel == '\0' || rel[0] == '/') {
		snprintf(err, errlen, "path '%s' is %s", rel ? rel : "",
		    rel && *rel ? "absolute" : "empty");
		errno = EINVAL;
		return -1;
	}
	if (rl >= sizeof(norm)) {
		snprintf(err, errlen, "workspace path too long");
		errno = ENAMETOOLONG;
		return -1;
	}
	/* Lexical pass: drop "." and "", apply "..", never above root. */
	memcpy(norm, root, rl + 1);
	nl = strcmp(root, "/") == 0 ? 0 : rl;
	norm[nl] = '\0';
	while (*p != '\0') {
		size_t cl = strcspn(p, "/");
		if ((cl == 1 && p[0] == '.') || cl == 0) {
			/* nothing */
		} else if (cl == 2 && p[0] == '.' && p[1] == '.') {
			char *slash = strrchr(norm, '/');
			if (nl <= (strcmp(root, "/") == 0 ? 0 : rl) || slash == NULL) {
				snprintf(err, errlen, "path '%s' leaves the workspace "
				    "(through '..')", rel);
				errno = EINVAL;
				return -1;
			}
			*slash = '\0';
			nl = (size_t)(slash - norm);
		} else {
			if (nl + 1 + cl >= sizeof(norm)) {
				snprintf(err, errlen, "path '%s' is too long", rel);
				errno = ENAMETOOLONG;
				return -1;
			}
			norm[nl++] = '/';
			memcpy(norm + nl, p, cl);
			nl += cl;
			norm[nl] = '\0';
		}
		p += cl;
		if (*p == '/')
			p++;
	}
	if (nl == 0)
		snprintf(norm, sizeof(norm), "/");
	/* Real pass: the deepest existing ancestor goes through realpath(). */
	memcpy(probe, norm, strlen(norm) + 1);
	for (;;) {
		char *slash;
		struct stat st;
		if (realpath(probe, real) != NULL)
			break;
		if (errno != ENOENT && errno != ENOTDIR) {
			snprintf(err, errlen, "path '%s': %s", rel, strerror(errno));
			return -1;
		}
		if (lstat(probe, &st) == 0) {
			/* It exists but does not resolve: a dangling symlink. */
			snprintf(err, errlen, "path '%s' leaves the workspace "
			    "(dangling symlink)", rel);
			errno = EINVAL;
			return -1;
		}
		slash = strrchr(probe, '/');
		if (slash == NULL || slash == probe) {
			snprintf(err, errlen, "path '%s': workspace missing", rel);
			errno = ENOENT;
			return -1;
		}
		*slash = '\0';
	}
	if (!taskstore_path_under(root, real)) {
		snprintf(err, errlen, "path '%s' leaves the workspace (through a "
		    "symlink to %s)", rel, real);
		errno = EINVAL;
		return -1;
	}
	if ((size_t)snprintf(out, outlen, "%s%s", strcmp(real, "/") == 0 ? "" : real,
	    norm + strlen(probe)) >= outlen) {
		snprintf(err, errlen, "path '%s' is too long", rel);
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* output.env lines into a JSON object of strings. */
int
exec_parse_env(const char *text, cJSON **out)
{
	char *copy = xstrdup(text), *line, *next;
	int bad = 0, n = 0;

	*out = cJSON_CreateObject();
	for (line = copy; line != NULL; line = next) {
		char *eq, *key, *val;
		size_t i, vl;
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		key = str_trim(line);
		if (*key == '\0' || *key == '#')
			continue;
		if (str_starts(key, "export ") || str_starts(key, "export\t")) {
			key += 7;
			while (*key == ' ' || *key == '\t')
				key++;
		}
		if ((eq = strchr(key, '=')) == NULL) {
			bad++;
			continue;
		}
		*eq = '\0';
		val = str_trim(eq + 1);
		str_trim(key);
		for (i = 0; key[i]; i++)
			if (!(isalpha((unsigned char)key[i]) || key[i] == '_' ||
			    (i > 0 && isdigit((unsigned char)key[i]))))
				break;
		if (i == 0 || key[i] != '\0') {
			bad++;
			continue;
		}
		vl = strlen(val);
		if (vl >= 2 && (val[0] == '"' || val[0] == '\'') && val[vl - 1] == val[0]) {
			val[vl - 1] = '\0';
			val++;
		}
		if (cJSON_GetObjectItemCaseSensitive(*out, key) != NULL) {
			cJSON_ReplaceItemInObjectCaseSensitive(*out, key,
			    cJSON_CreateString(val));
		} else if (n < EXEC_PARAMS_MAX) {
			cJSON_AddStringToObject(*out, key, val);
			n++;
		} else {
			bad++;
		}
	}
	free(copy);
	return bad;
}

/* Free a result and everything it owns. */
void
exec_result_free(struct exec_result *r)
{
	if (r == NULL)
		return;
	free(r->id);
	free(r->tag);
	free(r->output);
	free(r->error);
	cJSON_Delete(r->params);
	free(r);
}

/* Serialise r (plus the leader's identity while running). New string. */
static char *
result_json(const struct exec_result *r, pid_t pid, unsigned long long pstart)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	json_add_str(o, "id", r->id);
	json_add_str(o, "tag", r->tag ? r->tag : "");
	json_add_str(o, "status", exec_status_name(r->status));
	cJSON_AddBoolToObject(o, "done", r->done);
	cJSON_AddBoolToObject(o, "reported", r->reported);
	cJSON_AddNumberToObject(o, "exitCode", r->exit_code);
	cJSON_AddNumberToObject(o, "signal", r->term_signal);
	cJSON_AddNumberToObject(o, "start", (double)r->start_ms);
	cJSON_AddNumberToObject(o, "end", (double)r->end_ms);
	cJSON_AddNumberToObject(o, "durationMs", (double)r->duration_ms);
	cJSON_AddNumberToObject(o, "outputBytes", (double)r->output_bytes);
	json_add_str(o, "output", r->output ? r->output : "");
	json_add_str(o, "error", r->error ? r->error : "");
	cJSON_AddItemToObject(o, "params", r->params ?
	    cJSON_Duplicate(r->params, 1) : cJSON_CreateObject());
	cJSON_AddNumberToObject(o, "pid", pid);
	cJSON_AddNumberToObject(o, "procStart", (double)pstart);
	s = cJSON_Print(o);
	if (s == NULL)
		fatalx("executor: out of memory");
	cJSON_Delete(o);
	return s;
}

/* Atomically write dir/result.json. 0, or -1 (logged). */
int
taskstore_result_write(const char *dir, const struct exec_result *r, pid_t pid,
    unsigned long long pstart)
{
	char *path = xasprintf("%s/" RESULT_FILE, dir), *text = result_json(r, pid, pstart);
	int rc = fs_write_atomic(path, text, strlen(text), 0644);

	if (rc == -1)
		log_warn("task %s: cannot write %s", r->id, path);
	free(text);
	free(path);
	return rc;
}

/*
 * Read dir/result.json into a new result (*out) and the leader identity.
 * 1 on success, 0 when the file does not exist, -1 when unreadable/corrupt.
 */
static int
result_read(const char *dir, struct exec_result **out, long long *pid,
    long long *pstart)
{
	char *path = xasprintf("%s/" RESULT_FILE, dir), *text = NULL, *status = NULL;
	struct exec_result *r;
	const cJSON *params = NULL;
	long long start = 0, end = 0, dur = 0;
	cJSON *j;
	int st = -1;

	*out = NULL;
	if (read_nofollow(path, RESULT_MAX, 0, &text, NULL, NULL) == -1) {
		int saved = errno;
		free(path);
		errno = saved;
		return saved == ENOENT ? 0 : -1;
	}
	free(path);
	j = cJSON_Parse(text);
	free(text);
	r = xcalloc(1, sizeof(*r));
	*pid = *pstart = 0;
	if (j == NULL || !cJSON_IsObject(j) ||
	    json_get_str(j, "id", &r->id) == -1 || r->id == NULL ||
	    json_get_str(j, "tag", &r->tag) == -1 ||
	    json_get_str(j, "status", &status) == -1 ||
	    (st = status_parse(status)) == -1 ||
	    json_get_bool(j, "done", &r->done) == -1 ||
	    json_get_bool(j, "reported", &r->reported) == -1 ||
	    json_get_int(j, "exitCode", &r->exit_code, NULL) == -1 ||
	    json_get_int(j, "signal", &r->term_signal, NULL) == -1 ||
	    json_get_ll(j, "start", &start, NULL) == -1 ||
	    json_get_ll(j, "end", &end, NULL) == -1 ||
	    json_get_ll(j, "durationMs", &dur, NULL) == -1 ||
	    json_get_ll(j, "outputBytes", &r->output_bytes, NULL) == -1 ||
	    json_get_str(j, "output", &r->output) == -1 ||
	    json_get_str(j, "error", &r->error) == -1 ||
	    json_get_obj(j, "params", &params) == -1 ||
	    json_get_ll(j, "pid", pid, NULL) == -1 ||
	    json_get_ll(j, "procStart", pstart, NULL) == -1) {
		free(status);
		cJSON_Delete(j);
		exec_result_free(r);
		errno = EINVAL;
		return -1;
	}
	r->start_ms = start;
	r->end_ms = end;
	r->duration_ms = dur;
	r->status = (enum exec_status)st;
	if (r->tag == NULL)
		r->tag = xstrdup("");
	if (r->output == NULL)
		r->output = xstrdup("");
	if (r->error == NULL)
		r->error = xstrdup("");
	r->params = params ? cJSON_Duplicate(params, 1) : cJSON_CreateObject();
	free(status);
	cJSON_Delete(j);
	*out = r;
	return 1;
}

/* Read <workdir>/output.env into params (an empty object when absent). */
cJSON *
taskstore_read_params(const char *id, const char *workdir)
{
	char *path = xasprintf("%s/" ENV_FILE, workdir), *text = NULL;
	cJSON *params = NULL;
	int truncated = 0, bad;

	if (read_nofollow(path, EXEC_ENV_FILE_MAX, 0, &text, NULL, &truncated) == -1) {
		if (errno != ENOENT)
			log_warn("task %s: %s ignored", id, path);
		free(path);
		return cJSON_CreateObject();
	}
	if (truncated)
		log_warnx("task %s: %s is larger than %zu bytes; only the start is "
		    "read", id, path, EXEC_ENV_FILE_MAX);
	bad = exec_parse_env(text, &params);
	if (bad > 0)
		log_warnx("task %s: %s: %d malformed line(s) skipped", id, path, bad);
	free(text);
	free(path);
	return params;
}

/* The persisted final result of task id, if any. */
int
exec_load(struct executor *e, const char *id, struct exec_result **out)
{
	char *dir;
	long long pid, pstart;
	int rc;

	*out = NULL;
	if (!exec_id_valid(id)) {
		errno = EINVAL;
		return -1;
	}
	dir = xasprintf("%s/%s", e->td, id);
	rc = result_read(dir, out, &pid, &pstart);
	free(dir);
	if (rc == 1 && !(*out)->done) {
		exec_result_free(*out);
		*out = NULL;
		return 0;
	}
	return rc;
}

/* Set the reported flag of a done task (seed 000 done flags). */
int
exec_mark_reported(struct executor *e, const char *id)
{
	struct exec_result *r;
	char *dir;
	long long pid, pstart;
	int rc;

	if (!exec_id_valid(id)) {
		errno = EINVAL;
		return -1;
	}
	dir = xasprintf("%s/%s", e->td, id);
	rc = result_read(dir, &r, &pid, &pstart);
	if (rc != 1) {
		if (rc == 0)
			errno = ENOENT;
		free(dir);
		return -1;
	}
	r->reported = 1;
	rc = taskstore_result_write(dir, r, 0, 0);
	exec_result_free(r);
	free(dir);
	return rc;
}

/* A task that was running when the previous agent stopped: end it now. */
static void
recover_interrupted(struct executor *e, const char *dir, struct exec_result *r,
    long long pid, long long pstart)
{
	char *path = xasprintf("%s/" LOG_FILE, dir), *tail = NULL, *wd = NULL;
	char *task_path = xasprintf("%s/" TASK_FILE, dir), *tj = NULL;
	size_t len = 0;
	struct stat st;
	cJSON *j;

	(void)e;
	if (pid > 0 && proc_same((pid_t)pid, (unsigned long long)pstart)) {
		log_warnx("task %s: still running from before the restart "
		    "(pid %lld) without a reader for its output; killing it",
		    r->id, pid);
		(void)kill(-(pid_t)pid, SIGKILL);
		(void)kill((pid_t)pid, SIGKILL);
	}
	r->status = EXEC_FAILURE;
	r->exit_code = -1;
	free(r->error);
	r->error = xstrdup("interrupted: the agent stopped while the task ran");
	if (read_nofollow(path, EXEC_TAIL_MAX, 1, &tail, &len, NULL) == 0) {
		free(r->output);
		r->output = output_utf8_clean(tail, len, 1);
		if (stat(path, &st) == 0)
			r->output_bytes = (long long)st.st_size;
		free(tail);
	}
	/* The task may have written output.env before it was interrupted. */
	if (read_nofollow(task_path, RESULT_MAX, 0, &tj, NULL, NULL) == 0 &&
	    (j = cJSON_Parse(tj)) != NULL) {
		if (json_get_str(j, "workdir", &wd) == 0 && wd != NULL) {
			cJSON_Delete(r->params);
			r->params = taskstore_read_params(r->id, wd);
		}
		cJSON_Delete(j);
	}
	free(tj);
	free(wd);
	r->end_ms = wall_ms();
	r->duration_ms = r->end_ms - r->start_ms;
	r->done = 1;
	(void)taskstore_result_write(dir, r, 0, 0);
	free(path);
	free(task_path);
}

/* After a restart: hand out unreported results, end interrupted tasks. */
int
exec_recover(struct executor *e, const char *tag, exec_done_fn fn, void *arg)
{
	DIR *d = opendir(e->td);
	struct dirent *de;
	int n = 0;

	if (d == NULL) {
		log_warn("executor: cannot scan %s", e->td);
		return 0;
	}
	while ((de = readdir(d)) != NULL) {
		struct exec_result *r;
		long long pid, pstart;
		char *dir;
		int rc;

		if (!exec_id_valid(de->d_name) || exec_is_running(e, de->d_name))
			continue;
		dir = xasprintf("%s/%s", e->td, de->d_name);
		rc = result_read(dir, &r, &pid, &pstart);
		if (rc == -1)
			log_warn("executor: %s/" RESULT_FILE " unreadable; skipped", dir);
		if (rc != 1 || (tag != NULL && strcmp(r->tag, tag) != 0) ||
		    strcmp(r->id, de->d_name) != 0 || (r->done && r->reported)) {
			if (rc == 1)
				exec_result_free(r);
			free(dir);
			continue;
		}
		if (!r->done)
			recover_interrupted(e, dir, r, pid, pstart);
		else
			log_info("task %s: %s result not reported yet", r->id,
			    exec_status_name(r->status));
		free(dir);
		n++;
		fn(r, arg);
	}
	closedir(d);
	return n;
}

/* Remove old, reported task dirs (the cleanup loop, §9). */
int
exec_prune(struct executor *e, long long max_age_sec)
{
	DIR *d = opendir(e->td);
	struct dirent *de;
	int n = 0;

	if (d == NULL) {
		if (errno != ENOENT)
			log_warn("executor: cannot scan %s", e->td);
		return 0;
	}
	while ((de = readdir(d)) != NULL) {
		struct exec_result *r = NULL;
		long long pid, pstart, age = -1;
		char *dir, *res_path, *task_path;
		int rc;

		if (!exec_id_valid(de->d_name) || exec_is_running(e, de->d_name))
			continue;
		dir = xasprintf("%s/%s", e->td, de->d_name);
		res_path = xasprintf("%s/" RESULT_FILE, dir);
		task_path = xasprintf("%s/" TASK_FILE, dir);
		if (!fs_is_dir(dir) || fs_is_file(task_path) != 1) {
			/* Not a task dir of ours: never touched. */
		} else if ((rc = result_read(dir, &r, &pid, &pstart)) == 1) {
			if (r->done && r->reported)
				age = fs_age_sec(res_path);
		} else if (rc == 0) {
			age = fs_age_sec(task_path);	/* never started */
		} else {
			log_warn("cleanup: %s unreadable; kept", res_path);
		}
		if (age > max_age_sec) {
			if (fs_rm_rf(dir) == -1)
				log_warn("cleanup: cannot remove %s", dir);
			else
				n++;
		}
		exec_result_free(r);
		free(dir);
		free(res_path);
		free(task_path);
	}
	closedir(d);
	return n;
}
