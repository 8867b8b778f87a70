/*
 * config.c - .agent.properties: load (iniparser), validate, write back.
 *
 * Two views of the same bytes:
 *  - a line scanner that frames the text exactly as iniparser 4.1 frames it
 *    (physical lines, '\' continuations, comments, sections, the 1022-byte
 *    line limit) and records where each known key sits, so that the
 *    write-back can edit single lines and keep everything else byte for byte;
 *  - iniparser, which parses every value (quotes, inline comments, trimming).
 * The scanner never interprets values; iniparser never sees the raw file but
 * a copy in which the BOM is dropped, a ':' delimiter becomes '=' and
 * mis-cased spellings of known keys are blanked (see doc_parse()).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include <iniparser.h>

#include "config.h"
#include "fsutil.h"
#include "log.h"
#include "util.h"
#include "validate.h"

/* iniparser 4.1 reads lines with fgets() into char[ASCIILINESZ + 1] (1024). */
#define INI_LINE_MAX	CONFIG_LINE_MAX

enum ctype { CT_STR, CT_INT, CT_LL, CT_BOOL };

#define F_REQ		0x01	/* missing or blank -> load fails */
#define F_STRICT	0x02	/* int: present but not decimal >= 0 -> load fails */
#define F_POSITIVE	0x04	/* int: <= 0 -> default */
#define F_EMPTYDEF	0x08	/* str: "" -> default */
#define F_SAVE		0x10	/* always written (§2.4 keys, jdk17.dir.path) */
#define F_SAVE_SET	0x20	/* written when in the file or not the default */
#define F_WARN_EMPTY	0x40	/* str: "" allowed with a warning */

struct ckey {
	const char	*key;
	enum ctype	 type;
	size_t		 off;		/* offsetof(struct config, field) */
	const char	*def;		/* default, in its written form; NULL: none */
	int		 flags;
	int		(*valid)(const char *);	/* str: invalid -> default */
};

static int lang_valid(const char *);
static int poll_mode_valid(const char *);

