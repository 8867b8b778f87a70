/*
 * config.h - .agent.properties: load, validate, write back (agent-behaviour §2).
 *
 * Reading uses iniparser. iniparser lowercases keys, while the Java worker
 * reads the same file case-sensitively, so the write-back never re-creates the
 * file from the dictionary: it edits the original lines. Comments, blank
 * lines, unknown keys and the case of every key survive; known keys that are
 * missing are appended. The write is atomic (temp file, fsync, rename).
 *
 * Accepted format (iniparser 4.1 values, GoAgent's ini.v1 framing where the
 * two differ):
 *  - a UTF-8 BOM is skipped (and kept on write-back);
 *  - "key=value" and "key: value" (first '=' or ':' is the delimiter;
 *    iniparser itself only knows '=', the ':' is translated for it);
 *  - '#'/';' comment lines, inline '#'/';' comments, "..." or '...' quotes
 *    and '\' continuation lines as iniparser parses them;
 *  - only keys before the first [section] are read; keys are
 *    case-sensitive: a line whose key differs from a known key only in case
 *    (e.g. "devops.agent.collectoron") is ignored with a warning, as GoAgent
 *    and the Java worker ignore it;
 *  - lines of at most CONFIG_LINE_MAX bytes (iniparser's fgets buffer), a
 *    file of at most CONFIG_MAX_BYTES, no NUL byte.
 * Not supported: ini.v1's %(name)s interpolation.
 *
 * Deliberate differences from GoAgent @bb566049dd1:
 *  - integers are decimal only ("010" is 10, "0x10" is invalid) (W26);
 *  - devops.agent.request.timeout.sec <= 0 becomes 5 (W26);
 *  - a known key given twice is an error, not "the last one wins";
 *  - devops.agent.collectorOn and devops.agent.batch.install are written
 *    back (W5), and comments, unknown keys and sections are kept;
 *  - an empty devops.slave.user and an empty devops.agent.jdk.dir.path are
 *    not filled in at load and so never persisted: the user is resolved at
 *    build time (the user running the agent, W19) and the JDK directory into
 *    jdk_dir_resolved (W8: no absolute WORKDIR path frozen into the file);
 *  - config_load never writes; callers call config_save when they want
 *    GoAgent's "persist the defaults at start" behaviour.
 *
 * Not thread-safe: iniparser's error callback is process-global.
 */
#ifndef CONFIG_H
#define CONFIG_H

#include <stddef.h>

#define CONFIG_FILE ".agent.properties"
/** The backup next to it: CONFIG_FILE CONFIG_BAK_SUFFIX. */
#define CONFIG_BAK_SUFFIX ".bak"
/** Largest accepted file, bytes. */
#define CONFIG_MAX_BYTES (1024 * 1024)
/** Longest accepted line (joined continuation lines included), bytes without
 * the '\n': iniparser 4.1 reads lines into a 1024-byte buffer. */
#define CONFIG_LINE_MAX 1022

struct config_doc;	/* the original lines, private to config.c */

struct config {
	/* Required (§2.3 "Req"). */
	char	*project_id;		/* devops.project.id, trimmed */
	char	*agent_id;		/* devops.agent.id */
	char	*secret_key;		/* devops.agent.secret.key, trimmed; never log */
	char	*gateway;		/* landun.gateway, trimmed */
	char	*env;			/* landun.env, trimmed */
	int	 parallel_task_count;	/* devops.parallel.task.count, >= 0; 0 = unlimited */

	/* Optional, with defaults. */
	char	*file_gateway;		/* landun.fileGateway; "" allowed (warning) */
	char	*slave_user;		/* devops.slave.user; "" = the current user,
					   resolved at build time, kept "" (W19) */
	int	 collector_on;		/* devops.agent.collectorOn; default 1 */
	long long request_timeout_sec;	/* devops.agent.request.timeout.sec; <= 0 or bad -> 5 */
	int	 detect_shell;		/* devops.agent.detect.shell; default 0 */
	char	*ignore_local_ips;	/* devops.agent.ignoreLocalIps; "" -> "127.0.0.1" */
	char	*batch_install;		/* devops.agent.batch.install; kept on write (W5) */
	int	 logs_keep_hours;	/* devops.agent.logs.keep.hours; bad/missing -> 96 */
	char	*jdk_dir;		/* devops.agent.jdk.dir.path as written; may be "",
					   kept "" on write-back (W8) */
	char	*jdk17_dir;		/* devops.agent.jdk17.dir.path as written; "" =
					   WORKDIR/jdk17, kept "" on write-back; the
					   JDK 17 upgrade sets a name relative to
					   WORKDIR (jdk17, jdk17-<unix seconds>) */
	int	 docker_parallel_task_count; /* devops.docker.parallel.task.count; absent -> 4 */
	int	 docker_enable;		/* devops.docker.enable; default 0 */
	char	*language;		/* devops.language; default zh_CN */
	char	*imagedebug_portrange;	/* devops.imagedebug.portrange; "" -> 30000-32767 */

