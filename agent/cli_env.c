/*
 * cli_env.c - the .env / .path snapshot: written by `install` and `start`
 * from the invoking shell's environment, applied by the agent at start
 * (after the process lock, before the properties are loaded), so builds see
 * the operator's PATH and tool variables even under systemd or launchd.
 * Format and rules: src/agent/agent/src/pkg/agentcli/envfile.go (writing)
 * and src/agent/agent/src/pkg/envs/envfile.go (applying).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "fsutil.h"
#include "log.h"
#include "util.h"

#define ENVFILE_MAX	((size_t)1024 * 1024)

/* The variables a snapshot takes, in the order they are written. */
static const char *const snap_vars[] = {
	"LANG", "LC_ALL", "JAVA_HOME", "JRE_HOME", "ANT_HOME", "M2_HOME",
	"MAVEN_HOME", "ANDROID_HOME", "ANDROID_SDK_ROOT", "GRADLE_HOME",
	"NVM_DIR", "NVM_BIN", "LD_LIBRARY_PATH", "GOPATH", "GOROOT",
	"PYENV_ROOT", "CARGO_HOME", "RUSTUP_HOME", "NODE_PATH", "PYTHONPATH",
};

/* 1 when key is one of snap_vars. */
static int
snap_var(const char *key)
{
	size_t i;

	for (i = 0; i < nitems(snap_vars); i++)
		if (strcmp(key, snap_vars[i]) == 0)
			return 1;
	return 0;
}