#define O(f) offsetof(struct config, f)
/* Known keys; the order is the write-back order of missing keys (§2.4). */
static const struct ckey keys[] = {
	{ "devops.project.id", CT_STR, O(project_id), NULL, F_REQ | F_SAVE, NULL },
	{ "devops.agent.id", CT_STR, O(agent_id), NULL, F_REQ | F_SAVE, NULL },
	{ "devops.agent.secret.key", CT_STR, O(secret_key), NULL,
	    F_REQ | F_SAVE, NULL },
	{ "landun.gateway", CT_STR, O(gateway), NULL, F_REQ | F_SAVE, NULL },
	{ "landun.fileGateway", CT_STR, O(file_gateway), "",
	    F_WARN_EMPTY | F_SAVE, NULL },
	{ "devops.parallel.task.count", CT_INT, O(parallel_task_count), NULL,
	    F_REQ | F_STRICT | F_SAVE, NULL },
	{ "landun.env", CT_STR, O(env), NULL, F_REQ | F_SAVE, NULL },
	{ "devops.slave.user", CT_STR, O(slave_user), "", F_SAVE, NULL },
	{ "devops.agent.request.timeout.sec", CT_LL, O(request_timeout_sec), "5",
	    F_POSITIVE | F_SAVE, NULL },
	{ "devops.agent.detect.shell", CT_BOOL, O(detect_shell), "false",
	    F_SAVE, NULL },
	{ "devops.agent.ignoreLocalIps", CT_STR, O(ignore_local_ips),
	    "127.0.0.1", F_EMPTYDEF | F_SAVE, NULL },
	{ "devops.agent.logs.keep.hours", CT_INT, O(logs_keep_hours), "96",
	    F_SAVE, NULL },
	{ "devops.agent.jdk.dir.path", CT_STR, O(jdk_dir), "", F_SAVE, NULL },
	{ "devops.agent.jdk17.dir.path", CT_STR, O(jdk17_dir), "", F_SAVE, NULL },
	{ "devops.docker.parallel.task.count", CT_INT,
	    O(docker_parallel_task_count), "4", F_STRICT | F_SAVE, NULL },
	{ "devops.docker.enable", CT_BOOL, O(docker_enable), "false",
	    F_SAVE, NULL },
	{ "devops.language", CT_STR, O(language), "zh_CN",
	    F_EMPTYDEF | F_SAVE, lang_valid },
	{ "devops.imagedebug.portrange", CT_STR, O(imagedebug_portrange),
	    "30000-32767", F_EMPTYDEF | F_SAVE, NULL },
	/* Keys of GoAgent at HEAD (config.go), written when set. */
	{ "devops.pipeline.enable", CT_BOOL, O(pipeline_enable), "false",
	    F_SAVE_SET, NULL },
	{ "devops.mcp.server.port", CT_INT, O(mcp_server_port), "0",
	    F_SAVE_SET, NULL },
	{ "HTTP_PROXY", CT_STR, O(http_proxy), "", F_SAVE_SET, NULL },
	{ "HTTPS_PROXY", CT_STR, O(https_proxy), "", F_SAVE_SET, NULL },
	{ "NO_PROXY", CT_STR, O(no_proxy), "", F_SAVE_SET, NULL },
	/* Dropped by GoAgent's SaveConfig; kept here (W5). */
	{ "devops.agent.collectorOn", CT_BOOL, O(collector_on), "true",
	    F_SAVE_SET, NULL },
	{ "devops.agent.batch.install", CT_STR, O(batch_install), "",
	    F_SAVE_SET, NULL },
	/* Keys of this agent. */
	{ "devops.pipeline.timeout.sec", CT_LL, O(pipeline_timeout_sec), "3600",
	    F_POSITIVE | F_SAVE_SET, NULL },
	{ "devops.pipeline.workspace", CT_STR, O(pipeline_workspace),
	    "pipeline_tasks", F_EMPTYDEF | F_SAVE_SET, NULL },
	{ "devops.pipeline.allowlist", CT_STR, O(pipeline_allowlist), "",
	    F_SAVE_SET, NULL },
	{ "devops.agent.poll.mode", CT_STR, O(poll_mode), "auto",
	    F_EMPTYDEF | F_SAVE_SET, poll_mode_valid },
	/* Redis task queue (docs/queue.md). */
	{ "devops.queue.redis", CT_STR, O(queue_redis), "", F_SAVE_SET, NULL },
	{ "devops.queue.name", CT_STR, O(queue_name), "queue_job_task",
	    F_EMPTYDEF | F_SAVE_SET, NULL },
	{ "devops.queue.control", CT_STR, O(queue_control), "", F_SAVE_SET, NULL },
	{ "devops.queue.logs", CT_BOOL, O(queue_logs), "true", F_SAVE_SET, NULL },
	{ "devops.queue.logs.queue", CT_STR, O(queue_logs_queue), "",
	    F_SAVE_SET, NULL },
	{ "devops.queue.logs.http", CT_STR, O(queue_logs_http), "", F_SAVE_SET, NULL },
	{ "devops.queue.cmd.dir", CT_STR, O(queue_cmd_dir), "queue_cmd",
	    F_EMPTYDEF | F_SAVE_SET, NULL },
	{ "devops.queue.parallel", CT_INT, O(queue_parallel), "4",
	    F_POSITIVE | F_SAVE_SET, NULL },
	/* Cron task source (agent/cron.c, docs/cron.md). */
	{ "devops.cron.etcd", CT_STR, O(cron_etcd), "", F_SAVE_SET, NULL },
	{ "devops.cron.prefix", CT_STR, O(cron_prefix), "/cron/",
	    F_EMPTYDEF | F_SAVE_SET, NULL },
	{ "devops.cron.tls.ca", CT_STR, O(cron_tls_ca), "", F_SAVE_SET, NULL },
	{ "devops.cron.tls.cert", CT_STR, O(cron_tls_cert), "", F_SAVE_SET, NULL },
	{ "devops.cron.tls.key", CT_STR, O(cron_tls_key), "", F_SAVE_SET, NULL },
	{ "devops.cron.utc", CT_BOOL, O(cron_utc), "false", F_SAVE_SET, NULL },
	{ "devops.cron.lock.ttl.sec", CT_INT, O(cron_lock_ttl_sec), "5",
	    F_POSITIVE | F_SAVE_SET, NULL },
	{ "devops.cron.timeout.sec", CT_LL, O(cron_timeout_sec), "3600",
	    F_POSITIVE | F_SAVE_SET, NULL },
	{ "devops.cron.workspace", CT_STR, O(cron_workspace), "cron_tasks",
	    F_EMPTYDEF | F_SAVE_SET, NULL },
	{ "devops.cron.log.batch", CT_INT, O(cron_log_batch), "100",
	    F_POSITIVE | F_SAVE_SET, NULL },
	{ "devops.cron.log.commit.ms", CT_LL, O(cron_log_commit_ms), "1000",
	    F_POSITIVE | F_SAVE_SET, NULL },
	{ "devops.cron.log.file.max.bytes", CT_LL, O(cron_log_file_max),
	    "16777216", F_POSITIVE | F_SAVE_SET, NULL },
	/* Cron job log to a Redis stream (agent/cron_sink_redis.c). */
	{ "devops.cron.log.stream", CT_STR, O(cron_log_stream), "devops:cron:log",
	    F_EMPTYDEF | F_SAVE_SET, NULL },
	{ "devops.cron.log.stream.maxlen", CT_LL, O(cron_log_stream_maxlen),
	    "100000", F_POSITIVE | F_SAVE_SET, NULL },
	/* End of the cron task source. */
	/* Operator side: local metrics, disk guard, job hooks. */
	{ "devops.agent.metrics.listen", CT_STR, O(metrics_listen), "",
	    F_SAVE_SET, NULL },
	{ "devops.agent.metrics.remote", CT_BOOL, O(metrics_remote), "false",
	    F_SAVE_SET, NULL },
	{ "devops.agent.disk.min.free.mb", CT_LL, O(disk_min_free_mb), "2048",
	    F_SAVE_SET, NULL },
	{ "devops.agent.disk.min.inodes.percent", CT_INT,
	    O(disk_min_inodes_pct), "5", F_SAVE_SET, NULL },
	{ "devops.agent.hooks.timeout.sec", CT_LL, O(hooks_timeout_sec), "300",
	    F_POSITIVE | F_SAVE_SET, NULL },
};
#undef O
#define NKEYS (29 + 8 + 14 + 5)	/* + queue, cron, operator side */
_Static_assert(nitems(keys) == NKEYS, "NKEYS must match the key table");

/* One physical line of the text. */
struct pline {
	size_t	off;		/* first byte */
	size_t	len;		/* bytes before the '\n' (a '\r' is included) */
	int	nl;		/* 1 when a '\n' ends the line */
};

/* Where a known key sits: its logical line (with continuations). */
struct entry {
	size_t	first, last;	/* physical line indexes */
	size_t	delim;		/* offset of the '=' or ':' in text */
};

