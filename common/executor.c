/*
 * executor.c - the safe script executor (see executor.h for the contract and
 * docs/pipeline.md for the files). One struct task per running task; every
 * step runs from the event loop: the output pipe is an fd watcher, the exit
 * a child_watch callback, the timeout and the kill grace are timers.
 *
 * A task ends only when (1) its leader was reaped, (2) its output pipe hit
 * EOF and (3) no process of its session/process group is left: leftovers
 * get SIGTERM, then SIGKILL after the grace period (tmux's "finished only
 * when reaped and EOF", plus STYLE.md §5's whole-tree kill).
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
#include "fsutil.h"
#include "json.h"
#include "log.h"
#include "proc.h"
#include "util.h"

#define RESULT_FILE	"result.json"
#define TASK_FILE	"task.json"
#define LOG_FILE	"output.log"
#define DEBUG_FILE	"debug.sh"
#define ENV_FILE	"output.env"
#define RESULT_MAX	((size_t)1 << 20)	/* result.json read cap, bytes */
#define SCRIPT_MAX	((size_t)16 << 20) /* script/allow-list read cap */
#define READ_CHUNK	65536
#define READS_PER_TURN	16		/* then let the loop serve others */
#define KILL_POLL_MS	100		/* group check while waiting for TERM */
#define KILL_SETTLE_MS	300		/* after SIGKILL, before forcing EOF */
#define DRAIN_MS	1000		/* leader gone, pipe held open: wait */

enum kill_stage {
	K_NONE,		/* nothing sent */
	K_TERM,		/* SIGTERM sent; polling the group until the deadline */
	K_KILL,		/* SIGKILL sent; settling */
	K_DONE,		/* the group is gone (or was SIGKILLed) */
};

struct task {
	struct executor	*ex;
	char		*id;
	char		*tag;
	char		*dir;		/* real path of the task dir */
	char		*workdir;	/* real path of the cwd */
	char		*script;	/* what runs (for logs) */
	char		*user;		/* "" = the agent's user */
	int64_t		 timeout_ms;
	exec_done_fn	 fn;
	void		*arg;

	pid_t		 pid;		/* leader = process group = session */
	unsigned long long proc_start;	/* proc_start_time(pid) */
	int64_t		 start_ms;	/* wall clock */
	int		 out_fd;	/* pipe read end; -1 after EOF */
	int		 err_fd;	/* stderr pipe when split; -1 otherwise/after EOF */
	exec_output_fn	 out_fn;	/* live output hook, or NULL */
	void		*out_arg;
	int		 killed;	/* exec_kill */
	int		 paused;	/* exec_output_pause: pipes not watched */
	char		*cgroup;	/* the task's own cgroup, or NULL */
	int		 log_fd;	/* output.log; -1 when not writable */
	char		 ring[EXEC_TAIL_MAX];
	size_t		 ring_head, ring_len;
	long long	 total;

	int		 reaped;
	int		 wstatus;
	int		 timed_out;
	int		 stopping;	/* exec_shutdown */
	char		*start_error;	/* spawn failed */
	enum kill_stage	 kill;
	int64_t		 kill_deadline;	/* mono_ms */
	int		 drain_armed;
	int		 ended;

	struct timer	 timeout_timer;
	struct timer	 kill_timer;
	struct timer	 end_timer;	/* deliver a start failure from the loop */
	struct task	*next;
};

struct executor {
	char		*ws;		/* real path */
	char		*td;		/* real path of the task dirs' parent */
	const struct exec_tree *tree;	/* cgroup hooks or NULL */
	char		*allowlist;	/* NULL = no integrity check */
	int64_t		 grace_ms;
	struct task	*tasks;
};

static void task_maybe_end(struct task *t);

/* ------------------------------------------------------------ small helpers */

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

/*
 * Copy n bytes of p into a new string of valid UTF-8: invalid sequences and
 * NUL bytes become U+FFFD, as Go's json.Marshal does for the GoAgent's
 * response text. skip_partial drops continuation bytes at the start (the
 * tail of a truncated output may begin in the middle of a character).
 */
static char *
utf8_clean(const char *src, size_t n, int skip_partial)
{
	const unsigned char *p = (const unsigned char *)src;
	char *out = xmalloc(n * 3 + 1), *o = out;
	size_t i = 0;

	while (skip_partial && i < n && i < 3 && (p[i] & 0xC0) == 0x80)
		i++;
	while (i < n) {
		unsigned char c = p[i];
		size_t len = 0, k;
		unsigned int cp = 0, min = 0;

		if (c >= 0x01 && c < 0x80) {
			*o++ = (char)c;
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			len = 2; cp = c & 0x1F; min = 0x80;
		} else if (c >= 0xE0 && c <= 0xEF) {
			len = 3; cp = c & 0x0F; min = 0x800;
		} else if (c >= 0xF0 && c <= 0xF4) {
			len = 4; cp = c & 0x07; min = 0x10000;
		}
		for (k = 1; len > 0 && k < len; k++) {
			if (i + k >= n || (p[i + k] & 0xC0) != 0x80) {
				len = 0;
				break;
			}
			cp = (cp << 6) | (p[i + k] & 0x3F);
		}
		if (len == 0 || cp < min || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF)) {
			memcpy(o, "\xEF\xBF\xBD", 3);
			o += 3;
			i++;
			continue;
		}
		memcpy(o, p + i, len);
		o += len;
		i += len;
	}
	*o = '\0';
	return out;
}

/* sha256 through OpenSSL EVP, as lower-case hex. */
void
exec_sha256_hex(const void *data, size_t len, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0, i;

	if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32)
		fatalx("sha256: OpenSSL digest failed");
	for (i = 0; i < 32; i++)
		snprintf(hex + (size_t)i * 2, 3, "%02x", md[i]);
	hex[64] = '\0';
}