/* 1 when key is a usable environment variable name. */
static int
env_name_ok(const char *key)
{
	const char *p;

	if (*key == '\0' || isdigit((unsigned char)*key))
		return 0;
	for (p = key; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-')
			return 0;
	return 1;
}

/* Append s to the growing buffer *buf (length *len). */
static void
buf_add(char **buf, size_t *len, const char *s)
{
	size_t n = strlen(s);

	*buf = xrealloc(*buf, *len + n + 1);
	memcpy(*buf + *len, s, n + 1);
	*len += n;
}

/*
 * Split the next line off *p (NUL-terminating it in place); returns the
 * trimmed line or NULL at the end.
 */
static char *
next_line(char **p)
{
	char *line = *p, *nl;

	if (line == NULL || *line == '\0')
		return NULL;
	if ((nl = strchr(line, '\n')) != NULL) {
		*nl = '\0';
		*p = nl + 1;
	} else {
		*p = line + strlen(line);
	}
	return str_trim(line);
}

/* Read a snapshot file; *out NULL when it is missing. 0, or -1 (logged). */
static int
envfile_read(const char *path, char **out)
{
	size_t len;

	*out = NULL;
	if (fs_read_regular(path, ENVFILE_MAX, out, &len) == 0)
		return 0;
	if (errno == ENOENT)
		return 0;
	log_warn("%s: not applied", path);
	return -1;
}

/* Write .path from PATH. */
static int
path_write(void)
{
	const char *path = getenv("PATH");
	char *text;
	int rc;

	if (path == NULL || *path == '\0')
		return 0;
	if (strchr(path, '\n') != NULL) {
		cli_warn("PATH contains a line break: %s not written", CLI_PATH_FILE);
		return 0;
	}
	text = xasprintf("%s\n", path);
	rc = fs_write_atomic(CLI_PATH_FILE, text, strlen(text), 0644);
	free(text);
	if (rc == -1) {
		cli_warn("cannot write %s: %s", CLI_PATH_FILE, strerror(errno));
		return -1;
	}
	cli_say("Captured PATH to %s", CLI_PATH_FILE);
	return 0;
}

/* Write .env from the snapshot variables and the old file's other keys. */
static int
env_write(void)
{
	char stamp[64], *buf = NULL, *old = NULL, *p, *line;
	size_t len = 0, i;
	time_t now = time(NULL);
	struct tm tm;
	int count = 0, rc;

	if (localtime_r(&now, &tm) == NULL ||
	    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S%z", &tm) == 0)
		strlcpy_(stamp, "unknown", sizeof(stamp));
	/* RFC 3339 wants the offset as +hh:mm, strftime gives +hhmm. */
	if (strlen(stamp) == 24 && (stamp[19] == '+' || stamp[19] == '-')) {
		memmove(stamp + 23, stamp + 22, 2);
		stamp[22] = ':';
		stamp[25] = '\0';
	}
	buf_add(&buf, &len, "# BK-CI Agent Environment Snapshot\n# Updated: ");
	buf_add(&buf, &len, stamp);
	buf_add(&buf, &len, "\n# Edit this file to add custom variables; changes "
	    "take effect on next restart.\n");
	for (i = 0; i < nitems(snap_vars); i++) {
		const char *v = getenv(snap_vars[i]);
		if (v == NULL || *v == '\0')
			continue;
		if (strchr(v, '\n') != NULL) {
			cli_warn("%s contains a line break: not captured", snap_vars[i]);
			continue;
		}
		buf_add(&buf, &len, snap_vars[i]);
		buf_add(&buf, &len, "=");
		buf_add(&buf, &len, v);
		buf_add(&buf, &len, "\n");
		count++;
	}
	/* Keep what the operator added by hand. */
	if (envfile_read(CLI_ENV_FILE, &old) == 0 && old != NULL) {
		p = old;
		while ((line = next_line(&p)) != NULL) {
			char *eq = strchr(line, '=');
			if (*line == '#' || eq == NULL)
				continue;
			*eq = '\0';
			if (!env_name_ok(str_trim(line)) || snap_var(line))
				continue;
			buf_add(&buf, &len, line);
			buf_add(&buf, &len, "=");
			buf_add(&buf, &len, eq + 1);
			buf_add(&buf, &len, "\n");
			count++;
		}
	}
	free(old);
	rc = fs_write_atomic(CLI_ENV_FILE, buf, len, 0644);
	free(buf);
	if (rc == -1) {
		cli_warn("cannot write %s: %s", CLI_ENV_FILE, strerror(errno));
		return -1;
	}
	cli_say("Captured %d env vars to %s", count, CLI_ENV_FILE);
	return 0;
}

/* Snapshot the invoking environment into .path and .env. */
int
envfile_write(void)
{
	int a = path_write(), b = env_write();

	return a == -1 || b == -1 ? -1 : 0;
}

/* Add the ':'-separated entries of list to out, skipping blanks and dups. */
static void
path_merge(char **out, size_t *len, const char *list)
{
	char *copy = xstrdup(list), *s = copy, *e;

	for (;;) {
		e = strchr(s, ':');
		if (e != NULL)
			*e = '\0';
		str_trim(s);
		if (*s != '\0') {
			/* Look for ":s:" in ":<out>:". */
			char *probe = xasprintf(":%s:", s);
			char *hay = xasprintf(":%s:", *out != NULL ? *out : "");
			if (strstr(hay, probe) == NULL) {
				if (*len > 0)
					buf_add(out, len, ":");
				buf_add(out, len, s);
			}
			free(probe);
			free(hay);
		}
		if (e == NULL)
			break;
		s = e + 1;
	}
	free(copy);
}

/* Apply .env and .path to our own environment. */
int
envfile_apply(void)
{
	char *text = NULL, *p, *line, *merged = NULL;
	size_t mlen = 0;
	int n = 0, rc = 0;

	if (envfile_read(CLI_ENV_FILE, &text) == -1)
		rc = -1;
	p = text;
	while (text != NULL && (line = next_line(&p)) != NULL) {
		char *eq = strchr(line, '='), *key;
		if (*line == '#' || *line == '\0' || eq == NULL)
			continue;
		*eq = '\0';
		key = str_trim(line);
		if (!env_name_ok(key)) {
			if (*key != '\0')
				log_warnx("%s: ignoring the bad name '%s'", CLI_ENV_FILE, key);
			continue;
		}
		if (setenv(key, eq + 1, 1) == -1) {
			log_warn("%s: setenv %s", CLI_ENV_FILE, key);
			continue;
		}
		n++;
	}
	free(text);
	text = NULL;
	if (envfile_read(CLI_PATH_FILE, &text) == -1)
		rc = -1;
	if (text != NULL && *str_trim(text) != '\0') {
		const char *cur = getenv("PATH");
		path_merge(&merged, &mlen, text);
		if (cur != NULL)
			path_merge(&merged, &mlen, cur);
		if (merged != NULL && setenv("PATH", merged, 1) == 0)
			n++;
		free(merged);
	}
	free(text);
	if (n > 0)
		log_info("applied %d variable(s) from %s/%s", n, CLI_ENV_FILE, CLI_PATH_FILE);
	return rc == -1 ? -1 : n;
}