struct config_doc {
	char		*text;		/* the whole file, BOM included */
	size_t		 len;
	size_t		 bom;		/* 3 with a UTF-8 BOM, else 0 */
	struct pline	*lines;
	size_t		 nlines;
	size_t		 sect;		/* first section header line, or nlines */
	int		 has[NKEYS];
	struct entry	 ent[NKEYS];
};

/* First message iniparser reported during the current iniparser_load(). */
static char ini_msg[256];

/* iniparser error callback: keep the first message instead of printing it. */
__attribute__((format(printf, 1, 2)))
static int
ini_error(const char *fmt, ...)
{
	va_list ap;

	if (ini_msg[0] != '\0')
		return 0;
	va_start(ap, fmt);
	vsnprintf(ini_msg, sizeof(ini_msg), fmt, ap);
	va_end(ap);
	return 0;
}

/* Copy v for a message: at most 40 bytes, control bytes shown as '?'. */
static void
quote_val(const char *v, char *buf, size_t size)
{
	size_t i, n = 0;

	for (i = 0; v[i] != '\0' && n + 4 < size; i++) {
		if (i == 40) {
			memcpy(buf + n, "...", 3);
			n += 3;
			break;
		}
		if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
			buf[n++] = '?';
		else
			buf[n++] = v[i];
	}
	buf[n] = '\0';
}

/* devops.agent.poll.mode: auto, ask or legacy. */
static int
poll_mode_valid(const char *s)
{
	return strcmp(s, "auto") == 0 || strcmp(s, "ask") == 0 ||
	    strcmp(s, "legacy") == 0;
}

/* Well-formed language tag (zh_CN, en-US, zh-Hans-CN): validate.h. */
static int
lang_valid(const char *s)
{
	return validate_language(s, NULL, 0) == 0;
}

/* Boolean as gopkg.in/ini.v1 parses it: 1, 0 or -1 when not a boolean. */
static int
parse_bool(const char *s)
{
	static const char *yes[] = { "1", "t", "T", "true", "TRUE", "True",
	    "YES", "yes", "Yes", "y", "ON", "on", "On" };
	static const char *no[] = { "0", "f", "F", "false", "FALSE", "False",
	    "NO", "no", "No", "n", "OFF", "off", "Off" };
	size_t i;

	for (i = 0; i < nitems(yes); i++)
		if (strcmp(s, yes[i]) == 0)
			return 1;
	for (i = 0; i < nitems(no); i++)
		if (strcmp(s, no[i]) == 0)
			return 0;
	return -1;
}

/* Field of c described by k. */
static void *
field(struct config *c, const struct ckey *k)
{
	return (char *)c + k->off;
}

/* Value of k in c in its written form. Caller frees. */
static char *
key_format(struct config *c, const struct ckey *k)
{
	switch (k->type) {
	case CT_STR: {
		const char *s = *(char **)field(c, k);
		return xstrdup(s != NULL ? s : "");
	}
	case CT_INT:
		return xasprintf("%d", *(int *)field(c, k));
	case CT_LL:
		return xasprintf("%lld", *(long long *)field(c, k));
	case CT_BOOL:
		return xstrdup(*(int *)field(c, k) ? "true" : "false");
	}
	return xstrdup("");
}

/* Set an integer field of c, range-checked for int fields. */
static int
int_store(struct config *c, const struct ckey *k, long long v)
{
	if (k->type == CT_INT) {
		if (v < INT_MIN || v > INT_MAX)
			return -1;
		*(int *)field(c, k) = (int)v;
	} else {
		*(long long *)field(c, k) = v;
	}
	return 0;
}

/* Parse raw (iniparser's value, NULL when absent) of key k into c. */
static int
key_load(struct config *c, const struct ckey *k, const char *raw, int quiet,
    char *err, size_t errlen)
{
	char *v = raw != NULL ? str_trim(xstrdup(raw)) : NULL;
	char q[64];
	long long n;
	int b, rc = 0;

	if (v != NULL)
		quote_val(v, q, sizeof(q));
	if ((k->flags & F_REQ) && (v == NULL || *v == '\0')) {
		err_set(err, errlen, "%s: missing or blank", k->key);
		free(v);
		return -1;
	}
	switch (k->type) {
	case CT_STR:
		if ((v == NULL || *v == '\0') && (k->flags & F_WARN_EMPTY) &&
		    !quiet)
			log_warnx("%s is empty or missing", k->key);
		if (v == NULL || (*v == '\0' && (k->flags & F_EMPTYDEF))) {
			free(v);
			v = xstrdup(k->def);
		} else if (k->valid != NULL && !k->valid(v)) {
			if (!quiet)
				log_warnx("%s: invalid value '%s', using %s",
				    k->key, q, k->def);
			free(v);
			v = xstrdup(k->def);
		}
		*(char **)field(c, k) = v;
		return 0;
	case CT_INT:
	case CT_LL:
		if (v == NULL) {
			(void)str_to_ll(k->def, &n);
			(void)int_store(c, k, n);
			break;
		}
		if (str_to_ll(v, &n) == -1 || (k->type == CT_INT &&
		    (n < INT_MIN || n > INT_MAX)) ||
		    ((k->flags & F_STRICT) && n < 0)) {
			if (k->flags & F_STRICT) {
				err_set(err, errlen,
				    "%s: not a decimal integer >= 0: '%s'",
				    k->key, q);
				rc = -1;
				break;
			}
			if (!quiet && *v != '\0')
				log_warnx("%s: not a decimal integer: '%s', "
				    "using %s", k->key, q, k->def);
			(void)str_to_ll(k->def, &n);
		} else if ((k->flags & F_POSITIVE) && n <= 0) {
			if (!quiet)
				log_warnx("%s: %lld is not > 0, using %s",
				    k->key, n, k->def);
			(void)str_to_ll(k->def, &n);
		}
		(void)int_store(c, k, n);
		break;
	case CT_BOOL:
		b = v != NULL ? parse_bool(v) : -1;
		if (b == -1) {
			if (v != NULL && *v != '\0' && !quiet)
				log_warnx("%s: not a boolean: '%s', using %s",
				    k->key, q, k->def);
			b = parse_bool(k->def);
		}
		*(int *)field(c, k) = b;
		break;
	}
	free(v);
	return rc;
}