	/* Keys of GoAgent at HEAD (not in @bb566049dd1) and of this agent;
	   written back only when present in the file or not the default. */
	int	 pipeline_enable;	/* devops.pipeline.enable; default 0 */
	int	 mcp_server_port;	/* devops.mcp.server.port; default 0; not
					   used by this agent, kept */
	char	*http_proxy;		/* HTTP_PROXY (upper-case key), trimmed; "" */
	char	*https_proxy;		/* HTTPS_PROXY, trimmed; "" */
	char	*no_proxy;		/* NO_PROXY, trimmed; "" */
	long long pipeline_timeout_sec;	/* devops.pipeline.timeout.sec; default 3600,
					   <= 0 or bad -> 3600 */
	char	*pipeline_workspace;	/* devops.pipeline.workspace: prefix of the
					   pipeline task dirs, relative to WORKDIR
					   unless absolute; "" -> pipeline_tasks */
	char	*pipeline_allowlist;	/* devops.pipeline.allowlist: sha256
					   allow-list file; "" = no integrity check */
	char	*poll_mode;		/* devops.agent.poll.mode: "auto" (ask, and
					   the legacy loops when the server has no
					   ask), "ask" or "legacy"; "" -> auto */
	/* Cron task source (agent/cron.c, docs/cron.md). */
	char	*cron_etcd;		/* devops.cron.etcd: comma list of etcd
					   endpoints; "" = cron off */
	char	*cron_prefix;		/* devops.cron.prefix; "" -> /cron/ */
	char	*cron_tls_ca;		/* devops.cron.tls.ca: PEM roots; "" = system */
	char	*cron_tls_cert;		/* devops.cron.tls.cert: client cert; "" */
	char	*cron_tls_key;		/* devops.cron.tls.key: its key; "" */
	int	 cron_utc;		/* devops.cron.utc: read expressions in UTC;
					   default 0 (the local zone) */
	int	 cron_lock_ttl_sec;	/* devops.cron.lock.ttl.sec; default 5 */
	long long cron_timeout_sec;	/* devops.cron.timeout.sec; default 3600 */
	char	*cron_workspace;	/* devops.cron.workspace; "" -> cron_tasks */
	int	 cron_log_batch;	/* devops.cron.log.batch; default 100 */
	long long cron_log_commit_ms;	/* devops.cron.log.commit.ms; default 1000 */
	long long cron_log_file_max;	/* devops.cron.log.file.max.bytes; default 16 MiB */
	/* Cron job log to a Redis stream (agent/cron_sink_redis.c). */
	char	*cron_log_stream;	/* devops.cron.log.stream: stream key on the
					   devops.queue.redis server; "" -> devops:cron:log */
	long long cron_log_stream_maxlen; /* devops.cron.log.stream.maxlen: about
					   this many entries kept; default 100000 */

	/* Redis task queue (docs/queue.md); off while queue_redis is "". */
	char	*queue_redis;		/* devops.queue.redis: redis://[:pw@]host:port/db;
					   a secret (the password): never log it */
	char	*queue_name;		/* devops.queue.name; "" -> queue_job_task */
	char	*queue_control;		/* devops.queue.control; "" -> <name>_control */
	int	 queue_logs;		/* devops.queue.logs; default 1 */
	char	*queue_logs_queue;	/* devops.queue.logs.queue; "" -> <name>_logs */
	char	*queue_logs_http;	/* devops.queue.logs.http: URL or "" */
	char	*queue_cmd_dir;		/* devops.queue.cmd.dir; relative to WORKDIR
					   unless absolute; "" -> queue_cmd */
	int	 queue_parallel;	/* devops.queue.parallel; <= 0 -> 4 */
	/* Operator side: local metrics, disk guard, job hooks. */
	char	*metrics_listen;	/* devops.agent.metrics.listen: "host:port"
					   of the Prometheus endpoint; "" = off */
	int	 metrics_remote;	/* devops.agent.metrics.remote: a
					   non-loopback listen address is allowed */
	long long disk_min_free_mb;	/* devops.agent.disk.min.free.mb; 2048,
					   0 = no free-space guard */
	int	 disk_min_inodes_pct;	/* devops.agent.disk.min.inodes.percent;
					   5, 0 = no inode guard */
	long long hooks_timeout_sec;	/* devops.agent.hooks.timeout.sec; 300 */