/* Integrity check against the allow-list file (fails closed). */
int
exec_allowed(const char *allowlist, const void *data, size_t len,
    char *err, size_t errlen)
{
	char hex[65], *text = NULL, *line, *next;
	int found = 0;

	exec_sha256_hex(data, len, hex);
	if (fs_read_file(allowlist, SCRIPT_MAX, &text, NULL) == -1) {
		snprintf(err, errlen, "script sha256 %s: allow-list %s unreadable "
		    "(%s): refusing to run", hex, allowlist, strerror(errno));
		return 0;
	}
	for (line = text; line != NULL && !found; line = next) {
		size_t k;
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		while (*line == ' ' || *line == '\t')
			line++;
		if (*line == '#')
			continue;
		for (k = 0; k < 64 && isxdigit((unsigned char)line[k]); k++)
			;
		if (k == 64 && (line[64] == '\0' || isspace((unsigned char)line[64])) &&
		    strncasecmp(line, hex, 64) == 0)
			found = 1;
	}
	free(text);
	if (!found)
		snprintf(err, errlen, "script sha256 %s is not in the allow-list %s",
		    hex, allowlist);
	return found;
}

/* 1 when path (a real path) is root or below it. */
static int
path_under(const char *root, const char *path)
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
	if (!path_under(root, real)) {
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

/* The §8 script file around an inline command. */
char *
exec_wrap_script(const char *command, const char *dir)
{
	char *copy = xstrdup(command), *line, *next, *q = shell_quote(dir), *out;
	size_t cap = strlen(command) + strlen(q) + 64, len = 0;
	int first = 1;

	out = xmalloc(cap);
	out[0] = '\0';
#define APPEND(s) do {							\
	size_t k_ = strlen(s);						\
	if (len + k_ + 2 > cap) {					\
		cap = (len + k_ + 2) * 2;				\
		out = xrealloc(out, cap);				\
	}								\
	memcpy(out + len, (s), k_);					\
	len += k_;							\
	out[len++] = '\n';						\
	out[len] = '\0';						\
} while (0)
	for (line = copy; line != NULL; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		if (first) {
			char *t = xstrdup(line), *cd = xasprintf("cd %s", q);
			first = 0;
			if (str_starts(str_trim(t), "#!")) {
				APPEND(t);
				APPEND("set -e");
				APPEND(cd);
			} else {
				APPEND("#!/bin/bash");
				APPEND("");
				APPEND("set -e");
				APPEND(cd);
				APPEND(line);
			}
			free(t);
			free(cd);
			continue;
		}
		APPEND(line);
	}
#undef APPEND
	free(copy);
	free(q);
	return out;
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

/* ------------------------------------------------------------ result.json */

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
static int
result_write(const char *dir, const struct exec_result *r, pid_t pid,
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

/* ------------------------------------------------------------ executor */

/* An executor over a (created, resolved) workspace. */
struct executor *
exec_new(const struct exec_config *c, char *err, size_t errlen)
{
	struct executor *e;
	char real[PATH_MAX];

	if (c->workspace == NULL || *c->workspace == '\0') {
		snprintf(err, errlen, "no workspace given");
		return NULL;
	}
	if (fs_mkdir_p(c->workspace, 0755) == -1 || realpath(c->workspace, real) == NULL) {
		snprintf(err, errlen, "workspace %s: %s", c->workspace, strerror(errno));
		return NULL;
	}
	e = xcalloc(1, sizeof(*e));
	e->ws = xstrdup(real);
	if (c->taskdir != NULL && *c->taskdir != '\0') {
		if (fs_mkdir_p(c->taskdir, 0755) == -1 || realpath(c->taskdir, real) == NULL) {
			snprintf(err, errlen, "task dir %s: %s", c->taskdir, strerror(errno));
			free(e->ws);
			free(e);
			return NULL;
		}
	}
	e->td = xstrdup(real);
	e->allowlist = c->allowlist && *c->allowlist ? xstrdup(c->allowlist) : NULL;
	e->grace_ms = c->kill_grace_ms > 0 ? c->kill_grace_ms : EXEC_DEFAULT_GRACE_MS;
	e->tree = c->tree;
	return e;
}

/* Real path of the workspace. */
const char *
exec_workspace(const struct executor *e)
{
	return e->ws;
}

/* Number of running tasks. */
int
exec_running(const struct executor *e)
{
	const struct task *t;
	int n = 0;

	for (t = e->tasks; t != NULL; t = t->next)
		n++;
	return n;
}

/* Is task id running now? */
int
exec_is_running(const struct executor *e, const char *id)
{
	const struct task *t;

	for (t = e->tasks; t != NULL; t = t->next)
		if (strcmp(t->id, id) == 0)
			return 1;
	return 0;
}

/* Forget t: timers, watchers, descriptors, memory. */
static void
task_free(struct task *t)
{
	timer_cancel(&t->timeout_timer);
	timer_cancel(&t->kill_timer);
	timer_cancel(&t->end_timer);
	if (t->out_fd != -1) {
		ev_fd_del(t->out_fd);
		close(t->out_fd);
	}
	if (t->err_fd >= 0) {
		ev_fd_del(t->err_fd);
		close(t->err_fd);
	}
	if (t->log_fd != -1)
		close(t->log_fd);
	if (t->pid > 0 && !t->reaped)
		child_unwatch(t->pid);
	free(t->id);
	free(t->tag);
	free(t->dir);
	free(t->workdir);
	free(t->script);
	free(t->user);
	free(t->start_error);
	free(t->cgroup);
	free(t);
}

/* Free the executor (running tasks are forgotten, not stopped). */
void
exec_free(struct executor *e)
{
	if (e == NULL)
		return;
	while (e->tasks != NULL) {
		struct task *t = e->tasks;
		e->tasks = t->next;
		task_free(t);
	}
	free(e->ws);
	free(e->td);
	free(e->allowlist);
	free(e);
}

/* Wall-clock time as "YYYY-MM-DD HH:MM:SS" (local time) into buf. */
static void
fmt_time(int64_t ms, char *buf, size_t size)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;

	if (localtime_r(&s, &tm) == NULL || strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(buf, size, "%lld", (long long)ms);
}

/* Append text to output.log (best effort: the tail in memory is what counts). */
static void
log_file_put(struct task *t, const char *text, size_t len)
{
	if (t->log_fd == -1)
		return;
	if (fs_write_all(t->log_fd, text, len) == -1) {
		log_warn("task %s: cannot write %s/" LOG_FILE "; the output tail is "
		    "still kept", t->id, t->dir);
		close(t->log_fd);
		t->log_fd = -1;
	}
}

/* Keep the last EXEC_TAIL_MAX bytes of the output in the ring. */
static void
ring_put(struct task *t, const char *p, size_t n)
{
	size_t first;

	if (n >= EXEC_TAIL_MAX) {
		memcpy(t->ring, p + n - EXEC_TAIL_MAX, EXEC_TAIL_MAX);
		t->ring_head = 0;
		t->ring_len = EXEC_TAIL_MAX;
		return;
	}
	first = EXEC_TAIL_MAX - t->ring_head;
	if (first > n)
		first = n;
	memcpy(t->ring + t->ring_head, p, first);
	memcpy(t->ring, p + first, n - first);
	t->ring_head = (t->ring_head + n) % EXEC_TAIL_MAX;
	t->ring_len = t->ring_len + n > EXEC_TAIL_MAX ? EXEC_TAIL_MAX : t->ring_len + n;
}

/* The ring as one clean UTF-8 string. */
static char *
ring_text(const struct task *t)
{
	char *lin = xmalloc(t->ring_len + 1), *s;
	size_t start = (t->ring_head + EXEC_TAIL_MAX - t->ring_len) % EXEC_TAIL_MAX;
	size_t first = EXEC_TAIL_MAX - start;

	if (first > t->ring_len)
		first = t->ring_len;
	memcpy(lin, t->ring + start, first);
	memcpy(lin + first, t->ring, t->ring_len - first);
	s = utf8_clean(lin, t->ring_len, t->total > (long long)t->ring_len);
	free(lin);
	return s;
}

/* Stop watching the output pipe and close it. */
static void
pipe_close(struct task *t)
{
	if (t->err_fd >= 0) {
		ev_fd_del(t->err_fd);
		close(t->err_fd);
		t->err_fd = -1;
	}
	if (t->out_fd == -1)
		return;
	ev_fd_del(t->out_fd);
	close(t->out_fd);
	t->out_fd = -1;
}

/* Read one of the task's pipes; returns 1 at EOF (the fd is then closed). */
static int
pipe_read(struct task *t, int *fdp, int stream)
{
	static char buf[READ_CHUNK];
	int i;

	for (i = 0; i < READS_PER_TURN; i++) {
		ssize_t n = read(*fdp, buf, sizeof(buf));
		if (n > 0) {
			log_file_put(t, buf, (size_t)n);
			ring_put(t, buf, (size_t)n);
			t->total += n;
			if (t->out_fn != NULL)
				t->out_fn(t->id, stream, buf, (size_t)n, t->out_arg);
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n == -1)
			log_warn("task %s: reading its output", t->id);
		ev_fd_del(*fdp);	/* EOF (or a broken pipe) */
		close(*fdp);
		*fdp = -1;
		return 1;
	}
	return 0;
}

/* The split stderr pipe is readable. */
static void
on_errput(int fd, short revents, void *arg)
{
	struct task *t = arg;

	(void)fd;
	(void)revents;
	if (t->err_fd >= 0 && pipe_read(t, &t->err_fd, 2))
		task_maybe_end(t);
}

/*
 * Read what the task wrote (a bounded number of chunks per turn so one
 * chatty task cannot starve the loop): to output.log and the tail ring.
 */
static void
on_output(int fd, short revents, void *arg)
{
	struct task *t = arg;

	(void)fd;
	(void)revents;
	if (t->out_fd != -1 && pipe_read(t, &t->out_fd, 1))
		task_maybe_end(t);
}

/* Live processes of the task's session or process group (not zombies). */
static int
group_count(const struct task *t)
{
	int n;

	if (t->cgroup != NULL && (n = t->ex->tree->count(t->cgroup)) >= 0)
		return n;	/* the whole tree, escaped processes included */
	n = proc_group_members(t->pid, t->pid, t->proc_start, 0, NULL, 0);

	if (n >= 0)
		return n;
	/* No /proc: a zombie counts too, which only costs a grace period. */
	return kill(-t->pid, 0) == 0 || errno == EPERM;
}

/* Signal the task's process group (the leader too, should it have left it). */
static void
group_signal(const struct task *t, int sig)
{
	if (t->cgroup != NULL)
		t->ex->tree->signal(t->cgroup, sig);
	if (kill(-t->pid, sig) == -1 && errno != ESRCH)
		log_warn("task %s: kill -%d -%ld", t->id, sig, (long)t->pid);
	if (!t->reaped)
		(void)kill(t->pid, sig);
}

static void kill_tick(void *arg);

/* SIGTERM the whole group now, SIGKILL what is left after grace_ms. */
static void
kill_start(struct task *t, int64_t grace_ms, const char *why)
{
	if (t->kill != K_NONE)
		return;
	log_info("task %s: %s: SIGTERM to process group %ld%s (SIGKILL in %lld ms)",
	    t->id, why, (long)t->pid, t->cgroup != NULL ? " and its cgroup" : "",
	    (long long)grace_ms);
	group_signal(t, SIGTERM);
	t->kill = K_TERM;
	t->kill_deadline = mono_ms() + grace_ms;
	timer_set(&t->kill_timer, KILL_POLL_MS);
}

/*
 * Kill state machine tick: while SIGTERM is pending, poll the group until it
 * is empty or the deadline passes (then SIGKILL); afterwards give a pipe
 * held open by a process outside the group a moment, then close it.
 */
static void
kill_tick(void *arg)
{
	struct task *t = arg;

	switch (t->kill) {
	case K_TERM:
		if (group_count(t) > 0) {
			if (mono_ms() < t->kill_deadline) {
				timer_set(&t->kill_timer, KILL_POLL_MS);
				return;
			}
			log_warnx("task %s: process group %ld outlived SIGTERM; "
			    "sending SIGKILL", t->id, (long)t->pid);
			group_signal(t, SIGKILL);
			t->kill = K_KILL;
			timer_set(&t->kill_timer, KILL_SETTLE_MS);
			return;
		}
		t->kill = K_DONE;
		break;
	case K_KILL:
		t->kill = K_DONE;
		break;
	default:
		break;
	}
	if (t->reaped && (t->out_fd != -1 || t->err_fd >= 0)) {
		if (!t->drain_armed) {
			t->drain_armed = 1;
			timer_set(&t->kill_timer, DRAIN_MS);
			return;
		}
		log_warnx("task %s: its output stays open after the process group "
		    "ended (a process left the session); closing it", t->id);
		if (t->out_fd != -1)
			on_output(t->out_fd, POLLIN, t);
		if (t->err_fd >= 0)
			on_errput(t->err_fd, POLLIN, t);
		pipe_close(t);
	}
	task_maybe_end(t);
}

/* The timeout expired: end the whole group. */
static void
on_timeout(void *arg)
{
	struct task *t = arg;

	if (t->reaped)
		return;
	t->timed_out = 1;
	log_warnx("task %s: timed out after %lld s", t->id,
	    (long long)(t->timeout_ms / 1000));
	kill_start(t, t->ex->grace_ms, "timeout");
}

/* Reaper callback: the leader ended; leftovers of its group are ended too. */
static void
on_exit_cb(pid_t pid, int status, void *arg)
{
	struct task *t = arg;

	(void)pid;
	t->reaped = 1;
	t->wstatus = status;
	timer_cancel(&t->timeout_timer);
	log_info("task %s: process %ld ended (%s)", t->id, (long)t->pid,
	    child_status_str(status));
	if (t->kill == K_NONE && group_count(t) > 0) {
		kill_start(t, t->ex->grace_ms, "leftover processes after the "
		    "script ended");
	} else if (t->kill == K_NONE && (t->out_fd != -1 || t->err_fd >= 0)) {
		/* Normally EOF follows at once; a process outside the group may
		   hold the pipe: kill_tick closes it after DRAIN_MS. */
		t->kill = K_DONE;
		t->drain_armed = 1;
		timer_set(&t->kill_timer, DRAIN_MS);
	}
	task_maybe_end(t);
}

/* Read <workdir>/output.env into params (an empty object when absent). */
static cJSON *
read_params(const char *id, const char *workdir)
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

/* Go's text for a wait status: "exit status N" / "signal: killed". */
static char *
status_error(int status)
{
	char *s;

	if (WIFEXITED(status))
		return xasprintf("exit status %d", WEXITSTATUS(status));
	if (WIFSIGNALED(status)) {
		s = xasprintf("signal: %s", strsignal(WTERMSIG(status)));
		if (s[8] != '\0')
			s[8] = (char)tolower((unsigned char)s[8]);
		return s;
	}
	return xasprintf("wait status 0x%x", status);
}

/*
 * The task is over: decide the outcome, persist result.json with the done
 * flag, then hand the result to the owner.
 */
static void
task_end(struct task *t)
{
	struct executor *e = t->ex;
	struct exec_result *r = xcalloc(1, sizeof(*r));
	struct task **pp;
	char when[64], *footer;

	t->ended = 1;
	r->id = xstrdup(t->id);
	r->tag = xstrdup(t->tag);
	r->start_ms = t->start_ms;
	r->end_ms = wall_ms();
	r->duration_ms = r->end_ms - r->start_ms;
	r->output_bytes = t->total;
	r->output = ring_text(t);
	r->exit_code = -1;
	if (t->start_error != NULL) {
		r->status = EXEC_FAILURE;
		r->error = xstrdup(t->start_error);
	} else if (t->killed) {
		r->status = EXEC_KILLED;
		r->error = xstrdup("killed on request");
	} else if (t->timed_out) {
		r->status = EXEC_TIMEOUT;
		r->error = xasprintf("timed out after %lld s",
		    (long long)(t->timeout_ms / 1000));
	} else if (t->stopping && !(WIFEXITED(t->wstatus) && WEXITSTATUS(t->wstatus) == 0)) {
		r->status = EXEC_FAILURE;
		r->error = xstrdup("stopped: the agent is shutting down");
	} else if (WIFEXITED(t->wstatus) && WEXITSTATUS(t->wstatus) == 0) {
		r->status = EXEC_SUCCESS;
		r->error = xstrdup("");
	} else {
		r->status = EXEC_FAILURE;
		r->error = status_error(t->wstatus);
	}
	if (t->start_error == NULL) {
		if (WIFEXITED(t->wstatus))
			r->exit_code = WEXITSTATUS(t->wstatus);
		else if (WIFSIGNALED(t->wstatus))
			r->term_signal = WTERMSIG(t->wstatus);
	}
	r->params = read_params(t->id, t->workdir);
	r->done = 1;

	fmt_time(r->end_ms, when, sizeof(when));
	footer = xasprintf("\n=== Execution Finished ===\nTime: %s\nDuration: %lld ms\n"
	    "Status: %s\nExitCode: %d\nError: %s\nOutputBytes: %lld\n", when,
	    (long long)r->duration_ms, exec_status_name(r->status), r->exit_code,
	    r->error, t->total);
	log_file_put(t, footer, strlen(footer));
	free(footer);
	(void)result_write(t->dir, r, 0, 0);
	log_info("task %s: %s (%s) after %lld ms, %lld output bytes, %d param(s)",
	    t->id, exec_status_name(r->status), *r->error ? r->error : "exit 0",
	    (long long)r->duration_ms, t->total, cJSON_GetArraySize(r->params));

	for (pp = &e->tasks; *pp != NULL; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	if (t->cgroup != NULL)
		e->tree->remove(t->cgroup);
	{
		exec_done_fn fn = t->fn;
		void *arg = t->arg;
		task_free(t);
		fn(r, arg);
	}
}

/* End t when the leader is reaped, the pipe closed and the group gone. */
static void
task_maybe_end(struct task *t)
{
	if (t->ended || !t->reaped || t->out_fd != -1 || t->err_fd >= 0 ||
	    t->kill == K_TERM || t->kill == K_KILL)
		return;
	task_end(t);
}

/* Timer: deliver a task that failed to start (never from inside exec_start). */
static void
end_now(void *arg)
{
	task_end(arg);
}

/* ------------------------------------------------------------ start */

/* Does the environment variable name look like it holds a secret? */
static int
secret_name(const char *kv)
{
	static const char *marks[] = { "SECRET", "TOKEN", "PASSWORD", "PASSWD",
	    "CREDENTIAL", "_KEY", "PRIVATE" };
	const char *eq = strchr(kv, '=');
	char name[256];
	size_t i;

	snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - kv) : (int)strlen(kv), kv);
	for (i = 0; i < nitems(marks); i++)
		if (strcasestr(name, marks[i]) != NULL)
			return 1;
	return 0;
}

/* debug.sh: cd, the task's environment, exec the script (seed 002). */
static char *
debug_script_text(const struct task *t, char *const *argv, const struct envlist *env)
{
	char *q = shell_quote(t->workdir), *out, *tmp;
	size_t i;

	out = xasprintf("#!/bin/sh\n# debug.sh - re-run task %s by hand with the "
	    "environment it ran with\n# (written by the executor; variables whose "
	    "names look secret are left out).\n%s%s%scd %s || exit 1\n", t->id,
	    *t->user ? "# It ran as user " : "", *t->user ? t->user : "",
	    *t->user ? ": su -s /bin/sh -c ./debug.sh <user>\n" : "", q);
	free(q);
	for (i = 0; i < env->n; i++) {
		if (secret_name(env->v[i]) || strchr(env->v[i], '=') == NULL)
			continue;
		q = shell_quote(env->v[i]);
		tmp = xasprintf("%sexport %s\n", out, q);
		free(q);
		free(out);
		out = tmp;
	}
	tmp = xasprintf("%sexec", out);
	free(out);
	out = tmp;
	for (i = 0; argv[i] != NULL; i++) {
		q = shell_quote(argv[i]);
		tmp = xasprintf("%s %s", out, q);
		free(q);
		free(out);
		out = tmp;
	}
	tmp = xasprintf("%s\n", out);
	free(out);
	return tmp;
}

/* task.json: the request as understood (for people and exec_prune). */
static char *
task_json(const struct task *t, char *const *argv, const struct exec_request *r)
{
	cJSON *o = cJSON_CreateObject(), *a;
	char *s;
	size_t i;

	json_add_str(o, "id", t->id);
	json_add_str(o, "tag", t->tag);
	json_add_str(o, "workdir", t->workdir);
	json_add_str(o, "user", t->user);
	cJSON_AddNumberToObject(o, "timeoutMs", (double)t->timeout_ms);
	cJSON_AddNumberToObject(o, "created", (double)wall_ms());
	a = cJSON_AddArrayToObject(o, "argv");
	for (i = 0; argv[i] != NULL; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(argv[i]));
	a = cJSON_AddArrayToObject(o, "env");
	for (i = 0; r->env != NULL && r->env[i] != NULL; i++)
		if (!secret_name(r->env[i]))
			cJSON_AddItemToArray(a, cJSON_CreateString(r->env[i]));
	s = cJSON_Print(o);
	if (s == NULL)
		fatalx("executor: out of memory");
	cJSON_Delete(o);
	return s;
}

/* Write dir/name with mode, owned by the task's user when switching. */
static int
task_file(const char *path, const char *text, mode_t mode, const struct spawn_opts *o)
{
	if (fs_write_atomic(path, text, strlen(text), mode) == -1)
		return -1;
	/* lchown: the task dir is the user's; never follow a swapped-in link. */
	if (o->switch_user && lchown(path, o->uid, o->gid) == -1)
		return -1;
	return 0;
}

/* Resolve the run-as user into o and env. 0, or -1 with err. */
static int
user_setup(const char *user, struct spawn_opts *o, struct envlist *env,
    char *err, size_t errlen)
{
	struct passwd *pw;

	if (user == NULL || *user == '\0')
		return 0;
	if ((pw = getpwnam(user)) == NULL) {
		snprintf(err, errlen, "user '%s' not found (devops.slave.user)", user);
		return -1;
	}
	if (pw->pw_uid == geteuid())
		return 0;
	o->switch_user = 1;
	o->uid = pw->pw_uid;
	o->gid = pw->pw_gid;
	envlist_set(env, "HOME", pw->pw_dir);
	envlist_set(env, "USER", pw->pw_name);
	envlist_set(env, "LOGNAME", pw->pw_name);
	return 0;
}

/* Make a directory inside the workspace (checked again after creation). */
static int
dir_make_inside(const char *root, const char *rel, const struct spawn_opts *o,
    char *out, size_t outlen, char *err, size_t errlen)
{
	char again[PATH_MAX];

	if (exec_resolve(root, rel, out, outlen, err, errlen) == -1)
		return -1;
	if (fs_mkdir_p(out, 0755) == -1) {
		snprintf(err, errlen, "create %s: %s", out, strerror(errno));
		return -2;
	}
	/* A symlink planted between the check and mkdir would show here. */
	if (realpath(out, again) == NULL || !path_under(root, again) ||
	    !fs_is_dir(again)) {
		snprintf(err, errlen, "path '%s' leaves the workspace", rel);
		return -1;
	}
	snprintf(out, outlen, "%s", again);
	if (o->switch_user && lchown(out, o->uid, o->gid) == -1) {
		snprintf(err, errlen, "chown %s: %s", out, strerror(errno));
		return -2;
	}
	return 0;
}

/* Build argv for the task: the script itself, or /bin/sh for a non-executable one. */
static char **
task_argv(const char *script, int direct, char *const *args)
{
	size_t n = 0, i, k = 0;
	char **argv;

	while (args != NULL && args[n] != NULL)
		n++;
	argv = xcalloc(n + 3, sizeof(*argv));
	if (!direct)
		argv[k++] = xstrdup("/bin/sh");
	argv[k++] = xstrdup(script);
	for (i = 0; i < n; i++)
		argv[k++] = xstrdup(args[i]);
	return argv;
}

/* Free a NULL-terminated vector of strings. */
static void
argv_free(char **v)
{
	size_t i;

	for (i = 0; v != NULL && v[i] != NULL; i++)
		free(v[i]);
	free(v);
}

/* Fork and exec t with argv/env; on failure t->start_error is set. */
static void
task_spawn(struct task *t, char **argv, struct envlist *env, struct spawn_opts *o)
{
	int pfd[2], efd[2] = { -1, -1 };
	char err[512];

	if (pipe2(pfd, O_CLOEXEC) == -1) {
		t->start_error = xasprintf("start: pipe: %s", strerror(errno));
		return;
	}
	if (t->err_fd == -2 && pipe2(efd, O_CLOEXEC) == -1) {
		t->start_error = xasprintf("start: pipe: %s", strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
		return;
	}
	t->err_fd = -1;
	(void)fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	if (efd[0] != -1)
		(void)fcntl(efd[0], F_SETFL, O_NONBLOCK);
	o->path = argv[0];
	o->argv = argv;
	o->envp = env->v;
	o->cwd = t->workdir;
	o->new_session = 1;	/* its own process group: the unit we kill */
	o->stdin_fd = -1;
	o->stdout_fd = pfd[1];
	o->stderr_fd = efd[1] != -1 ? efd[1] : -2;
	o->user = t->user;
	if (t->ex->tree != NULL) {
		char *name = xasprintf("task-%s-%s", *t->tag ? t->tag : "x", t->id);
		t->cgroup = t->ex->tree->create(name);
		free(name);
	}
	o->cgroup_procs = t->cgroup != NULL ? t->ex->tree->procs(t->cgroup) : NULL;
	t->pid = child_spawn(o, err, sizeof(err));
	if (t->pid == -1 && t->cgroup != NULL && strncmp(err, "cgroup", 6) == 0) {
		/* Not delegated to us after all: the process group must do. */
		log_warnx("task %s: cannot join its cgroup (%s); process group only",
		    t->id, err);
		t->ex->tree->remove(t->cgroup);
		free(t->cgroup);
		t->cgroup = NULL;
		o->cgroup_procs = NULL;
		t->pid = child_spawn(o, err, sizeof(err));
	}
	close(pfd[1]);
	if (efd[1] != -1)
		close(efd[1]);
	if (t->pid == -1) {
		close(pfd[0]);
		if (efd[0] != -1)
			close(efd[0]);
		t->pid = 0;
		t->start_error = xasprintf("start: %s", err);
		return;
	}
	t->proc_start = proc_start_time(t->pid);
	child_watch(t->pid, on_exit_cb, t);
	t->out_fd = pfd[0];
	t->err_fd = efd[0];
	if (ev_fd_add(t->out_fd, POLLIN, on_output, t) == -1 ||
	    (t->err_fd != -1 && ev_fd_add(t->err_fd, POLLIN, on_errput, t) == -1)) {
		log_warn("task %s: cannot watch its output", t->id);
		pipe_close(t);
		t->start_error = xstrdup("start: no free event-loop slot for the "
		    "task's output");
		/* The reaper still delivers the exit; the task ends then. */
		group_signal(t, SIGKILL);
		return;
	}
	if (t->timeout_ms > 0)
		timer_set(&t->timeout_timer, t->timeout_ms);
}

/* Stop or resume reading a task's output (back-pressure of the owner). */
int
exec_output_pause(struct executor *e, const char *id, int pause)
{
	struct task *t;

	for (t = e->tasks; t != NULL; t = t->next)
		if (!t->ended && strcmp(t->id, id) == 0)
			break;
	if (t == NULL)
		return 0;
	pause = pause != 0;
	if (t->paused == pause)
		return 1;
	t->paused = pause;
	if (pause) {
		if (t->out_fd >= 0)
			ev_fd_del(t->out_fd);
		if (t->err_fd >= 0)
			ev_fd_del(t->err_fd);
		return 1;
	}
	if ((t->out_fd >= 0 && ev_fd_add(t->out_fd, POLLIN, on_output, t) == -1) ||
	    (t->err_fd >= 0 && ev_fd_add(t->err_fd, POLLIN, on_errput, t) == -1))
		log_warn("task %s: cannot watch its output again", t->id);
	return 1;
}

/* Kill a running task on request: its whole group, then EXEC_KILLED. */
int
exec_kill(struct executor *e, const char *id)
{
	struct task *t;

	for (t = e->tasks; t != NULL; t = t->next)
		if (!t->ended && strcmp(t->id, id) == 0)
			break;
	if (t == NULL || t->pid <= 0)
		return 0;
	if (t->reaped)
		return 1;
	t->killed = 1;
	timer_cancel(&t->timeout_timer);
	kill_start(t, t->ex->grace_ms, "kill requested");
	return 1;
}

/* Validate, prepare the task dir and files, persist, then spawn. */
enum exec_error
exec_start(struct executor *e, const struct exec_request *r, exec_done_fn fn,
    void *arg, char *err, size_t errlen)
{
	char dir[PATH_MAX], wd[PATH_MAX], script[PATH_MAX], when[64];
	struct spawn_opts o;
	struct envlist env;
	struct exec_result *res;
	struct task *t = NULL;
	char **argv = NULL, *text = NULL, *header, *path = NULL;
	const char *sname = r->script_name ? r->script_name : "script.sh";
	int direct = 1, rc;
	size_t i;
	enum exec_error ret = EXEC_E_REQUEST;

	memset(&o, 0, sizeof(o));
	envlist_init(&env, 1);
	if (!exec_id_valid(r->id)) {
		snprintf(err, errlen, "task id '%.*s' is not a safe name "
		    "([A-Za-z0-9._-], at most %d characters)", 64, r->id ? r->id : "",
		    EXEC_ID_MAX);
		goto fail;
	}
	if ((r->script == NULL) == (r->script_path == NULL) ||
	    (r->script != NULL && !exec_id_valid(sname))) {
		snprintf(err, errlen, "task %s: give either an inline script (with a "
		    "safe file name) or a script path", r->id);
		goto fail;
	}
	if (exec_is_running(e, r->id)) {
		snprintf(err, errlen, "task %s is running already", r->id);
		ret = EXEC_E_EXISTS;
		goto fail;
	}
	if (exec_resolve(e->td, r->id, dir, sizeof(dir), err, errlen) == -1)
		goto fail;
	path = xasprintf("%s/" RESULT_FILE, dir);
	if (fs_exists(path)) {
		snprintf(err, errlen, "task %s has run already (%s exists); it is "
		    "never run again", r->id, path);
		ret = EXEC_E_EXISTS;
		goto fail;
	}
	if (user_setup(r->user, &o, &env, err, errlen) == -1)
		goto fail;

	/* Integrity: the script as the requester sent it, or the file's bytes. */
	if (r->script_path != NULL) {
		size_t len = 0;
		struct stat st;
		if (exec_resolve(e->ws, r->script_path, script, sizeof(script),
		    err, errlen) == -1)
			goto fail;
		if (stat(script, &st) == -1 || !S_ISREG(st.st_mode)) {
			snprintf(err, errlen, "script %s is not a regular file",
			    r->script_path);
			goto fail;
		}
		direct = (st.st_mode & 0111) != 0;
		if (e->allowlist != NULL) {
			if (fs_read_file(script, SCRIPT_MAX, &text, &len) == -1) {
				snprintf(err, errlen, "read script %s: %s", script,
				    strerror(errno));
				ret = EXEC_E_PREPARE;
				goto fail;
			}
			if (!exec_allowed(e->allowlist, text, len, err, errlen)) {
				ret = EXEC_E_DENIED;
				goto fail;
			}
			free(text);
			text = NULL;
		}
	} else if (e->allowlist != NULL &&
	    !exec_allowed(e->allowlist, r->script, strlen(r->script), err, errlen)) {
		ret = EXEC_E_DENIED;
		goto fail;
	}

	/* The task dir and the working dir, both inside the workspace. */
	if ((rc = dir_make_inside(e->td, r->id, &o, dir, sizeof(dir), err, errlen)) != 0) {
		ret = rc == -1 ? EXEC_E_REQUEST : EXEC_E_PREPARE;
		goto fail;
	}
	if (r->workdir != NULL) {
		if ((rc = dir_make_inside(e->ws, r->workdir, &o, wd, sizeof(wd), err,
		    errlen)) != 0) {
			ret = rc == -1 ? EXEC_E_REQUEST : EXEC_E_PREPARE;
			goto fail;
		}
	} else {
		snprintf(wd, sizeof(wd), "%s", dir);
	}

	t = xcalloc(1, sizeof(*t));
	t->ex = e;
	t->id = xstrdup(r->id);
	t->tag = xstrdup(r->tag ? r->tag : "");
	t->dir = xstrdup(dir);
	t->workdir = xstrdup(wd);
	t->user = xstrdup(r->user ? r->user : "");
	t->timeout_ms = r->timeout_ms > 0 ? r->timeout_ms : 0;
	t->fn = fn;
	t->arg = arg;
	t->out_fd = t->log_fd = -1;
	t->err_fd = r->split_stderr ? -2 : -1;	/* -2: task_spawn makes the pipe */
	t->out_fn = r->on_output;
	t->out_arg = r->output_arg;
	timer_init(&t->timeout_timer, "task-timeout", on_timeout, t);
	timer_init(&t->kill_timer, "task-kill", kill_tick, t);
	timer_init(&t->end_timer, "task-end", end_now, t);

	if (r->script != NULL) {
		if ((size_t)snprintf(script, sizeof(script), "%s/%s", dir, sname) >=
		    sizeof(script)) {
			snprintf(err, errlen, "task %s: script path too long", r->id);
			ret = EXEC_E_PREPARE;
			goto fail;
		}
		text = exec_wrap_script(r->script, wd);
		if (task_file(script, text, 0700, &o) == -1) {
			snprintf(err, errlen, "write script file %s: %s", script,
			    strerror(errno));
			ret = EXEC_E_PREPARE;
			goto fail;
		}
		free(text);
		text = NULL;
	}
	t->script = xstrdup(script);
	argv = task_argv(script, direct, r->args);

	/* The task's environment: the agent's, the caller's, the task's own. */
	for (i = 0; r->env != NULL && r->env[i] != NULL; i++) {
		const char *eq = strchr(r->env[i], '=');
		if (eq == NULL) {
			envlist_unset(&env, r->env[i]);
		} else {
			char *k = xstrndup(r->env[i], (size_t)(eq - r->env[i]));
			envlist_set(&env, k, eq + 1);
			free(k);
		}
	}
	envlist_set(&env, "DEVOPS_TASK_ID", t->id);
	envlist_set(&env, "DEVOPS_TASK_DIR", t->dir);
	envlist_set(&env, "DEVOPS_TASK_WORKDIR", t->workdir);
	free(path);
	path = xasprintf("%s/" ENV_FILE, t->workdir);
	envlist_set(&env, "DEVOPS_TASK_OUTPUT_ENV", path);

	free(path);
	path = xasprintf("%s/" TASK_FILE, dir);
	text = task_json(t, argv, r);
	if (task_file(path, text, 0644, &o) == -1) {
		snprintf(err, errlen, "write %s: %s", path, strerror(errno));
		ret = EXEC_E_PREPARE;
		goto fail;
	}
	free(text);
	text = NULL;
	free(path);
	path = xasprintf("%s/" DEBUG_FILE, dir);
	text = debug_script_text(t, argv, &env);
	if (task_file(path, text, 0700, &o) == -1)
		log_warn("task %s: cannot write %s", t->id, path);
	free(text);
	text = NULL;
	free(path);
	path = xasprintf("%s/" LOG_FILE, dir);
	t->log_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_NOFOLLOW |
	    O_CLOEXEC, 0640);
	if (t->log_fd == -1) {
		snprintf(err, errlen, "open %s: %s", path, strerror(errno));
		ret = EXEC_E_PREPARE;
		goto fail;
	}

	/* From here on the task exists: result.json marks it (never re-run). */
	t->start_ms = wall_ms();
	res = xcalloc(1, sizeof(*res));
	res->id = t->id;
	res->tag = t->tag;
	res->status = EXEC_RUNNING;
	res->exit_code = -1;
	res->start_ms = t->start_ms;
	if (result_write(dir, res, 0, 0) == -1) {
		snprintf(err, errlen, "write %s/" RESULT_FILE ": %s", dir, strerror(errno));
		free(res);
		ret = EXEC_E_PREPARE;
		goto fail;
	}
	fmt_time(t->start_ms, when, sizeof(when));
	header = xasprintf("=== Execution Started ===\nTime: %s\nTask: %s\nWorkDir: %s\n"
	    "Script: %s\nUser: %s\nTimeout: %lld s\n\n", when, t->id, t->workdir,
	    t->script, *t->user ? t->user : "(the agent's)",
	    (long long)(t->timeout_ms / 1000));
	log_file_put(t, header, strlen(header));
	free(header);

	t->next = e->tasks;
	e->tasks = t;
	task_spawn(t, argv, &env, &o);
	if (t->start_error != NULL && t->pid == 0) {
		log_warnx("task %s: %s", t->id, t->start_error);
		t->reaped = 1;
		timer_set(&t->end_timer, 0);
	} else if (t->pid > 0) {
		(void)result_write(dir, res, t->pid, t->proc_start);
		log_info("task %s: started %s as pid %ld in %s%s%s", t->id, t->script,
		    (long)t->pid, t->workdir, *t->user ? " as " : "", t->user);
	}
	free(res);
	argv_free(argv);
	envlist_free(&env);
	free(path);
	return EXEC_OK;
fail:
	if (t != NULL)
		task_free(t);
	argv_free(argv);
	envlist_free(&env);
	free(text);
	free(path);
	return ret;
}

/* ------------------------------------------------------------ persistence */

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
	rc = result_write(dir, r, 0, 0);
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
		r->output = utf8_clean(tail, len, 1);
		if (stat(path, &st) == 0)
			r->output_bytes = (long long)st.st_size;
		free(tail);
	}
	/* The task may have written output.env before it was interrupted. */
	if (read_nofollow(task_path, RESULT_MAX, 0, &tj, NULL, NULL) == 0 &&
	    (j = cJSON_Parse(tj)) != NULL) {
		if (json_get_str(j, "workdir", &wd) == 0 && wd != NULL) {
			cJSON_Delete(r->params);
			r->params = read_params(r->id, wd);
		}
		cJSON_Delete(j);
	}
	free(tj);
	free(wd);
	r->end_ms = wall_ms();
	r->duration_ms = r->end_ms - r->start_ms;
	r->done = 1;
	(void)result_write(dir, r, 0, 0);
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