/*
 * Run iniparser over len bytes of buf. iniparser 4.1 only loads from a path,
 * so the bytes go to an anonymous file (memfd on Linux, an unlinked temp file
 * elsewhere) that iniparser opens through its /proc or /dev/fd name: it then
 * parses exactly the bytes the scanner checked. name replaces that path in
 * iniparser's message.
 */
static dictionary *
ini_load_buf(const char *buf, size_t len, const char *name, char *err,
    size_t errlen)
{
	char path[64], *at;
	dictionary *dict;
	int fd;

#ifdef __linux__
	fd = memfd_create("agent-properties", MFD_CLOEXEC);
#else
	{
		char tmpl[] = "/tmp/.agent-properties.XXXXXX";

		if ((fd = mkstemp(tmpl)) != -1)
			(void)unlink(tmpl);
	}
#endif
	if (fd == -1) {
		err_set(err, errlen, "scratch file for iniparser: %s",
		    strerror(errno));
		return NULL;
	}
	if (fs_write_all(fd, buf, len) == -1 || lseek(fd, 0, SEEK_SET) == -1) {
		int saved = errno;

		err_set(err, errlen, "scratch file for iniparser: %s",
		    strerror(saved));
		close(fd);
		errno = saved;
		return NULL;
	}
#ifdef __linux__
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
#else
	snprintf(path, sizeof(path), "/dev/fd/%d", fd);
#endif
	ini_msg[0] = '\0';
	iniparser_set_error_callback(ini_error);
	dict = iniparser_load(path);
	close(fd);
	if (dict != NULL && ini_msg[0] == '\0')
		return dict;
	if (dict != NULL)
		iniparser_freedict(dict);
	errno = EINVAL;
	/* One line: iniparser's second line quotes the input, maybe a secret. */
	ini_msg[strcspn(ini_msg, "\n")] = '\0';
	if (ini_msg[0] == '\0')
		err_set(err, errlen, "iniparser could not parse the file");
	else if ((at = strstr(ini_msg, path)) != NULL)
		err_set(err, errlen, "%.*s%s%s", (int)(at - ini_msg), ini_msg,
		    name, at + strlen(path));
	else
		err_set(err, errlen, "%s", ini_msg);
	return NULL;
}

/* Free a doc and everything it owns. */
static void
doc_free(struct config_doc *d)
{
	if (d == NULL)
		return;
	free(d->text);
	free(d->lines);
	free(d);
}

/* Split text into physical lines (the BOM is outside line 0). */
static void
doc_split(struct config_doc *d)
{
	size_t pos = d->bom, cap = 64;

	d->lines = xmalloc(cap * sizeof(*d->lines));
	d->nlines = 0;
	while (pos < d->len) {
		const char *nl = memchr(d->text + pos, '\n', d->len - pos);
		struct pline *l;

		if (d->nlines == cap) {
			cap *= 2;
			d->lines = xrealloc(d->lines, cap * sizeof(*d->lines));
		}
		l = &d->lines[d->nlines++];
		l->off = pos;
		l->len = nl != NULL ? (size_t)(nl - (d->text + pos)) : d->len - pos;
		l->nl = nl != NULL;
		pos += l->len + (size_t)l->nl;
	}
}

/* Length of line l without trailing white space ('\r' included). */
static size_t
line_rlen(const struct config_doc *d, const struct pline *l)
{
	size_t n = l->len;

	while (n > 0 && isspace((unsigned char)d->text[l->off + n - 1]))
		n--;
	return n;
}

/* Index of known key s (exact case), or -1. */
static int
key_find(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < NKEYS; i++)
		if (strlen(keys[i].key) == n && memcmp(keys[i].key, s, n) == 0)
			return (int)i;
	return -1;
}

/* Index of the known key s matches ignoring case, or -1. */
static int
key_find_icase(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < NKEYS; i++)
		if (strlen(keys[i].key) == n &&
		    strncasecmp(keys[i].key, s, n) == 0)
			return (int)i;
	return -1;
}

/*
 * Frame the logical line starting at physical line *i as iniparser does and
 * classify it; on return *i is its last physical line. Fills j (the joined,
 * stripped text, INI_LINE_MAX + 1 bytes) and *lead (bytes stripped in front).
 * Returns 0, or -1 with err.
 */
