/*
 * docker.c - container builds through the docker/podman command-line tool
 * (see docker.h; GoAgent HEAD: bk-ci src/agent/agent/src/pkg/job/
 * build_docker.go, docker_runtime.go, pkg/dockercli/dockercli.go,
 * pkg/job_docker/job_docker.go).
 *
 * A build's flow is a chain of steps, each one runtime command run as a
 * watched child with a deadline, its stdout and stderr captured into
 * owner-only files under runtime/docker/:
 *
 *   [image inspect] -> [login -> pull | pull] -> create -> start -> wait
 *   -> [logs] -> rm -f -> build_finish
 *
 * The container name is journaled (state RUNNING) before `create`, so a
 * restarted agent knows which container to look for; the labels
 * DOCKER_LABEL_OWNER and DOCKER_LABEL_BUILD let the sweep find containers
 * of gone builds and never touch anyone else's.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "build.h"
#include "child.h"
#include "docker.h"
#include "envlist.h"
#include "fsutil.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "md5.h"
#include "util.h"

#define STEP_DIR	"runtime/docker"
#define INIT_SCRIPT	"agent_docker_init.sh"
#define NO_MOUNT	"__NO_MOUNT__"
#define OUT_MAX		((size_t)64 * 1024)	/* bytes of a command's output kept */
#define DOCKER_LOG_MAX	1000		/* docker.log up to this size is the message */

/* Deadlines (ms) of each kind of runtime command. */
#define T_SHORT		(120 * 1000)	/* inspect, create, start, rm, logs, ps */
#define T_LOGIN		(60 * 1000)
#define T_PULL		(30 * 60 * 1000)
#define T_WAIT		(60 * 60 * 1000)	/* `wait` is restarted after this */
#define T_PROBE		(10 * 1000)
#define PROBE_PERIOD	60000
#define HOUSEKEEP_SLACK	5000	/* probe, sweep: may run this late */
#define SWEEP_PERIOD	(10 * 60 * 1000)
#define RECOVER_RETRY	10000

struct step;
typedef void (*step_fn)(struct step *s, int status, char *out, char *err);

/* One runtime command in flight. */
struct step {
	struct build	*b;		/* NULL: probe or sweep */
	char		*what;		/* "pull", "create", ... (logs) */
	char		*cmdline;	/* masked, for the build log */
	pid_t		 pid;
	char		*out_path, *err_path;
	struct timer	 deadline;
	int		 timed_out;
	int		 quiet;		/* output only as DEBUG (inspect) */
	step_fn		 done;
	char		*arg;		/* owned string for the callback */
	struct step	*next;
};

/* A build-log line waiting for its POST. */
struct logline {
	const char	*path;		/* endpoint (static) */
	char		*body;
	struct logline	*next;
};

/* A build's container state (b->dock). */
struct dock {
	struct step	*step;		/* the one in flight, or NULL */
	char		*cfgdir;	/* temp --config dir of a login, or NULL */
	char		*image;		/* trimmed image */
	char		*image_str;	/* without http(s):// */
	int		 success;	/* outcome, once known */
	int		 code;
	char		*msg;
	struct logline	*logq, **logq_tail;	/* lines waiting to be posted */
	int		 posts;		/* lines queued or in flight */
	int		 post_busy;	/* one POST at a time keeps the order */
	int		 finish_pending;	/* report once they are answered */
	struct timer	 retry;		/* recovery retry while the engine is down */
};

static struct {
	struct step	*steps;
	int		 engine;	/* -1 unknown, 0 down, 1 up */
	char		*engine_why;	/* last probe failure */
	int		 probe_busy, sweep_busy;
	struct timer	 probe_timer, sweep_timer;
	char		*owner;		/* DOCKER_LABEL_OWNER value of this install */
} D = { .engine = -1 };

static void wait_run(struct build *b);
/* Environment of the next step_run (secret -e values), or NULL: inherit. */
static char *const *spawn_envp;
static struct dock *dock_of(struct build *b);

/* ---------------------------------------------------------------- checks */