/* Agent exit: stop every running task within the budget. */
void
exec_shutdown(struct executor *e, int64_t budget_ms)
{
	int64_t end = mono_ms() + (budget_ms > 0 ? budget_ms : 0);
	struct task *t;

	for (t = e->tasks; t != NULL; t = t->next) {
		t->stopping = 1;
		timer_cancel(&t->timeout_timer);
		if (!t->reaped)
			kill_start(t, budget_ms / 2, "agent shutdown");
	}
	while (e->tasks != NULL && mono_ms() < end)
		ev_run_once(50);
	/* Out of budget: SIGKILL, then give the reaper a last moment. */
	for (t = e->tasks; t != NULL; t = t->next)
		if (t->pid > 0)
			group_signal(t, SIGKILL);
	end = mono_ms() + 1000;
	while (e->tasks != NULL && mono_ms() < end) {
		child_reap();
		ev_run_once(20);
	}
	while ((t = e->tasks) != NULL) {
		/* Unreaped after SIGKILL: give up waiting, record it anyway. */
		log_warnx("task %s: still not reaped after SIGKILL", t->id);
		if (!t->reaped) {
			child_unwatch(t->pid);
			t->reaped = 1;
			t->wstatus = SIGKILL;	/* WIFSIGNALED */
		}
		pipe_close(t);
		t->kill = K_DONE;
		e->tasks = t->next;	/* task_end finds it gone: fine */
		task_end(t);
	}
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