static int
doc_frame(const struct config_doc *d, size_t *i, char *j, size_t *jlen,
    size_t *lead, size_t *piece0, char *err, size_t errlen)
{
	size_t acc = 0, s, e;
	int first = 1;

	for (;;) {
		const struct pline *l = &d->lines[*i];
		size_t rl = line_rlen(d, l);
		int cont = rl > 0 && d->text[l->off + rl - 1] == '\\';

		/* fgets(line + acc, 1024 - acc): content must fit in 1022. */
		if (acc + l->len > INI_LINE_MAX) {
			err_set(err, errlen, "line %zu: longer than %d bytes",
			    *i + 1, INI_LINE_MAX);
			return -1;
		}
		if (cont) {
			if (*i + 1 >= d->nlines) {
				err_set(err, errlen, "line %zu: '\\' continues "
				    "past the end of the file", *i + 1);
				return -1;
			}
			/* iniparser overwrites the backslash with the next line. */
			memcpy(j + acc, d->text + l->off, rl - 1);
			acc += rl - 1;
		} else {
			memcpy(j + acc, d->text + l->off, l->len);
			acc += l->len;
		}
		if (first)
			*piece0 = acc;
		first = 0;
		if (!cont)
			break;
		(*i)++;
	}
	for (e = acc; e > 0 && isspace((unsigned char)j[e - 1]); e--)
		;
	for (s = 0; s < e && isspace((unsigned char)j[s]); s++)
		;
	memmove(j, j + s, e - s);
	j[e - s] = '\0';
	*jlen = e - s;
	*lead = s;
	return 0;
}

/*
 * Scan text (owned by d on entry) and build the copy handed to iniparser
 * (*ini, len - bom bytes, caller frees). Errors name the line.
 */