	/* Derived at load, never written back. */
	char	*path;			/* file path as given to config_load */
	char	*jdk_dir_resolved;	/* JDK dir: jdk_dir (relative: to workdir), else
					   WORKDIR/jdk if a dir, else WORKDIR/jre */
	char	*jdk17_dir_resolved;	/* JDK 17 dir: jdk17_dir (relative: to
					   workdir), else WORKDIR/jdk17 */

	struct config_doc *doc;		/* original lines, for config_save */
};

/**
 * Load and validate path (normally ".agent.properties" in WORKDIR).
 * c: overwritten (zeroed first; a previous content is not freed); on
 * success the caller owns it and frees it with config_free().
 * path: copied into c->path. workdir: absolute install directory, used to
 * resolve jdk_dir_resolved (NULL: "."). Warnings (empty landun.fileGateway,
 * invalid optional values replaced by defaults, mis-cased keys) go to
 * log_warnx().
 * Returns 0, or -1 with a one-line message in err (errlen bytes; err may be
 * NULL) naming the key or line, e.g. "devops.agent.id: missing or blank",
 * "devops.agent.id: duplicate key (lines 3 and 9)",
 * "devops.parallel.task.count: not a decimal integer >= 0: 'abc'",
 * "line 4: longer than 1022 bytes", "line 1: NUL byte (not a text file)".
 * Failures: unreadable or too large file, a line that is not key=value,
 * comment or [section], a too long line, a NUL byte, a duplicate known key,
 * a required key missing/blank, devops.parallel.task.count or
 * devops.docker.parallel.task.count not a decimal int >= 0. Messages never
 * contain the secret key value. On failure c holds nothing to free and the
 * file is not touched.
 */
int config_load(struct config *c, const char *path, const char *workdir,
    char *err, size_t errlen);

/**
 * config_load(path), and when that fails (file missing, empty, unparsable
 * or a required key invalid), the backup path".bak" that config_save keeps
 * (GoAgent HEAD src/agent/agent/src/pkg/config/config.go LoadAgentConfig):
 * when the backup loads, its bytes are written over path atomically (mode:
 * that of the old file, else 0640; agent_save_config narrows it), path is
 * loaded again and a warning is logged.
 * restored: set to 1 when the backup was used, else 0.
 * Returns 0 (c as after config_load), or -1 with err naming both problems,
 * e.g. "line 3: not a key=value line; backup .agent.properties.bak:
 * devops.agent.id: missing or blank" or ".agent.properties: No such file or
 * directory; backup .agent.properties.bak: No such file or directory".
 */
int config_load_restore(struct config *c, const char *path, const char *workdir,
    int *restored, char *err, size_t errlen);

/**
 * Write the known keys back into the text loaded by config_load (or written
 * by the last successful config_save) and write the file atomically (mode
 * 0644 when created, else the old mode; a symlink is written through).
 * Keys written: the 17 keys of §2.4 and devops.agent.jdk17.dir.path, plus
 * devops.agent.collectorOn, devops.agent.batch.install, the devops.pipeline.*
 * keys, devops.mcp.server.port, HTTP_PROXY, HTTPS_PROXY and NO_PROXY when
 * they are in the file or differ from their default. A key's line is rewritten only when
 * its value text is not already the written form (booleans: any accepted
 * spelling of the same value is kept); the key text, its indentation, the
 * delimiter and its blanks and the line ending stay, an inline comment on a
 * rewritten line is lost. Missing keys are appended as "key=value" in §2.4
 * order before the first [section] (else at the end) with the file's line
 * ending. Every other byte is kept. Does nothing (no write, mtime and inode
 * kept) when the text is unchanged.
 * Before a write, the file on disk is copied to path".bak" (mode 0600, best
 * effort: a failure is logged) when it is non-empty and loads; a file that
 * no longer loads never replaces the backup.
 * The new text is parsed again before writing: a value that would not read
 * back identically (line break, '#', ';', surrounding quotes or blanks) or a
 * result config_load would reject fails with EINVAL and nothing is written.
 * Returns 0, or -1 with errno (EINVAL, ENOSPC, EACCES, ...) and a message in
 * err (never the secret); the old file is then intact.
 */
int config_save(struct config *c, char *err, size_t errlen);

/** Free everything c owns; c is zeroed. Safe on a zeroed c. */
void config_free(struct config *c);

/**
 * Base URL of a gateway value (§2.5): the value itself when it starts with
 * the four characters "http", else "http://" + value. New string, caller frees.
 */
char *config_gateway_base(const char *gateway);

/**
 * Full request URL: config_gateway_base(gateway) + path (path starts with
 * "/ms/..."; appended verbatim, no slash normalisation). Caller frees.
 */
char *config_url(const char *gateway, const char *path);

#endif
