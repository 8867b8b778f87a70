/*
 * config.h - .agent.properties: load, validate, write back (agent-behaviour §2).
 *
 * Reading uses iniparser. iniparser lowercases keys, while the Java worker
 * reads the same file case-sensitively, so the write-back never re-creates the
 * file from the dictionary: it edits the original lines. Comments, blank
 * lines, unknown keys and the case of every key survive; known keys that are
 * missing are appended. The write is atomic (temp file, fsync, rename).
 */
#ifndef CONFIG_H
#define CONFIG_H

#include <stddef.h>

#define CONFIG_FILE ".agent.properties"

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
	char	*slave_user;		/* devops.slave.user; "" = the current user */
	int	 collector_on;		/* devops.agent.collectorOn; default 1 */
	long long request_timeout_sec;	/* devops.agent.request.timeout.sec; <= 0 or bad -> 5 */
	int	 detect_shell;		/* devops.agent.detect.shell; default 0 */
	char	*ignore_local_ips;	/* devops.agent.ignoreLocalIps; "" -> "127.0.0.1" */
	char	*batch_install;		/* devops.agent.batch.install; kept on write (W5) */
	int	 logs_keep_hours;	/* devops.agent.logs.keep.hours; bad/missing -> 96 */
	char	*jdk_dir;		/* devops.agent.jdk.dir.path as written; may be "" */
	int	 docker_parallel_task_count; /* devops.docker.parallel.task.count; absent -> 4 */
	int	 docker_enable;		/* devops.docker.enable; default 0 */
	char	*language;		/* devops.language; default zh_CN */
	char	*imagedebug_portrange;	/* devops.imagedebug.portrange; "" -> 30000-32767 */

	/* Keys of this agent (not in GoAgent @bb566049dd1). */
	int	 pipeline_enable;	/* devops.pipeline.enable; default 0 */
	long long pipeline_timeout_sec;	/* devops.pipeline.timeout.sec; default 3600 */

	/* Derived at load, never written back. */
	char	*path;			/* file path as given to config_load */
	char	*jdk_dir_resolved;	/* absolute JDK dir: jdk_dir, else WORKDIR/jdk, else WORKDIR/jre */

	struct config_doc *doc;		/* original lines, for config_save */
};

/**
 * Load and validate path (normally ".agent.properties" in WORKDIR).
 * workdir: absolute install directory, used to resolve the JDK default.
 * Returns 0, or -1 with a one-line message in err (errlen bytes) that names
 * the offending key or problem, e.g. "devops.agent.id: missing". Failures:
 * unreadable file, a line iniparser rejects (too long, no '='), a duplicate
 * known key, a required key missing/blank, an integer that is not decimal or
 * is out of range. On failure c holds nothing to free and the file is not
 * touched.
 */
int config_load(struct config *c, const char *path, const char *workdir,
    char *err, size_t errlen);

/**
 * Write the known keys back into the original text, preserving comments,
 * unknown keys and key case, and write the file atomically (mode 0644 when
 * created, else the old mode). Does nothing when the text is unchanged.
 * Returns 0, or -1 with errno (ENOSPC, EACCES, ...) and a message in err; the
 * old file is then intact.
 */
int config_save(struct config *c, char *err, size_t errlen);

/** Free everything c owns; c is zeroed. */
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