static int
doc_scan(struct config_doc *d, char **ini, int quiet, char *err, size_t errlen)
{
	char j[INI_LINE_MAX + 1];
	const char *nul;
	size_t i, k, first, jlen, lead, piece0;
	int in_default = 1;

	if ((nul = memchr(d->text, '\0', d->len)) != NULL) {
		size_t line = 1;
		const char *p;

		for (p = d->text; p < nul; p++)
			line += *p == '\n';
		err_set(err, errlen, "line %zu: NUL byte (not a text file)", line);
		return -1;
	}
	d->bom = d->len >= 3 && memcmp(d->text, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
	doc_split(d);
	d->sect = d->nlines;
	*ini = xmalloc(d->len - d->bom + 1);
	memcpy(*ini, d->text + d->bom, d->len - d->bom);
	(*ini)[d->len - d->bom] = '\0';

	for (i = 0; i < d->nlines; i++) {
		size_t dpos, klen;
		const char *kp;
		int ki;

		first = i;
		if (doc_frame(d, &i, j, &jlen, &lead, &piece0, err, errlen) == -1)
			goto fail;
		if (jlen == 0 || j[0] == '#' || j[0] == ';')
			continue;
		if (j[0] == '[' && j[jlen - 1] == ']') {
			size_t ns = 1, ne = strcspn(j + 1, "]") + 1;

			while (ns < ne && isspace((unsigned char)j[ns]))
				ns++;
			while (ne > ns && isspace((unsigned char)j[ne - 1]))
				ne--;
			if (ne == ns) {
				err_set(err, errlen, "line %zu: empty section name",
				    first + 1);
				goto fail;
			}
			if (in_default)
				d->sect = first;
			in_default = 0;
			continue;
		}
		/* key<delim>value; delim: the first '=' or ':' (ini.v1). */
		klen = strcspn(j, "=:");
		if (klen == jlen || lead + klen >= piece0) {
			/* None, or only on a continuation line (ini.v1 rejects). */
			err_set(err, errlen, "line %zu: not a key=value line",
			    first + 1);
			goto fail;
		}
		if (klen == 0) {
			err_set(err, errlen, "line %zu: empty key", first + 1);
			goto fail;
		}
		dpos = d->lines[first].off + lead + klen;
		if (d->text[dpos] == ':')
			(*ini)[dpos - d->bom] = '=';	/* iniparser knows only '=' */
		kp = j;
		while (klen > 0 && isspace((unsigned char)kp[klen - 1]))
			klen--;
		if (!in_default)
			continue;
		if ((ki = key_find(kp, klen)) != -1) {
			if (d->has[ki]) {
				err_set(err, errlen, "%s: duplicate key (lines "
				    "%zu and %zu)", keys[ki].key,
				    d->ent[ki].first + 1, first + 1);
				goto fail;
			}
			d->has[ki] = 1;
			d->ent[ki].first = first;
			d->ent[ki].last = i;
			d->ent[ki].delim = dpos;
		} else if ((ki = key_find_icase(kp, klen)) != -1) {
			/* GoAgent and Java ignore it; iniparser would not. */
			if (!quiet)
				log_warnx("line %zu: '%.*s' ignored: keys "
				    "are case-sensitive (%s)", first + 1,
				    (int)klen, kp, keys[ki].key);
			for (k = first; k <= i; k++)
				memset(*ini + d->lines[k].off - d->bom, ' ',
				    d->lines[k].len);
		}
	}
	return 0;
fail:
	free(*ini);
	*ini = NULL;
	return -1;
}

/*
 * Scan and parse text (len bytes, taken over: freed on failure). On success
 * *out is the new doc and *dict iniparser's dictionary (caller frees both).
 * On failure errno is EINVAL for bad content, EFBIG for a too large text,
 * else that of the failing system call.
 */
static int
doc_parse(char *text, size_t len, const char *name, int quiet,
    struct config_doc **out, dictionary **dict, char *err, size_t errlen)
{
	struct config_doc *d = xcalloc(1, sizeof(*d));
	char *ini = NULL;
	size_t k;
	int saved;

	d->text = text;
	d->len = len;
	if (len > (size_t)CONFIG_MAX_BYTES) {
		errno = EFBIG;
		err_set(err, errlen, "larger than %d bytes", CONFIG_MAX_BYTES);
		goto fail;
	}
	if (doc_scan(d, &ini, quiet, err, errlen) == -1) {
		errno = EINVAL;
		goto fail;
	}
	*dict = ini_load_buf(ini, len - d->bom, name, err, errlen);
	free(ini);
	if (*dict == NULL)
		goto fail;
	/* The scanner and iniparser must agree on which known keys exist. */
	for (k = 0; k < NKEYS; k++) {
		char lk[128];

		snprintf(lk, sizeof(lk), ":%s", keys[k].key);
		if (d->has[k] != (iniparser_getstring(*dict, lk, NULL) != NULL)) {
			err_set(err, errlen, "%s: line framing differs from "
			    "iniparser's", keys[k].key);
			iniparser_freedict(*dict);
			*dict = NULL;
			errno = EINVAL;
			goto fail;
		}
	}
	*out = d;
	return 0;
fail:
	saved = errno;
	doc_free(d);
	errno = saved;
	return -1;
}

/* Value of known key k in dict (default section), or NULL. */
static const char *
dict_get(dictionary *dict, size_t k)
{
	char lk[128];

	snprintf(lk, sizeof(lk), ":%s", keys[k].key);
	return iniparser_getstring(dict, lk, NULL);
}

/* Fill every table field of c from dict. */
static int
config_fill(struct config *c, dictionary *dict, int quiet, char *err,
    size_t errlen)
{
	size_t k;

	for (k = 0; k < NKEYS; k++)
		if (key_load(c, &keys[k], dict_get(dict, k), quiet, err,
		    errlen) == -1)
			return -1;
	return 0;
}

/* Absolute JDK directory: jdk_dir, else WORKDIR/jdk if a dir, else WORKDIR/jre. */
static char *
jdk_resolve(const char *jdk_dir, const char *workdir)
{
	const char *wd = workdir != NULL ? workdir : ".";
	char *p;

	if (jdk_dir[0] == '/')
		return xstrdup(jdk_dir);
	if (jdk_dir[0] != '\0')
		return xasprintf("%s/%s", wd, jdk_dir);
	p = xasprintf("%s/jdk", wd);
	if (fs_is_dir(p))
		return p;
	free(p);
	return xasprintf("%s/jre", wd);
}

/* Absolute JDK 17 directory: jdk17_dir (relative: to workdir), else WORKDIR/jdk17. */
static char *
jdk17_resolve(const char *dir, const char *workdir)
{
	const char *wd = workdir != NULL ? workdir : ".";

	if (dir[0] == '/')
		return xstrdup(dir);
	return xasprintf("%s/%s", wd, dir[0] != '\0' ? dir : "jdk17");
}

/* Load and validate path into c (see config.h). */
int
config_load(struct config *c, const char *path, const char *workdir,
    char *err, size_t errlen)
{
	dictionary *dict = NULL;
	struct config_doc *d = NULL;
	char *text, msg[256];
	size_t len;

	memset(c, 0, sizeof(*c));
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (fs_read_file(path, (size_t)CONFIG_MAX_BYTES, &text, &len) == -1) {
		if (errno == EFBIG)
			err_set(err, errlen, "%s: larger than %d bytes", path,
			    CONFIG_MAX_BYTES);
		else
			err_set(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	msg[0] = '\0';
	if (doc_parse(text, len, path, 0, &d, &dict, msg, sizeof(msg)) == -1) {
		err_set(err, errlen, "%s", msg);
		return -1;
	}
	if (config_fill(c, dict, 0, err, errlen) == -1) {
		iniparser_freedict(dict);
		doc_free(d);
		config_free(c);
		return -1;
	}
	iniparser_freedict(dict);
	c->doc = d;
	c->path = xstrdup(path);
	c->jdk_dir_resolved = jdk_resolve(c->jdk_dir, workdir);
	c->jdk17_dir_resolved = jdk17_resolve(c->jdk17_dir, workdir);
	return 0;
}

/* Path of the backup of path: path + ".bak". Caller frees. */
static char *
bak_path(const char *path)
{
	return xasprintf("%s" CONFIG_BAK_SUFFIX, path);
}

/* Load path, else restore it from path.bak (see config.h). */
int
config_load_restore(struct config *c, const char *path, const char *workdir,
    int *restored, char *err, size_t errlen)
{
	char main_err[256], bak_err[256], *bak, *text = NULL;
	struct stat st;
	mode_t mode = 0640;
	size_t len;

	*restored = 0;
	if (config_load(c, path, workdir, main_err, sizeof(main_err)) == 0)
		return 0;
	bak = bak_path(path);
	if (config_load(c, bak, workdir, bak_err, sizeof(bak_err)) == -1) {
		/* Read errors already start with the path. */
		if (str_starts(bak_err, bak))
			err_set(err, errlen, "%s; backup %s", main_err, bak_err);
		else
			err_set(err, errlen, "%s; backup %s: %s", main_err, bak,
			    bak_err);
		free(bak);
		return -1;
	}
	config_free(c);
	/* Put the backup's bytes back in place, keeping the old file's mode
	 * (group read may be needed by the build user's worker). */
	if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
		mode = st.st_mode & 07777;
	if (fs_read_file(bak, (size_t)CONFIG_MAX_BYTES, &text, &len) == -1 ||
	    fs_write_atomic(path, text, len, mode) == -1) {
		err_set(err, errlen, "%s; backup %s loads but cannot be copied "
		    "back: %s", main_err, bak, strerror(errno));
		free(text);
		free(bak);
		return -1;
	}
	free(text);
	if (config_load(c, path, workdir, bak_err, sizeof(bak_err)) == -1) {
		err_set(err, errlen, "%s; restored from %s but: %s", main_err, bak,
		    bak_err);
		free(bak);
		return -1;
	}
	log_warnx("%s: %s; restored it from %s", path, main_err, bak);
	*restored = 1;
	free(bak);
	return 0;
}

/* Growable output buffer of config_save. */
struct sbuf {
	char	*p;
	size_t	 len, cap;
};

/* Append n bytes to b. */
static void
sb_add(struct sbuf *b, const char *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
}

enum action { A_KEEP, A_REPLACE, A_APPEND, A_SKIP };

/* First byte of the value of entry e: after the delimiter and blanks. */
static size_t
value_start(const struct config_doc *d, const struct entry *e)
{
	const struct pline *l = &d->lines[e->first];
	size_t p = e->delim + 1;

	while (p < l->off + l->len && (d->text[p] == ' ' || d->text[p] == '\t'))
		p++;
	return p;
}

/*
 * What config_save does with key k: keep the line when its literal value
 * already is the written form (for booleans any ini.v1 spelling of the same
 * value), else replace it; append a missing key.
 */
static enum action
key_action(const struct config_doc *d, size_t k, const char *fmt, int bval)
{
	const struct entry *e = &d->ent[k];
	const struct pline *l;
	size_t vs, ve;
	char *lit;
	int keep;

	if (!d->has[k])
		return (keys[k].flags & F_SAVE) || strcmp(fmt, keys[k].def) != 0 ?
		    A_APPEND : A_SKIP;
	if (e->first != e->last)
		return A_REPLACE;
	l = &d->lines[e->first];
	vs = value_start(d, e);
	ve = l->off + line_rlen(d, l);
	lit = xstrndup(d->text + vs, ve > vs ? ve - vs : 0);
	if (keys[k].type == CT_BOOL)
		keep = parse_bool(lit) == bval;
	else
		keep = strcmp(lit, fmt) == 0;
	free(lit);
	return keep ? A_KEEP : A_REPLACE;
}

/* Line ending for appended lines: that of the last line before line n. */
static const char *
doc_eol(const struct config_doc *d, size_t n)
{
	while (n-- > 0) {
		const struct pline *l = &d->lines[n];

		if (l->nl)
			return l->len > 0 && d->text[l->off + l->len - 1] == '\r' ?
			    "\r\n" : "\n";
	}
	return "\n";
}

/* Append "key=value" lines for every A_APPEND key to b. */
static void
emit_appends(struct sbuf *b, const struct config_doc *d, enum action *act,
    char **fmt, const char *eol)
{
	size_t k;

	for (k = 0; k < NKEYS; k++) {
		if (act[k] != A_APPEND)
			continue;
		if (b->len > d->bom && b->p[b->len - 1] != '\n')
			sb_add(b, eol, strlen(eol));
		sb_add(b, keys[k].key, strlen(keys[k].key));
		sb_add(b, "=", 1);
		sb_add(b, fmt[k], strlen(fmt[k]));
		sb_add(b, eol, strlen(eol));
	}
}

/* The new text: d->text with the replacements and appends of act. */
static void
doc_rebuild(struct sbuf *b, const struct config_doc *d, enum action *act,
    char **fmt)
{
	const char *eol = doc_eol(d, d->sect);
	size_t i, k;

	sb_add(b, d->text, d->bom);
	for (i = 0; i <= d->nlines; i++) {
		const struct pline *l;

		if (i == d->sect)
			emit_appends(b, d, act, fmt, eol);
		if (i == d->nlines)
			break;
		for (k = 0; k < NKEYS; k++)
			if (act[k] == A_REPLACE && d->ent[k].first == i)
				break;
		l = &d->lines[i];
		if (k == NKEYS) {
			sb_add(b, d->text + l->off, l->len + (size_t)l->nl);
			continue;
		}
		/* Keep indentation, key text, delimiter and its blanks. */
		sb_add(b, d->text + l->off, value_start(d, &d->ent[k]) - l->off);
		sb_add(b, fmt[k], strlen(fmt[k]));
		i = d->ent[k].last;
		l = &d->lines[i];
		if (l->len > 0 && d->text[l->off + l->len - 1] == '\r')
			sb_add(b, "\r", 1);
		if (l->nl)
			sb_add(b, "\n", 1);
	}
}

/*
 * Check that text (taken over) loads and yields fmt for every key that
 * config_save rewrites; on success *out is its doc. Fails with EINVAL, or
 * the errno of a system call of the check (EFBIG, ENOMEM ...).
 */
static int
save_verify(char *text, size_t len, const char *name, enum action *act,
    char **fmt, struct config_doc **out, char *err, size_t errlen)
{
	struct config tmp;
	dictionary *dict;
	char msg[256];
	size_t k;
	int rc = 0;

	msg[0] = '\0';
	if (doc_parse(text, len, name, 1, out, &dict, msg, sizeof(msg)) == -1) {
		int saved = errno;

		err_set(err, errlen, "%s %s: %s", saved == EINVAL ?
		    "refusing to write" : "cannot check", name, msg);
		errno = saved;
		return -1;
	}
	memset(&tmp, 0, sizeof(tmp));
	if (config_fill(&tmp, dict, 1, msg, sizeof(msg)) == -1) {
		err_set(err, errlen, "refusing to write %s: %s", name, msg);
		rc = -1;
	}
	for (k = 0; rc == 0 && k < NKEYS; k++) {
		const char *raw = dict_get(dict, k);

		if ((act[k] == A_REPLACE || act[k] == A_APPEND) &&
		    (raw == NULL || strcmp(raw, fmt[k]) != 0)) {
			/* No value in the message: it may be the secret. */
			err_set(err, errlen, "%s: value cannot be stored as is "
			    "(line break, '#', ';', quotes or outer blanks)",
			    keys[k].key);
			rc = -1;
		}
	}
	iniparser_freedict(dict);
	config_free(&tmp);
	if (rc == -1) {
		doc_free(*out);
		*out = NULL;
		errno = EINVAL;
	}
	return rc;
}

/*
 * Before a write: copy the file now at cur (the symlink target, if any) to
 * path.bak, best effort. Only a non-empty text that loads is copied: the
 * text this process loaded or wrote (d), or a hand-edited file that still
 * loads, so a broken file never replaces a good backup. Mode 0600: it holds
 * the secret key and only the agent reads it.
 */
static void
backup_current(const char *cur, const char *path, const struct config_doc *d)
{
	struct config_doc *od = NULL;
	struct config tmp;
	dictionary *dict = NULL;
	char *text = NULL, *bak, msg[256];
	size_t len = 0;

	if (fs_read_file(cur, (size_t)CONFIG_MAX_BYTES, &text, &len) == -1)
		return;		/* missing (first write) or unreadable */
	if (len == 0) {
		free(text);
		return;
	}
	if (len != d->len || memcmp(text, d->text, len) != 0) {
		/* Changed on disk since: back it up only if it still loads. */
		char *copy = xmalloc(len + 1);
		int ok;

		memcpy(copy, text, len + 1);
		memset(&tmp, 0, sizeof(tmp));
		ok = doc_parse(copy, len, cur, 1, &od, &dict, msg,
		    sizeof(msg)) == 0 &&
		    config_fill(&tmp, dict, 1, msg, sizeof(msg)) == 0;
		if (dict != NULL)
			iniparser_freedict(dict);
		doc_free(od);
		config_free(&tmp);
		if (!ok) {
			log_warnx("%s does not load (%s); the backup is not "
			    "replaced", path, msg);
			free(text);
			return;
		}
	}
	bak = bak_path(path);
	if (fs_write_atomic(bak, text, len, 0600) == -1)
		log_warn("cannot back up %s to %s", path, bak);
	free(bak);
	free(text);
}

/* Write the known keys back into the original lines (see config.h). */
int
config_save(struct config *c, char *err, size_t errlen)
{
	struct config_doc *d = c->doc, *nd = NULL;
	struct sbuf b = { NULL, 0, 0 };
	enum action act[NKEYS];
	char *fmt[NKEYS], *target = NULL;
	struct stat st;
	mode_t mode = 0644;
	size_t k;
	int rc = -1, saved;

	if (d == NULL || c->path == NULL) {
		err_set(err, errlen, "config_save: no loaded configuration");
		errno = EINVAL;
		return -1;
	}
	for (k = 0; k < NKEYS; k++) {
		fmt[k] = key_format(c, &keys[k]);
		act[k] = (keys[k].flags & (F_SAVE | F_SAVE_SET)) ?
		    key_action(d, k, fmt[k], keys[k].type == CT_BOOL ?
		    *(int *)field(c, &keys[k]) != 0 : 0) : A_SKIP;
	}
	doc_rebuild(&b, d, act, fmt);
	if (b.len == d->len && memcmp(b.p, d->text, d->len) == 0) {
		rc = 0;		/* unchanged: no write, mtime kept */
		goto out;
	}
	if (save_verify(b.p, b.len, c->path, act, fmt, &nd, err, errlen) == -1) {
		b.p = NULL;	/* taken over and freed */
		goto out;
	}
	b.p = NULL;		/* now nd->text */
	/* Write through a symlink, not over it. */
	if (lstat(c->path, &st) == 0 && S_ISLNK(st.st_mode))
		target = realpath(c->path, NULL);
	if (stat(target != NULL ? target : c->path, &st) == 0)
		mode = st.st_mode & 07777;
	else if (errno != ENOENT)
		goto fail;
	backup_current(target != NULL ? target : c->path, c->path, d);
	if (fs_write_atomic(target != NULL ? target : c->path, nd->text, nd->len,
	    mode) == -1)
		goto fail;
	doc_free(d);
	c->doc = nd;
	nd = NULL;
	rc = 0;
	goto out;
fail:
	saved = errno;
	err_set(err, errlen, "cannot write %s: %s", c->path, strerror(saved));
	errno = saved;
out:
	saved = errno;
	doc_free(nd);
	free(b.p);
	free(target);
	for (k = 0; k < NKEYS; k++)
		free(fmt[k]);
	errno = saved;
	return rc;
}

/* Free everything c owns and zero it. */
void
config_free(struct config *c)
{
	size_t k;

	for (k = 0; k < NKEYS; k++)
		if (keys[k].type == CT_STR)
			free(*(char **)field(c, &keys[k]));
	free(c->path);
	free(c->jdk_dir_resolved);
	free(c->jdk17_dir_resolved);
	doc_free(c->doc);
	memset(c, 0, sizeof(*c));
}

/* Gateway base URL (§2.5): as is when it starts with "http", else http://. */
char *
config_gateway_base(const char *gateway)
{
	if (gateway == NULL)
		gateway = "";
	if (strncmp(gateway, "http", 4) == 0)
		return xstrdup(gateway);
	return xasprintf("http://%s", gateway);
}

/* Gateway base URL + path, verbatim. */
char *
config_url(const char *gateway, const char *path)
{
	char *base = config_gateway_base(gateway), *url;

	url = xasprintf("%s%s", base, path != NULL ? path : "");
	free(base);
	return url;
}