/* 1 when s holds a control character (newline, NUL cannot occur). */
static int
has_ctl(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

/* 1 when s consists of characters of set only. */
static int
only_chars(const char *s, const char *set)
{
	return strspn(s, set) == strlen(s);
}

/* image without a leading http:// or https:// (borrowed tail of image). */
static const char *
image_strip(const char *image)
{
	if (str_starts(image, "http://"))
		return image + 7;
	if (str_starts(image, "https://"))
		return image + 8;
	return image;
}

/* Check an option value: non-blank, no control character, no leading '-'. */
static int
opt_ok(const cJSON *it, const char *name, char *err, size_t errlen)
{
	if (!cJSON_IsString(it) || str_blank(it->valuestring)) {
		snprintf(err, errlen, "options.%s has a blank or non-string value",
		    name);
		return -1;
	}
	if (has_ctl(it->valuestring) || it->valuestring[0] == '-' ||
	    strlen(it->valuestring) > 4096) {
		snprintf(err, errlen, "options.%s value is not acceptable "
		    "(control characters, a leading '-' or too long)", name);
		return -1;
	}
	return 0;
}

/* Check an array option of strings (null/absent fine). */
static int
opt_arr_ok(const cJSON *opts, const char *name, const char *set, char *err,
    size_t errlen)
{
	const cJSON *arr = json_get(opts, name), *it;

	if (arr == NULL || cJSON_IsNull(arr))
		return 0;
	if (!cJSON_IsArray(arr)) {
		snprintf(err, errlen, "options.%s is not an array", name);
		return -1;
	}
	cJSON_ArrayForEach(it, arr) {
		if (opt_ok(it, name, err, errlen) == -1)
			return -1;
		if (set != NULL && !only_chars(it->valuestring, set)) {
			snprintf(err, errlen, "options.%s value '%.60s' has "
			    "characters a %s cannot have", name,
			    it->valuestring, name);
			return -1;
		}
	}
	return 0;
}

/* Check a workspace path to be bind-mounted (docker.h). */
static int
workspace_ok(const char *ws, char *err, size_t errlen)
{
	if (*ws == '\0' || strcmp(ws, NO_MOUNT) == 0)
		return 0;
	if (ws[0] != '/' || has_ctl(ws) || strchr(ws, ',') != NULL ||
	    strchr(ws, '=') != NULL || strstr(ws, "/../") != NULL ||
	    str_ends(ws, "/..") || strlen(ws) > 1024) {
		snprintf(err, errlen, "workspace '%.80s' cannot be mounted (it "
		    "must be an absolute path without ',', '=', '..' or control "
		    "characters)", ws);
		return -1;
	}
	return 0;
}

#define NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

/* Check a dockerBuildInfo (docker.h). */
int
docker_info_check(const cJSON *dbi, const char *workspace, char *err,
    size_t errlen)
{
	static const char *strs[] = { "agentId", "secretKey", "image" };
	static const char *cred_keys[] = { "user", "password", "errMsg" };
	const cJSON *it, *cred, *opts;
	const char *img;
	size_t i;

	if (!cJSON_IsObject(dbi)) {
		snprintf(err, errlen, "dockerBuildInfo is not an object");
		return -1;
	}
	for (i = 0; i < nitems(strs); i++) {
		it = json_get(dbi, strs[i]);
		if (!cJSON_IsString(it) || has_ctl(it->valuestring) ||
		    strlen(it->valuestring) > 512) {
			snprintf(err, errlen, "dockerBuildInfo.%s is missing, not "
			    "a string, too long or has control characters", strs[i]);
			return -1;
		}
	}
	it = json_get(dbi, "image");
	{
		char *t = str_trim(xstrdup(it->valuestring));
		int bad;

		img = image_strip(t);
		bad = *img == '\0' || *img == '-' || !only_chars(img,
		    NAME_CHARS "._/:@-");
		if (bad)
			snprintf(err, errlen, "dockerBuildInfo.image '%.80s' is not "
			    "an image name ([A-Za-z0-9._/:@-], not starting with "
			    "'-')", t);
		free(t);
		if (bad)
			return -1;
	}
	cred = json_get(dbi, "credential");
	if (cred != NULL && !cJSON_IsNull(cred)) {
		if (!cJSON_IsObject(cred)) {
			snprintf(err, errlen, "dockerBuildInfo.credential is not an "
			    "object");
			return -1;
		}
		for (i = 0; i < nitems(cred_keys); i++) {
			it = json_get(cred, cred_keys[i]);
			if (it != NULL && !cJSON_IsNull(it) && !cJSON_IsString(it)) {
				snprintf(err, errlen, "dockerBuildInfo.credential.%s "
				    "is not a string", cred_keys[i]);
				return -1;
			}
		}
		it = json_get(cred, "user");
		if (cJSON_IsString(it) && (has_ctl(it->valuestring) ||
		    it->valuestring[0] == '-')) {
			snprintf(err, errlen, "dockerBuildInfo.credential.user is "
			    "not a user name");
			return -1;
		}
	}
	it = json_get(dbi, "imagePullPolicy");
	if (it != NULL && !cJSON_IsNull(it) && !cJSON_IsString(it)) {
		snprintf(err, errlen, "dockerBuildInfo.imagePullPolicy is not a "
		    "string");
		return -1;
	}
	opts = json_get(dbi, "options");
	if (opts != NULL && !cJSON_IsNull(opts)) {
		if (!cJSON_IsObject(opts)) {
			snprintf(err, errlen, "dockerBuildInfo.options is not an "
			    "object");
			return -1;
		}
		if (opt_arr_ok(opts, "volumes", NULL, err, errlen) == -1 ||
		    opt_arr_ok(opts, "mounts", NULL, err, errlen) == -1 ||
		    opt_arr_ok(opts, "network", NAME_CHARS "._:-", err,
		    errlen) == -1)
			return -1;
		it = json_get(opts, "gpus");
		if (it != NULL && !cJSON_IsNull(it) &&
		    opt_ok(it, "gpus", err, errlen) == -1)
			return -1;
		it = json_get(opts, "user");
		if (it != NULL && !cJSON_IsNull(it) &&
		    (opt_ok(it, "user", err, errlen) == -1 ||
		    !only_chars(it->valuestring, NAME_CHARS "._:-"))) {
			snprintf(err, errlen, "dockerBuildInfo.options.user is not "
			    "a user[:group] name");
			return -1;
		}
		it = json_get(opts, "privileged");
		if (it != NULL && !cJSON_IsNull(it) && !cJSON_IsBool(it)) {
			snprintf(err, errlen, "dockerBuildInfo.options.privileged is "
			    "not a bool");
			return -1;
		}
	}
	return workspace_ok(workspace ? workspace : "", err, errlen);
}

/* Registry host of an image for login (docker.h). */
char *
docker_registry_of(const char *image)
{
	const char *s = image_strip(image), *slash = strchr(s, '/');
	char *first;

	if (slash == NULL)
		return xstrdup("");
	first = xstrndup(s, (size_t)(slash - s));
	if (strchr(first, '.') != NULL || strchr(first, ':') != NULL ||
	    strcmp(first, "localhost") == 0)
		return first;
	free(first);
	return xstrdup("");
}

/* ---------------------------------------------------------------- runtime */

/* The runtime name: heartbeat envs first, then the environment; "docker". */
static char *
runtime_name(void)
{
	const cJSON *it = A.envs ? json_get(A.envs, "DEVOPS_AGENT_CONTAINER_RUNTIME") : NULL;
	const char *v = it != NULL && cJSON_IsString(it) ? it->valuestring :
	    getenv("DEVOPS_AGENT_CONTAINER_RUNTIME");
	char *s = str_trim(xstrdup(v ? v : ""));

	if (*s == '\0') {
		free(s);
		s = xstrdup("docker");
	}
	return s;
}

/* 1 when the runtime is Podman (its --config is ignored: --authfile instead). */
static int
runtime_is_podman(void)
{
	char *name = runtime_name();
	const char *base = strrchr(name, '/');
	int yes = strcmp(base ? base + 1 : name, "podman") == 0;

	free(name);
	return yes;
}

/* Full path of the runtime binary, or NULL with err (PATH search). */
static char *
runtime_path(char *err, size_t errlen)
{
	char *name = runtime_name(), *path, *p, *dir, *save = NULL, *full;

	if (name[0] == '/') {
		if (access(name, X_OK) == 0)
			return name;
		snprintf(err, errlen, "container runtime '%s' is not executable: "
		    "%s", name, strerror(errno));
		free(name);
		return NULL;
	}
	if (!only_chars(name, NAME_CHARS "._-")) {
		snprintf(err, errlen, "DEVOPS_AGENT_CONTAINER_RUNTIME '%.60s' is "
		    "not a program name", name);
		free(name);
		return NULL;
	}
	path = xstrdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
	for (p = path; (dir = strtok_r(p, ":", &save)) != NULL; p = NULL) {
		full = xasprintf("%s/%s", *dir ? dir : ".", name);
		if (access(full, X_OK) == 0) {
			free(path);
			free(name);
			return full;
		}
		free(full);
	}
	snprintf(err, errlen, "container runtime '%s' not found in PATH (install "
	    "Docker or Podman, or set DEVOPS_AGENT_CONTAINER_RUNTIME)", name);
	free(path);
	free(name);
	return NULL;
}

/* 1 when an env key names a secret (its value is masked in logs). */
static int
key_is_secret(const char *kv)
{
	static const char *words[] = { "secret", "password", "token", "credential" };
	const char *eq = strchr(kv, '=');
	char *key = xstrndup(kv, eq ? (size_t)(eq - kv) : strlen(kv));
	size_t i;
	int hit = 0;

	for (i = 0; key[i] != '\0'; i++)
		if (key[i] >= 'A' && key[i] <= 'Z')
			key[i] = (char)(key[i] - 'A' + 'a');
	for (i = 0; i < nitems(words); i++)
		if (strstr(key, words[i]) != NULL)
			hit = 1;
	free(key);
	return hit;
}

/* The command line for logs: words joined by spaces, secret -e values masked. */
static char *
cmdline_masked(const char *rt, char *const args[])
{
	char *s = xstrdup(rt), *next;
	size_t i;

	for (i = 0; args[i] != NULL; i++) {
		const char *eq = strchr(args[i], '=');

		if (i > 0 && strcmp(args[i - 1], "-e") == 0 && eq != NULL &&
		    key_is_secret(args[i])) {
			next = xasprintf("%s %.*s=******", s, (int)(eq - args[i]),
			    args[i]);
		} else {
			next = xasprintf("%s %s", s, args[i]);
		}
		free(s);
		s = next;
	}
	return s;
}

/* ---------------------------------------------------------------- build log */

/*
 * The outcome of b is known: report it once the build-log lines posted so
 * far are answered (the server refuses lines of a finished build).
 */
static void
dock_finish(struct build *b, int success, const char *msg, int code)
{
	struct dock *d = dock_of(b);

	if (msg != d->msg) {
		free(d->msg);
		d->msg = xstrdup(msg);
	}
	d->success = success;
	d->code = code;
	if (d->posts > 0) {
		d->finish_pending = 1;
		return;
	}
	d->finish_pending = 0;
	build_finish(b, success, d->msg, code);
}

static void log_post_next(struct build *b);

/* A build-log POST answered (failures only logged): the next line goes. */
static void
log_post_done(struct http_result *r, void *arg)
{
	struct build *b = arg;
	struct dock *d = b->dock;

	if (!r->ok)
		log_debug("docker: build log post failed: %s", r->error);
	if (d == NULL)
		return;
	d->post_busy = 0;
	d->posts--;
	log_post_next(b);
}

/*
 * POST the next queued line of b, one at a time so that the server gets
 * them in order; when none is left, a pending finish follows.
 */
static void
log_post_next(struct build *b)
{
	struct dock *d = b->dock;
	struct logline *l;
	const char *hdrs[3];
	char *h1, *h2;
	int rc;

	while (!d->post_busy && (l = d->logq) != NULL) {
		d->logq = l->next;
		if (d->logq == NULL)
			d->logq_tail = &d->logq;
		h1 = xasprintf("X-DEVOPS-BUILD-ID: %s", b->build_id);
		h2 = xasprintf("X-DEVOPS-VM-SID: %s", b->vm_seq_id);
		hdrs[0] = h1;
		hdrs[1] = h2;
		hdrs[2] = NULL;
		rc = http_json_headers("POST", l->path, l->body, hdrs,
		    log_post_done, b);
		free(h1);
		free(h2);
		free(l->body);
		free(l);
		if (rc == 0) {
			d->post_busy = 1;
		} else {
			log_debug("docker: cannot post a build log line");
			d->posts--;
		}
	}
	if (d->posts == 0 && d->finish_pending)
		dock_finish(b, d->success, d->msg, d->code);
}

/*
 * Post one build-log line (GoAgent HEAD api.go AddLogLine routing): level
 * "ERROR" -> logs/red, "WARN" -> logs/yellow, else logs; logType is the
 * level ("LOG" for plain lines).
 */
static void
build_log(struct build *b, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
build_log(struct build *b, const char *level, const char *fmt, ...)
{
	const cJSON *hash = json_get(b->info, "containerHashId");
	const cJSON *ec = json_get(b->info, "executeCount");
	const char *path = "/ms/log/api/build/logs";
	struct dock *d = dock_of(b);
	struct logline *l;
	char *msg, *body;
	cJSON *o;
	va_list ap;

	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	if (strcmp(level, "ERROR") == 0)
		path = "/ms/log/api/build/logs/red";
	else if (strcmp(level, "WARN") == 0)
		path = "/ms/log/api/build/logs/yellow";
	o = cJSON_CreateObject();
	json_add_str(o, "message", msg);
	cJSON_AddNumberToObject(o, "timestamp", (double)wall_ms());
	json_add_str(o, "tag", "");
	json_add_str(o, "jobId", cJSON_IsString(hash) ? hash->valuestring : "");
	json_add_str(o, "logType", level);
	if (cJSON_IsNumber(ec))
		cJSON_AddNumberToObject(o, "executeCount", ec->valuedouble);
	body = json_print(o);
	cJSON_Delete(o);
	free(msg);
	if (d->posts >= 1000) {		/* a runaway output is cut */
		free(body);
		return;
	}
	l = xcalloc(1, sizeof(*l));
	l->path = path;
	l->body = body;
	if (d->logq_tail == NULL)
		d->logq_tail = &d->logq;
	*d->logq_tail = l;
	d->logq_tail = &l->next;
	d->posts++;
	log_post_next(b);
}

/* Post a command's output text, one build-log line per line, at level. */
static void
build_log_text(struct build *b, const char *level, const char *text)
{
	char *copy = xstrdup(text), *line, *save = NULL, *p;
	int n = 0;

	for (p = copy; (line = strtok_r(p, "\n", &save)) != NULL; p = NULL) {
		size_t l = strlen(line);
		if (l > 0 && line[l - 1] == '\r')
			line[l - 1] = '\0';
		if (str_blank(line))
			continue;
		if (++n > 200) {
			build_log(b, level, "[docker] (output cut after 200 lines)");
			break;
		}
		build_log(b, level, "[docker] %s", line);
	}
	free(copy);
}

/* 1 when a successful command's stderr reads as a warning (HEAD rules). */
static int
text_is_warning(const char *text)
{
	char *low = xstrdup(text);
	size_t i;
	int hit;

	for (i = 0; low[i] != '\0'; i++)
		if (low[i] >= 'A' && low[i] <= 'Z')
			low[i] = (char)(low[i] - 'A' + 'a');
	hit = strstr(low, "warning") != NULL || strstr(low, "warn:") != NULL ||
	    strstr(low, "deprecated") != NULL;
	free(low);
	return hit;
}

/* ---------------------------------------------------------------- steps */

/* Read at most OUT_MAX bytes of a capture file, then unlink it; new string. */
static char *
capture_take(const char *path)
{
	char *buf = xmalloc(OUT_MAX + 1);
	size_t len = 0;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd != -1) {
		while (len < OUT_MAX &&
		    (n = read(fd, buf + len, OUT_MAX - len)) > 0)
			len += (size_t)n;
		close(fd);
	}
	buf[len] = '\0';
	(void)unlink(path);
	return buf;
}

/* Unlink s from the list and free it (its child is no longer watched). */
static void
step_free(struct step *s)
{
	struct step **pp;

	for (pp = &D.steps; *pp != NULL; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	timer_cancel(&s->deadline);
	if (s->b != NULL && s->b->dock != NULL && s->b->dock->step == s)
		s->b->dock->step = NULL;
	free(s->what);
	free(s->cmdline);
	free(s->out_path);
	free(s->err_path);
	free(s->arg);
	free(s);
}

/* The step's child exited: collect output, post it, hand on. */
static void
step_exited(pid_t pid, int status, void *arg)
{
	struct step *s = arg;
	char *out = capture_take(s->out_path), *err = capture_take(s->err_path);
	int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && !s->timed_out;

	(void)pid;
	log_debug("docker: %s ended (%s)", s->cmdline, child_status_str(status));
	if (s->b != NULL) {
		if (s->timed_out)
			build_log(s->b, "ERROR", "[docker] %s: no answer within "
			    "the deadline; killed", s->what);
		if (ok && s->quiet) {
			/* e.g. image inspect: its JSON is no build log */
		} else if (ok || s->quiet) {
			build_log_text(s->b, "DEBUG", out);
			build_log_text(s->b, text_is_warning(err) && !s->quiet ?
			    "WARN" : "DEBUG", err);
		} else {
			build_log_text(s->b, "WARN", out);
			build_log_text(s->b, "ERROR", err);
		}
	}
	if (s->timed_out)
		status = -1;	/* callers treat it as a failure */
	s->pid = 0;
	s->done(s, ok ? 0 : (status == -1 ? -1 : (WIFEXITED(status) ?
	    WEXITSTATUS(status) : 128 + WTERMSIG(status))), out, err);
	free(out);
	free(err);
	step_free(s);
}

/* Deadline of a step: kill its process group; the exit handler follows. */
static void
step_deadline(void *arg)
{
	struct step *s = arg;

	if (s->pid > 0) {
		log_warnx("docker: %s took too long; killing it", s->cmdline);
		s->timed_out = 1;
		(void)kill(-s->pid, SIGKILL);
	}
}

/* Open an owner-only capture file under STEP_DIR; path returned (new). */
static int
capture_open(char **path)
{
	char tmpl[] = STEP_DIR "/cmd-XXXXXX";
	int fd;

	if (fs_mkdir_p(STEP_DIR, 0700) == -1)
		return -1;
	if ((fd = mkstemp(tmpl)) == -1)
		return -1;
	(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
	*path = xstrdup(tmpl);
	return fd;
}

/*
 * Run `<runtime> args...` as a watched child with a deadline; stdin_text
 * (or NULL) is fed through a pipe (a login password: never argv, never a
 * file). done(s, 0 | exit code | -1 timed out, stdout, stderr) follows.
 * Returns 0, or -1 with err when nothing was started.
 */
static int
step_run(struct build *b, const char *what, char *const args[],
    const char *stdin_text, int deadline_ms, int quiet, step_fn done,
    char *cb_arg, char *err, size_t errlen)
{
	struct spawn_opts o;
	struct step *s;
	char *rt = runtime_path(err, errlen), **argv;
	int ofd = -1, efd = -1, pfd[2] = { -1, -1 };
	size_t n, i;
	pid_t pid;

	if (rt == NULL) {
		free(cb_arg);
		return -1;
	}
	for (n = 0; args[n] != NULL; n++)
		;
	argv = xcalloc(n + 2, sizeof(*argv));
	argv[0] = rt;
	for (i = 0; i < n; i++)
		argv[i + 1] = args[i];
	s = xcalloc(1, sizeof(*s));
	s->b = b;
	s->what = xstrdup(what);
	s->quiet = quiet;
	s->done = done;
	s->arg = cb_arg;
	{
		const char *base = strrchr(rt, '/');
		s->cmdline = cmdline_masked(base ? base + 1 : rt, args);
	}
	if ((ofd = capture_open(&s->out_path)) == -1 ||
	    (efd = capture_open(&s->err_path)) == -1 ||
	    (stdin_text != NULL && pipe(pfd) == -1)) {
		snprintf(err, errlen, "cannot prepare the %s command: %s", what,
		    strerror(errno));
		goto fail;
	}
	if (stdin_text != NULL) {
		(void)fcntl(pfd[0], F_SETFD, FD_CLOEXEC);
		(void)fcntl(pfd[1], F_SETFD, FD_CLOEXEC);
		/* A password fits the pipe buffer: the write never blocks. */
		if (strlen(stdin_text) > 4096 || fs_write_all(pfd[1], stdin_text,
		    strlen(stdin_text)) == -1) {
			snprintf(err, errlen, "cannot hand the password to %s",
			    what);
			goto fail;
		}
		close(pfd[1]);
		pfd[1] = -1;
	}
	memset(&o, 0, sizeof(o));
	o.path = rt;
	o.argv = argv;
	o.envp = spawn_envp;
	o.cwd = A.workdir;
	o.new_session = 1;
	o.stdin_fd = pfd[0];
	o.stdout_fd = ofd;
	o.stderr_fd = efd;
	if (b != NULL)
		build_log(b, "DEBUG", "[docker] %s", s->cmdline);
	if (b != NULL)
		log_info("docker: run %s", s->cmdline);
	else
		log_debug("docker: run %s", s->cmdline);
	if ((pid = child_spawn(&o, err, errlen)) == -1)
		goto fail;
	close(ofd);
	close(efd);
	if (pfd[0] != -1)
		close(pfd[0]);
	free(argv);
	free(rt);
	s->pid = pid;
	timer_init(&s->deadline, "docker-step", step_deadline, s);
	timer_set(&s->deadline, deadline_ms);
	s->next = D.steps;
	D.steps = s;
	if (b != NULL && b->dock != NULL)
		b->dock->step = s;
	child_watch(pid, step_exited, s);
	return 0;
fail:
	if (ofd != -1)
		close(ofd);
	if (efd != -1)
		close(efd);
	if (pfd[0] != -1)
		close(pfd[0]);
	if (pfd[1] != -1)
		close(pfd[1]);
	if (s->out_path)
		(void)unlink(s->out_path);
	if (s->err_path)
		(void)unlink(s->err_path);
	free(s->what);
	free(s->cmdline);
	free(s->out_path);
	free(s->err_path);
	free(s->arg);
	free(s);
	free(argv);
	free(rt);
	return -1;
}

/* ---------------------------------------------------------------- helpers */

/* The dockerBuildInfo of b (checked at claim). */
static const cJSON *
dbi_of(const struct build *b)
{
	return json_get(b->info, "dockerBuildInfo");
}

/* String member of o, or "" (borrowed). */
static const char *
str_of(const cJSON *o, const char *key)
{
	const cJSON *it = o ? json_get(o, key) : NULL;

	return it != NULL && cJSON_IsString(it) ? it->valuestring : "";
}

/* The build's dock, created on first use. */
static struct dock *
dock_of(struct build *b)
{
	if (b->dock == NULL) {
		b->dock = xcalloc(1, sizeof(*b->dock));
		timer_init(&b->dock->retry, "docker-recover", NULL, NULL);
	}
	return b->dock;
}

/* Remove the temp --config dir of a login (it holds the registry auth). */
static void
cfgdir_remove(struct dock *d)
{
	if (d->cfgdir != NULL) {
		if (fs_rm_rf(d->cfgdir) == -1)
			log_warn("docker: cannot remove %s", d->cfgdir);
		free(d->cfgdir);
		d->cfgdir = NULL;
	}
}

/* Fail b before its container exists. */
static void
fail_early(struct build *b, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
fail_early(struct build *b, int code, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	build_log(b, "ERROR", "[docker] %s", msg);
	cfgdir_remove(dock_of(b));
	dock_finish(b, 0, msg, code);
	free(msg);
}

/* First line of text, trimmed, at most 300 bytes (new string). */
static char *
first_lines(const char *text)
{
	char *s = str_trim(xstrndup(text, 600));
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if (s[i] == '\n' || s[i] == '\r')
			s[i] = ' ';
	return s;
}

/* ---------------------------------------------------------------- the end */

/* `rm -f` done: now the outcome may be reported. */
static void
rm_done(struct step *s, int rc, char *out, char *err)
{
	struct build *b = s->b;
	struct dock *d = b->dock;

	(void)out;
	if (rc != 0)
		log_warnx("build %s: container %s not removed (%s); the sweep "
		    "tries again", b->key, b->container, err);
	dock_finish(b, d->success, d->msg, d->code);
}

/* Remove the container, then report the outcome kept in b->dock. */
static void
finish_after_rm(struct build *b, int success, const char *msg, int code)
{
	struct dock *d = dock_of(b);
	char err[300];
	char *args[] = { "rm", "-f", b->container, NULL };

	d->success = success;
	free(d->msg);
	d->msg = xstrdup(msg);
	d->code = code;
	if (!success)
		build_log(b, "ERROR", "[docker] %s", msg);
	if (step_run(b, "rm", args, NULL, T_SHORT, 0, rm_done, NULL, err,
	    sizeof(err)) == -1) {
		log_warnx("build %s: cannot remove container %s: %s", b->key,
		    b->container, err);
		dock_finish(b, success, msg, code);
	}
}

/* `logs` of a failed container done: compose the failure message. */
static void
logs_done(struct step *s, int rc, char *out, char *err)
{
	struct build *b = s->b;
	char *path, *file = NULL, *msg, *clog;
	size_t len = 0;
	int code = 0;

	(void)rc;
	clog = xasprintf("%s%s", out, err);
	str_trim(clog);
	code = s->arg ? (int)strtol(s->arg, NULL, 10) : -1;
	path = xasprintf("docker_workspace/logs/%s/%s/docker.log", b->build_id,
	    b->vm_seq_id);
	if (fs_read_regular(path, DOCKER_LOG_MAX + 1, &file, &len) == -1) {
		if (errno == ENOENT)
			msg = xstrdup(clog);
		else if (errno == EFBIG) {
			msg = xstrdup("");
			if (*clog)
				build_log(b, "DEBUG", "[docker] %s", clog);
		} else
			msg = xasprintf("read log file error %s", strerror(errno));
	} else {
		str_trim(file);
		msg = xstrdup(file);
		if (*clog)
			build_log_text(b, "DEBUG", clog);
	}
	{
		char *full = xasprintf("container %s exit code %d %s", b->container,
		    code, msg);
		finish_after_rm(b, 0, full, ERR_DOCKER_RUN);
		free(full);
	}
	free(file);
	free(msg);
	free(clog);
	free(path);
}

/* `wait` done: stdout is the container's exit code. */
static void
wait_done(struct step *s, int rc, char *out, char *err)
{
	struct build *b = s->b;
	long long code;
	char e[300], *t;
	char *args[] = { "logs", b->container, NULL };

	if (rc == -1) {
		/* The deadline only bounds the CLI: the container may run on. */
		log_info("build %s: `wait` restarted after its deadline", b->key);
		wait_run(b);
		return;
	}
	t = str_trim(xstrdup(out));
	if (rc != 0 || str_to_ll(t, &code) == -1) {
		char *m = first_lines(err), *msg;
		msg = xasprintf("waiting for container %s failed: %s", b->container,
		    *m ? m : "no exit code");
		finish_after_rm(b, 0, msg, ERR_DOCKER_RUN);
		free(m);
		free(msg);
		free(t);
		return;
	}
	free(t);
	log_info("build %s: container %s exited with %lld", b->key, b->container,
	    code);
	if (code == 0) {
		build_log(b, "LOG", "[docker] container %s exited with 0",
		    b->container);
		finish_after_rm(b, 1, "", 0);
		return;
	}
	if (step_run(b, "logs", args, NULL, T_SHORT, 1, logs_done,
	    xasprintf("%lld", code), e, sizeof(e)) == -1) {
		char *msg = xasprintf("container %s exit code %lld (its log could "
		    "not be read: %s)", b->container, code, e);
		finish_after_rm(b, 0, msg, ERR_DOCKER_RUN);
		free(msg);
	}
}

/* Watch the container's end with `wait` (a long child, restarted hourly). */
static void
wait_run(struct build *b)
{
	char err[300];
	char *args[] = { "wait", b->container, NULL };

	if (step_run(b, "wait", args, NULL, T_WAIT, 0, wait_done, NULL, err,
	    sizeof(err)) == -1) {
		char *msg = xasprintf("cannot wait for container %s: %s",
		    b->container, err);
		finish_after_rm(b, 0, msg, ERR_DOCKER_RUN);
		free(msg);
	}
}

/* `start` done. */
static void
start_done(struct step *s, int rc, char *out, char *err)
{
	struct build *b = s->b;

	(void)out;
	if (rc != 0) {
		char *m = first_lines(err), *msg;
		msg = xasprintf("starting container %s failed: %s", b->container,
		    *m ? m : "no reason given");
		finish_after_rm(b, 0, msg, ERR_DOCKER_START);
		free(m);
		free(msg);
		return;
	}
	log_info("build %s: container %s started", b->key, b->container);
	build_log(b, "LOG", "[docker] container %s started", b->container);
	wait_run(b);
}

/* `create` done: start it. */
static void
create_done(struct step *s, int rc, char *out, char *err)
{
	struct build *b = s->b;
	char e[300];
	char *args[] = { "start", b->container, NULL };

	(void)out;
	if (rc != 0) {
		char *m = first_lines(err), *msg;
		msg = xasprintf("creating container %s failed: %s", b->container,
		    *m ? m : "no reason given");
		finish_after_rm(b, 0, msg, ERR_DOCKER_CREATE);
		free(m);
		free(msg);
		return;
	}
	if (step_run(b, "start", args, NULL, T_SHORT, 0, start_done, NULL, e,
	    sizeof(e)) == -1) {
		char *msg = xasprintf("cannot start container %s: %s", b->container, e);
		finish_after_rm(b, 0, msg, ERR_DOCKER_START);
		free(msg);
	}
}

/* ---------------------------------------------------------------- create */

/* A growable argv. */
struct argv {
	char	**v;
	size_t	 n, cap;
};

/* Append a copy of s. */
static void
av_add(struct argv *a, const char *s)
{
	if (a->n + 2 > a->cap) {
		a->cap = a->cap ? a->cap * 2 : 32;
		a->v = xrealloc(a->v, a->cap * sizeof(*a->v));
	}
	a->v[a->n++] = xstrdup(s);
	a->v[a->n] = NULL;
}

/* Append a formatted word. */
static void
av_addf(struct argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
av_addf(struct argv *a, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = xvasprintf(fmt, ap);
	va_end(ap);
	av_add(a, s);
	free(s);
}

/* Free the words. */
static void
av_free(struct argv *a)
{
	size_t i;

	for (i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	memset(a, 0, sizeof(*a));
}

/* 1 when an env name is usable as a container variable name. */
static int
env_name_ok(const char *k)
{
	return k[0] != '\0' && !(k[0] >= '0' && k[0] <= '9') &&
	    only_chars(k, NAME_CHARS "_.") && strlen(k) <= 256;
}

/* Absolute path of p (relative: to WORKDIR); new string. */
static char *
abs_path(const char *p)
{
	return p[0] == '/' ? xstrdup(p) : xasprintf("%s/%s", A.workdir, p);
}

/* A volume "host:ctr[:mode]" with "./x", ".\x" or "." host made absolute. */
static char *
volume_abs(const char *v)
{
	if (strcmp(v, ".") == 0 || str_starts(v, ".:"))
		return xasprintf("%s%s", A.workdir, v + 1);
	if (str_starts(v, "./") || str_starts(v, ".\\"))
		return xasprintf("%s/%s", A.workdir, v + 2);
	return xstrdup(v);
}

/* Random letters for the container name. */
static void
rand_letters(char *out, size_t n)
{
	static const char set[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
	size_t i;

	for (i = 0; i < n; i++)
		out[i] = set[random() % (long)(sizeof(set) - 1)];
	out[n] = '\0';
}

/*
 * The `create` arguments (GoAgent HEAD order), with our labels after the
 * name. Creates the mounted directories first. 0, or -1 with err.
 */
static int
create_args(struct build *b, struct argv *a, struct envlist *env, char *err,
    size_t errlen)
{
	const cJSON *dbi = dbi_of(b), *opts = json_get(dbi, "options"), *it, *arr;
	const char *pipeline = str_of(b->info, "pipelineId");
	char *gw, *ws, *logs, *jar, *init, *s;
	const char *cap;
	int user_net = 0;
	char *jdk = abs_path(A.cfg.jdk_dir_resolved ? A.cfg.jdk_dir_resolved : "jdk");
	char *jdk17 = abs_path(A.cfg.jdk17_dir_resolved ?
	    A.cfg.jdk17_dir_resolved : "jdk17");
	int have17 = fs_is_dir(jdk17);

	av_add(a, "create");
	av_add(a, "--name");
	av_add(a, b->container);
	av_add(a, "--label");
	av_addf(a, DOCKER_LABEL_OWNER "=%s", D.owner);
	av_add(a, "--label");
	av_addf(a, DOCKER_LABEL_BUILD "=%s", b->key);
	if (cJSON_IsObject(opts)) {
		arr = json_get(opts, "volumes");
		if (!cJSON_IsArray(arr))
			arr = NULL;
		cJSON_ArrayForEach(it, arr) {
			av_add(a, "--volume");
			s = volume_abs(it->valuestring);
			av_add(a, s);
			free(s);
		}
		arr = json_get(opts, "mounts");
		if (!cJSON_IsArray(arr))
			arr = NULL;
		cJSON_ArrayForEach(it, arr) {
			av_add(a, "--mount");
			av_add(a, it->valuestring);
		}
		if (cJSON_IsString(it = json_get(opts, "gpus"))) {
			av_add(a, "--gpus");
			av_add(a, it->valuestring);
		}
		if (cJSON_IsTrue(json_get(opts, "privileged")))
			av_add(a, "--privileged");
		arr = json_get(opts, "network");
		if (!cJSON_IsArray(arr))
			arr = NULL;
		cJSON_ArrayForEach(it, arr) {
			av_add(a, "--network");
			av_add(a, it->valuestring);
			user_net = 1;
		}
		if (cJSON_IsString(it = json_get(opts, "user"))) {
			av_add(a, "--user");
			av_add(a, it->valuestring);
		}
	}
	if (!user_net) {
		av_add(a, "--network");
		av_add(a, "bridge");
	}
	gw = config_gateway_base(A.cfg.gateway);
	av_add(a, "-e");
	av_addf(a, "devops_project_id=%s", A.cfg.project_id);
	av_add(a, "-e");
	av_addf(a, "devops_agent_id=%s", str_of(dbi, "agentId"));
	/* `-e NAME` takes the value from the CLI's environment: not in argv. */
	av_add(a, "-e");
	av_add(a, "devops_agent_secret_key");
	envlist_set(env, "devops_agent_secret_key", str_of(dbi, "secretKey"));
	av_add(a, "-e");
	av_addf(a, "devops_gateway=%s", gw);
	av_add(a, "-e");
	av_add(a, "agent_build_env=DOCKER");
	free(gw);
	if (strcmp(A.os, "linux") == 0 && have17) {
		av_add(a, "-e");
		av_add(a, "DEVOPS_AGENT_JDK_8_PATH=/usr/local/jre8/bin/java");
		av_add(a, "-e");
		av_add(a, "DEVOPS_AGENT_JDK_17_PATH=/usr/local/jre/bin/java");
	}
	cJSON_ArrayForEach(it, A.envs) {
		if (it->string == NULL || !cJSON_IsString(it))
			continue;
		if (!env_name_ok(it->string) || has_ctl(it->valuestring)) {
			build_log(b, "WARN", "[docker] heartbeat variable '%.60s' "
			    "is not passed to the container (bad name or value)",
			    it->string);
			continue;
		}
		av_add(a, "-e");
		if (key_is_secret(it->string)) {
			av_add(a, it->string);
			envlist_set(env, it->string, it->valuestring);
		} else {
			av_addf(a, "%s=%s", it->string, it->valuestring);
		}
	}
	cap = getenv("DEVOPS_AGENT_DOCKER_CAP_ADD");
	if (cap != NULL && !str_blank(cap)) {
		char *c = str_trim(xstrdup(cap));
		if (c[0] == '-' || has_ctl(c)) {
			snprintf(err, errlen, "DEVOPS_AGENT_DOCKER_CAP_ADD '%.60s' is "
			    "not a capability", c);
			free(c);
			goto fail;
		}
		av_add(a, "--cap-add");
		av_add(a, c);
		free(c);
	}
	if (have17) {
		av_add(a, "--mount");
		av_addf(a, "type=bind,source=%s,target=/usr/local/jre,readonly", jdk17);
		av_add(a, "--mount");
		av_addf(a, "type=bind,source=%s,target=/usr/local/jre8,readonly", jdk);
	} else {
		av_add(a, "--mount");
		av_addf(a, "type=bind,source=%s,target=/usr/local/jre,readonly", jdk);
	}
	jar = xasprintf("%s/worker-agent.jar", A.workdir);
	init = xasprintf("%s/" INIT_SCRIPT, A.workdir);
	av_add(a, "--mount");
	av_addf(a, "type=bind,source=%s,target=/data/worker-agent.jar,readonly", jar);
	av_add(a, "--mount");
	av_addf(a, "type=bind,source=%s,target=/data/init.sh,readonly", init);
	free(jar);
	free(init);
	if (strcmp(b->workspace, NO_MOUNT) != 0) {
		ws = *b->workspace ? xstrdup(b->workspace) :
		    xasprintf("%s/docker_workspace/data/%s/%s", A.workdir,
		    *pipeline ? pipeline : "none", b->vm_seq_id);
		if (*pipeline && !only_chars(pipeline, NAME_CHARS "._-")) {
			snprintf(err, errlen, "pipelineId '%.60s' cannot name a "
			    "directory", pipeline);
			free(ws);
			goto fail;
		}
		if (fs_mkdir_p(ws, 0755) == -1) {
			snprintf(err, errlen, "cannot create the workspace %s: %s",
			    ws, strerror(errno));
			free(ws);
			goto fail;
		}
		av_add(a, "--mount");
		av_addf(a, "type=bind,source=%s,target=/data/devops/workspace", ws);
		free(ws);
	}
	logs = xasprintf("%s/docker_workspace/logs/%s/%s", A.workdir, b->build_id,
	    b->vm_seq_id);
	if (fs_mkdir_p(logs, 0755) == -1) {
		snprintf(err, errlen, "cannot create %s: %s", logs, strerror(errno));
		free(logs);
		goto fail;
	}
	av_add(a, "--mount");
	av_addf(a, "type=bind,source=%s,target=/data/devops/logs", logs);
	free(logs);
	av_add(a, "--entrypoint");
	av_add(a, "/bin/sh");
	av_add(a, b->dock->image_str);
	av_add(a, "-c");
	av_add(a, "/data/init.sh");
	free(jdk);
	free(jdk17);
	return 0;
fail:
	free(jdk);
	free(jdk17);
	return -1;
}

/* The image is there: create the container (journaled first). */
static void
create_run(struct build *b)
{
	struct argv a = { 0 };
	struct envlist env;
	char err[400], letters[9];
	int rc;

	cfgdir_remove(b->dock);
	if (fs_mkdir_p("docker_build_tmp", 0755) == -1) {
		fail_early(b, ERR_DOCKER_MKDIR, "cannot create docker_build_tmp: %s",
		    strerror(errno));
		return;
	}
	rand_letters(letters, 8);
	free(b->container);
	b->container = xasprintf("dispatch-%s-%s-%s", b->build_id, b->vm_seq_id,
	    letters);
	envlist_init(&env, 1);
	if (create_args(b, &a, &env, err, sizeof(err)) == -1) {
		free(b->container);
		b->container = NULL;
		av_free(&a);
		envlist_free(&env);
		fail_early(b, ERR_DOCKER_OPTIONS, "container options: %s", err);
		return;
	}
	/* From here on a restarted agent looks for this container. */
	b->state = B_RUNNING;
	b->pid = 0;
	(void)journal_write(b);
	spawn_envp = env.v;
	rc = step_run(b, "create", a.v, NULL, T_SHORT, 0, create_done, NULL, err,
	    sizeof(err));
	spawn_envp = NULL;
	envlist_free(&env);
	av_free(&a);
	if (rc == -1) {
		char *msg = xasprintf("cannot create container %s: %s",
		    b->container, err);
		finish_after_rm(b, 0, msg, ERR_DOCKER_CREATE);
		free(msg);
	}
}

/* ---------------------------------------------------------------- pull */

/* `pull` done. */
static void
pull_done(struct step *s, int rc, char *out, char *err)
{
	struct build *b = s->b;

	(void)out;
	cfgdir_remove(b->dock);
	if (rc != 0) {
		char *m = first_lines(err);
		fail_early(b, ERR_DOCKER_PULL, "pulling image %s failed: %s",
		    b->dock->image, *m ? m : (rc == -1 ? "timed out" : "no reason given"));
		free(m);
		return;
	}
	create_run(b);
}

/* Pull (with the temp --config dir after a login when there is one). */
static void
pull_run(struct build *b)
{
	struct dock *d = b->dock;
	char err[300], *auth = d->cfgdir ? xasprintf("%s/auth.json", d->cfgdir) : NULL;
	char *with_cfg[] = { "--config", d->cfgdir, "pull", d->image, NULL };
	char *with_auth[] = { "pull", "--authfile", auth, d->image, NULL };
	char *plain[] = { "pull", d->image, NULL };
	char **args = d->cfgdir == NULL ? plain : runtime_is_podman() ?
	    with_auth : with_cfg;

	build_log(b, "LOG", "[docker] pulling image %s", d->image);
	if (step_run(b, "pull", args, NULL, T_PULL, 0, pull_done, NULL, err,
	    sizeof(err)) == -1)
		fail_early(b, ERR_DOCKER_PULL, "cannot pull image %s: %s",
		    d->image, err);
	free(auth);
}

/* `login` done. */
static void
login_done(struct step *s, int rc, char *out, char *err)
{
	struct build *b = s->b;

	(void)out;
	if (rc != 0) {
		char *m = first_lines(err);
		fail_early(b, ERR_DOCKER_PULL, "registry login for image %s failed "
		    "(check the credential of this image): %s", b->dock->image,
		    *m ? m : (rc == -1 ? "timed out" : "no reason given"));
		free(m);
		return;
	}
	pull_run(b);
}

/* Log in (password on stdin, private --config dir), then pull. */
static void
login_run(struct build *b, const char *user, const char *password)
{
	struct dock *d = b->dock;
	char tmpl[] = STEP_DIR "/bkci-docker-config-XXXXXX", err[300];
	char *reg = docker_registry_of(d->image), *auth = NULL;
	char *args[10];
	int n = 0;

	if (fs_mkdir_p(STEP_DIR, 0700) == -1 || mkdtemp(tmpl) == NULL) {
		free(reg);
		fail_early(b, ERR_DOCKER_PULL, "cannot create a registry config "
		    "directory: %s", strerror(errno));
		return;
	}
	d->cfgdir = abs_path(tmpl);
	if (runtime_is_podman()) {
		/* Podman ignores --config; its login file is named instead. */
		auth = xasprintf("%s/auth.json", d->cfgdir);
		args[n++] = "login";
		args[n++] = "--authfile";
		args[n++] = auth;
	} else {
		args[n++] = "--config";
		args[n++] = d->cfgdir;
		args[n++] = "login";
	}
	args[n++] = "-u";
	args[n++] = (char *)user;
	args[n++] = "--password-stdin";
	if (*reg)
		args[n++] = reg;
	args[n] = NULL;
	if (step_run(b, "login", args, password, T_LOGIN, 0, login_done, NULL,
	    err, sizeof(err)) == -1)
		fail_early(b, ERR_DOCKER_PULL, "cannot log in to the registry of "
		    "%s: %s", d->image, err);
	free(reg);
	free(auth);
}

/* Whether to pull, given whether the image is present (HEAD rules). */
static void
pull_decide(struct build *b, int present)
{
	const cJSON *dbi = dbi_of(b), *cred = json_get(dbi, "credential");
	const char *policy = str_of(dbi, "imagePullPolicy");
	const char *user = str_of(cred, "user"), *pw = str_of(cred, "password");
	struct dock *d = b->dock;
	char *tag = strrchr(d->image_str, ':');
	int latest = tag != NULL && strchr(tag, '/') == NULL &&
	    strcmp(tag + 1, "latest") == 0;
	int pull;

	if (strcmp(policy, "always") == 0)
		pull = 1;
	else if (strcmp(policy, "if-not-present") == 0)
		pull = !present;
	else
		pull = latest || !present;
	if (!pull) {
		build_log(b, "LOG", "[docker] image %s exists locally; not pulled",
		    d->image);
		create_run(b);
	} else if (*user && *pw) {
		login_run(b, user, pw);
	} else {
		pull_run(b);
	}
}

/* `image inspect` done: exit 0 means present. */
static void
inspect_done(struct step *s, int rc, char *out, char *err)
{
	(void)out;
	(void)err;
	pull_decide(s->b, rc == 0);
}

/* ---------------------------------------------------------------- launch */

static void launch_image(struct build *b);

/* The init script download ended: go on, or fail with 2128047. */
static void
init_done(struct http_result *r, void *arg)
{
	struct build *b = arg;

	if (r->ok && r->code >= 200 && r->code < 300 && fs_is_file(INIT_SCRIPT)) {
		log_info("build %s: " INIT_SCRIPT " downloaded", b->key);
		launch_image(b);
		return;
	}
	if (r->write_errno != 0)
		agent_check_io_error(r->write_errno, INIT_SCRIPT);
	fail_early(b, ERR_DOCKER_INIT_DOWNLOAD, "cannot download " INIT_SCRIPT
	    " from the server: %s", r->error[0] ? r->error :
	    r->code ? "unexpected HTTP status" : "no response");
}

/* Download the init script straight into the install dir (GoAgent HEAD). */
static void
init_download(struct build *b)
{
	char *path = xasprintf(EP_DOWNLOAD "?file=script/%s/" INIT_SCRIPT,
	    strcmp(A.os, "macos") == 0 ? "macos" : "linux");
	/* The upgrade's limits of this file (docs/upgrader.md): 1 MiB, 1 min. */
	struct http_dl_limits lim = { .max_bytes = 1024LL * 1024, .total_ms = 60000,
	    .stall_sec = 30 };

	log_info("build %s: " INIT_SCRIPT " missing; downloading it", b->key);
	if (http_download(path, INIT_SCRIPT, NULL, &lim, init_done, b) == -1)
		fail_early(b, ERR_DOCKER_INIT_DOWNLOAD, "cannot start the download "
		    "of " INIT_SCRIPT);
	free(path);
}

/* Start a container build (docker.h). */
void
docker_launch(struct build *b)
{
	const cJSON *dbi = dbi_of(b), *cred;
	char err[400];

	if (docker_info_check(dbi, b->workspace, err, sizeof(err)) == -1) {
		fail_early(b, ERR_DOCKER_OPTIONS, "malformed dockerBuildInfo from "
		    "the server: %s", err);
		return;
	}
	if (!A.cfg.docker_enable) {
		A.cfg.docker_enable = 1;
		agent_save_config();
	}
	cred = json_get(dbi, "credential");
	if (*str_of(cred, "errMsg") != '\0') {
		fail_early(b, ERR_DOCKER_CREDENTIAL, "the server could not resolve "
		    "the registry credential: %.300s", str_of(cred, "errMsg"));
		return;
	}
	if (!fs_is_file(INIT_SCRIPT)) {
		init_download(b);
		return;
	}
	launch_image(b);
}

/* The init script is in place: make it executable, then the image steps. */
static void
launch_image(struct build *b)
{
	const cJSON *dbi = dbi_of(b);
	const char *policy;
	struct dock *d;
	char err[400];
	int check;

	if (chmod(INIT_SCRIPT, 0755) == -1) {
		fail_early(b, ERR_DOCKER_CHMOD, "cannot chmod " INIT_SCRIPT ": %s",
		    strerror(errno));
		return;
	}
	if (D.engine == 0) {
		fail_early(b, ERR_DOCKER_PULL, "the container engine is not "
		    "available: %s", D.engine_why ? D.engine_why : "probe failed");
		return;
	}
	d = dock_of(b);
	d->image = str_trim(xstrdup(str_of(dbi, "image")));
	d->image_str = xstrdup(image_strip(d->image));
	policy = str_of(dbi, "imagePullPolicy");
	if (strcmp(policy, "always") == 0) {
		check = 0;
	} else if (strcmp(policy, "if-not-present") == 0) {
		check = 1;
	} else {
		char *tag = strrchr(d->image_str, ':');
		check = !(tag != NULL && strchr(tag, '/') == NULL &&
		    strcmp(tag + 1, "latest") == 0);
	}
	log_info("build %s: container build, image %s", b->key, d->image);
	if (check) {
		char *args[] = { "image", "inspect", d->image, NULL };
		if (step_run(b, "image inspect", args, NULL, T_SHORT, 1,
		    inspect_done, NULL, err, sizeof(err)) == -1)
			fail_early(b, ERR_DOCKER_PULL, "cannot run the container "
			    "runtime: %s", err);
		return;
	}
	pull_decide(b, 0);
}

/* ---------------------------------------------------------------- recover */

static void recover_inspect(void *arg);

/* `inspect` of a recovered container done. */
static void
recover_done(struct step *s, int rc, char *out, char *err)
{
	struct build *b = s->b;
	char *st = str_trim(xstrdup(out));

	if (rc != 0) {
		if (strstr(err, "No such") != NULL || strstr(err, "no such") != NULL) {
			char *msg = xasprintf("container %s is gone (removed while "
			    "the agent was down); its outcome is unknown",
			    b->container);
			dock_finish(b, 0, msg, ERR_DOCKER_RUN);
			free(msg);
		} else {
			log_warnx("build %s: cannot inspect container %s (%s); "
			    "retrying in %d s", b->key, b->container, err,
			    RECOVER_RETRY / 1000);
			timer_init(&b->dock->retry, "docker-recover",
			    recover_inspect, b);
			timer_set(&b->dock->retry, RECOVER_RETRY);
		}
	} else if (strcmp(st, "created") == 0) {
		finish_after_rm(b, 0, "the agent restarted before the container "
		    "started", ERR_DOCKER_START);
	} else {
		log_info("build %s: container %s is %s; re-adopted", b->key,
		    b->container, st);
		wait_run(b);
	}
	free(st);
}

/* Inspect a recovered container's state. */
static void
recover_inspect(void *arg)
{
	struct build *b = arg;
	char err[300];
	char *args[] = { "inspect", "--type", "container", "--format",
	    "{{.State.Status}}", b->container, NULL };

	if (step_run(b, "inspect", args, NULL, T_SHORT, 1, recover_done, NULL,
	    err, sizeof(err)) == -1) {
		log_warnx("build %s: cannot inspect container %s: %s; retrying",
		    b->key, b->container, err);
		timer_init(&b->dock->retry, "docker-recover", recover_inspect, b);
		timer_set(&b->dock->retry, RECOVER_RETRY);
	}
}

/* Re-adopt a container build (docker.h). */
void
docker_recover(struct build *b)
{
	struct dock *d = dock_of(b);

	b->adopted = 1;
	d->image = xstrdup(str_of(dbi_of(b), "image"));
	d->image_str = xstrdup(image_strip(d->image));
	log_info("build %s: looking for container %s", b->key, b->container);
	recover_inspect(b);
}

/* Free a build's container state (docker.h). */
void
docker_build_free(struct build *b)
{
	struct dock *d = b->dock;
	struct step *s;

	if (d == NULL)
		return;
	timer_cancel(&d->retry);
	if ((s = d->step) != NULL) {
		child_unwatch(s->pid);
		if (s->pid > 0)
			(void)kill(-s->pid, SIGKILL);
		(void)unlink(s->out_path);
		(void)unlink(s->err_path);
		s->b = NULL;
		step_free(s);
	}
	cfgdir_remove(d);
	while (d->logq != NULL) {
		struct logline *l = d->logq;
		d->logq = l->next;
		free(l->body);
		free(l);
	}
	free(d->image);
	free(d->image_str);
	free(d->msg);
	free(d);
	b->dock = NULL;
}

/* ---------------------------------------------------------------- probe, sweep */

/* `version` answered: the engine is up when it printed a server version. */
static void
probe_done(struct step *s, int rc, char *out, char *err)
{
	int up = rc == 0 && !str_blank(out);
	char *why = first_lines(*err ? err : (rc == -1 ? "timed out" :
	    "no server version"));

	(void)s;
	D.probe_busy = 0;
	if (up != D.engine) {
		if (up)
			log_info("docker: container engine up (server %s)",
			    str_trim(out));
		else
			log_warnx("docker: container engine not available: %s", why);
		D.engine = up;
		poll_kick();
	}
	free(D.engine_why);
	D.engine_why = up ? NULL : why;
	if (up)
		free(why);
	timer_set(&D.probe_timer, A.fast ? 2000 : PROBE_PERIOD);
}

/* Probe the engine. */
static void
probe_run(void *arg)
{
	char err[300];
	char *args[] = { "version", "--format", "{{.Server.Version}}", NULL };

	(void)arg;
	if (D.probe_busy)
		return;
	if (step_run(NULL, "version", args, NULL, T_PROBE, 1, probe_done, NULL,
	    err, sizeof(err)) == -1) {
		if (D.engine != 0)
			log_warnx("docker: container engine not available: %s", err);
		if (D.engine != 0)
			poll_kick();
		D.engine = 0;
		free(D.engine_why);
		D.engine_why = xstrdup(err);
		timer_set(&D.probe_timer, A.fast ? 2000 : PROBE_PERIOD);
		return;
	}
	D.probe_busy = 1;
}

/* A sweep's `rm -f` done. */
static void
sweep_rm_done(struct step *s, int rc, char *out, char *err)
{
	(void)out;
	if (rc != 0)
		log_warnx("docker: cannot remove container %s: %s", s->arg, err);
	else
		log_info("docker: removed container %s of a gone build", s->arg);
}

/* 1 when name is the container of a build in the table. */
static int
container_known(const char *name)
{
	struct build *b;

	for (b = build_first(); b != NULL; b = b->next)
		if (b->container != NULL && b->state == B_RUNNING &&
		    strcmp(b->container, name) == 0)
			return 1;
	return 0;
}

/* `ps -a` of our containers done: remove those of gone builds. */
static void
sweep_done(struct step *s, int rc, char *out, char *err)
{
	char *save = NULL, *p, *name, e[300];

	(void)s;
	D.sweep_busy = 0;
	timer_set(&D.sweep_timer, A.fast ? 5000 : SWEEP_PERIOD);
	if (rc != 0) {
		log_debug("docker: sweep skipped: %s", err);
		return;
	}
	for (p = out; (name = strtok_r(p, "\n", &save)) != NULL; p = NULL) {
		str_trim(name);
		if (*name == '\0' || container_known(name))
			continue;
		if (!only_chars(name, NAME_CHARS "._-"))
			continue;
		{
			char *args[] = { "rm", "-f", name, NULL };
			log_info("docker: container %s belongs to no running build; "
			    "removing it", name);
			if (step_run(NULL, "rm", args, NULL, T_SHORT, 1,
			    sweep_rm_done, xstrdup(name), e, sizeof(e)) == -1)
				log_warnx("docker: cannot remove %s: %s", name, e);
		}
	}
}

/* List the containers this install made. */
static void
sweep_run(void *arg)
{
	char err[300], *filter = xasprintf("label=" DOCKER_LABEL_OWNER "=%s",
	    D.owner);
	char *args[] = { "ps", "-a", "--filter", filter, "--format",
	    "{{.Names}}", NULL };

	(void)arg;
	if (!D.sweep_busy && D.engine != 0) {
		if (step_run(NULL, "ps", args, NULL, T_SHORT, 1, sweep_done, NULL,
		    err, sizeof(err)) == 0)
			D.sweep_busy = 1;
	}
	if (!D.sweep_busy)
		timer_set(&D.sweep_timer, A.fast ? 5000 : SWEEP_PERIOD);
	free(filter);
}

/*
 * The agent exits: kill the runtime commands that belong to no build (the
 * engine probe, the sweep), whose deadlines nobody would enforce; a build's
 * commands go on and the next agent re-adopts the build (docker.h).
 */
void
docker_stop(void)
{
	struct step *s;

	for (s = D.steps; s != NULL; s = s->next)
		if (s->b == NULL && s->pid > 0) {
			(void)kill(-s->pid, SIGKILL);
			(void)kill(s->pid, SIGKILL);
		}
}

/* Start the probe and the sweep (docker.h). */
void
docker_start(void)
{
	char md5[MD5_HEX_LEN];

	/*
	 * Output files and registry logins of commands of a previous run (a
	 * kill -9 mid-pull leaves its login there): nothing of ours runs yet.
	 */
	if (fs_rm_rf(STEP_DIR) == -1 && errno != ENOENT)
		log_warn("docker: cannot clear %s", STEP_DIR);
	md5_hex(A.workdir, strlen(A.workdir), md5);
	free(D.owner);
	D.owner = xasprintf("%s-%.12s", A.cfg.agent_id ? A.cfg.agent_id : "", md5);
	timer_init(&D.probe_timer, "docker-probe", probe_run, NULL);
	timer_init(&D.sweep_timer, "docker-sweep", sweep_run, NULL);
	/* idle cost: both ride on the next wakeup (an ask every 5 s) */
	timer_set_slack(&D.probe_timer, A.fast ? 0 : HOUSEKEEP_SLACK);
	timer_set_slack(&D.sweep_timer, A.fast ? 0 : HOUSEKEEP_SLACK);
	probe_run(NULL);
	timer_set(&D.sweep_timer, 0);
}

/* 1 when the engine answered the last probe (docker.h). */
int
docker_engine_up(void)
{
	return D.engine == 1;
}

/* Active container builds (docker.h). */
int
docker_active_count(void)
{
	struct build *b;
	int n = 0;

	for (b = build_first(); b != NULL; b = b->next)
		if (b->state != B_FINISHED && build_is_docker(b))
			n++;
	return n;
}

/* Heartbeat dockerTaskList (docker.h). */
cJSON *
docker_task_list(void)
{
	cJSON *arr = cJSON_CreateArray(), *t;
	struct build *b;

	for (b = build_first(); b != NULL; b = b->next) {
		if (b->state == B_FINISHED || !build_is_docker(b))
			continue;
		t = cJSON_CreateObject();
		json_add_str(t, "projectId", b->project_id);
		json_add_str(t, "buildId", b->build_id);
		json_add_str(t, "vmSeqId", b->vm_seq_id);
		cJSON_AddItemToArray(arr, t);
	}
	return arr;
}
