/* test_config.c - unit tests of common/config.c (.agent.properties). */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include "config.h"
#include "fsutil.h"
#include "log.h"
#include "t.h"
#include "util.h"

static char tmpdir[64];

/* The template the server ships (values substituted), with a licence header. */
#define LICENCE \
	"#\n" \
	"# Tencent is pleased to support the open source community by making BK-CI available.\n" \
	"#\n" \
	"# Copyright (C) 2019 THL A29 Limited, a Tencent company.  All rights reserved.\n" \
	"#\n" \
	"# Licensed under the MIT License (the \"License\"); see https://opensource.org/licenses/MIT\n" \
	"#\n"
#define TEMPLATE_KEYS \
	"devops.project.id=demo\n" \
	"devops.agent.id=a1b2c3\n" \
	"devops.agent.secret.key=S3cr3tV4lue\n" \
	"landun.gateway=devops.example.com\n" \
	"landun.fileGateway=file.example.com\n" \
	"devops.parallel.task.count=4\n" \
	"landun.env=PROD\n" \
	"devops.agent.collectorOn=false\n" \
	"devops.agent.detect.shell=true\n" \
	"devops.agent.batch.install=a1b2c3\n" \
	"devops.agent.logs.keep.hours=96\n" \
	"devops.docker.parallel.task.count=4\n" \
	"devops.docker.enable=false\n" \
	"devops.language=zh_CN\n"
#define TEMPLATE LICENCE TEMPLATE_KEYS
/* What config_save appends to TEMPLATE (the §2.4 keys it lacks). */
#define TEMPLATE_APPENDED \
	"devops.slave.user=\n" \
	"devops.agent.request.timeout.sec=5\n" \
	"devops.agent.ignoreLocalIps=127.0.0.1\n" \
	"devops.agent.jdk.dir.path=\n" \
	"devops.agent.jdk17.dir.path=\n" \
	"devops.imagedebug.portrange=30000-32767\n"
/* All 17 keys of §2.4 in their written form: config_save changes nothing. */
#define FULL \
	"# full\n" \
	"devops.project.id=demo\n" \
	"devops.agent.id=a1b2c3\n" \
	"devops.agent.secret.key=S3cr3tV4lue\n" \
	"landun.gateway = devops.example.com\n" \
	"landun.fileGateway=\n" \
	"devops.parallel.task.count: 4\n" \
	"landun.env=PROD\n" \
	"devops.slave.user=\n" \
	"devops.agent.request.timeout.sec=5\n" \
	"devops.agent.detect.shell=yes\n" \
	"devops.agent.ignoreLocalIps=127.0.0.1\n" \
	"devops.agent.logs.keep.hours=96\n" \
	"devops.agent.jdk.dir.path=\n" \
	"devops.agent.jdk17.dir.path=\n" \
	"devops.docker.parallel.task.count=4\n" \
	"devops.docker.enable=false\n" \
	"devops.language=zh_CN\n" \
	"devops.imagedebug.portrange=30000-32767\n"
#define REQUIRED \
	"devops.project.id=p\n" \
	"devops.agent.id=a\n" \
	"devops.agent.secret.key=s\n" \
	"landun.gateway=g\n" \
	"devops.parallel.task.count=2\n" \
	"landun.env=PROD\n"

/* Path of name inside the test directory. Caller frees. */
static char *
tpath(const char *name)
{
	return xasprintf("%s/%s", tmpdir, name);
}

/* Write len bytes of data to name in the test directory; returns its path. */
static char *
put(const char *name, const char *data, size_t len)
{
	char *p = tpath(name);
	FILE *f = fopen(p, "wb");

	if (f != NULL) {
		if (fwrite(data, 1, len, f) != len)
			fprintf(stderr, "short write %s\n", p);
		fclose(f);
	}
	return p;
}

/* put() of a NUL-terminated string. */
static char *
puts_(const char *name, const char *data)
{
	return put(name, data, strlen(data));
}

/* Whole file as a string. Caller frees. */
static char *
slurp(const char *path)
{
	char *s = NULL;
	size_t len;

	if (fs_read_file(path, 64 << 20, &s, &len) == -1)
		return xstrdup("(unreadable)");
	return s;
}

/* Load text as a config file into c; returns config_load's result. */
static int
load_text(struct config *c, const char *text, char *err, size_t errlen)
{
	char *p = puts_(CONFIG_FILE, text);
	int rc = config_load(c, p, tmpdir, err, errlen);

	free(p);
	return rc;
}

/* True when err is one line and does not contain the test secret. */
static int
clean_msg(const char *err)
{
	return err[0] != '\0' && strchr(err, '\n') == NULL &&
	    strstr(err, "S3cr3tV4lue") == NULL;
}

TEST(t_template_roundtrip)
{
	struct config c;
	char err[256], *p, *s;
	struct stat st1, st2;

	CHECK(load_text(&c, TEMPLATE "my.unknown.Key = kept # note\n", err,
	    sizeof(err)) == 0);
	CHECK_STR(c.project_id, "demo");
	CHECK_STR(c.agent_id, "a1b2c3");
	CHECK_STR(c.secret_key, "S3cr3tV4lue");
	CHECK_STR(c.gateway, "devops.example.com");
	CHECK_STR(c.file_gateway, "file.example.com");
	CHECK(c.parallel_task_count == 4);
	CHECK_STR(c.env, "PROD");
	CHECK(c.collector_on == 0);
	CHECK(c.detect_shell == 1);
	CHECK_STR(c.batch_install, "a1b2c3");
	CHECK(c.logs_keep_hours == 96);
	CHECK(c.docker_parallel_task_count == 4);
	CHECK(c.docker_enable == 0);
	CHECK_STR(c.language, "zh_CN");
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	p = tpath(CONFIG_FILE);
	s = slurp(p);
	/* Everything kept (collectorOn with its case, the unknown key), the
	 * missing §2.4 keys appended. */
	CHECK_STR(s, TEMPLATE "my.unknown.Key = kept # note\n" TEMPLATE_APPENDED);
	free(s);
	config_free(&c);

	/* Reload: same values; a second save does not write. */
	CHECK(config_load(&c, p, tmpdir, err, sizeof(err)) == 0);
	CHECK(c.collector_on == 0);
	CHECK_STR(c.ignore_local_ips, "127.0.0.1");
	CHECK(c.request_timeout_sec == 5);
	CHECK(stat(p, &st1) == 0);
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	CHECK(stat(p, &st2) == 0);
	CHECK(st1.st_ino == st2.st_ino);
	config_free(&c);
	free(p);
}

TEST(t_crlf)
{
	const char *in =
	    "# licence\r\n"
	    "devops.project.id=p\r\n"
	    "devops.agent.id=a\r\n"
	    "devops.agent.secret.key=s\r\n"
	    "landun.gateway=g\r\n"
	    "devops.parallel.task.count=2\r\n"
	    "landun.env=PROD\r\n"
	    "devops.agent.collectorOn=false\r\n";
	struct config c;
	char err[256], *p, *s, *want;

	CHECK(load_text(&c, in, err, sizeof(err)) == 0);
	CHECK_STR(c.gateway, "g");
	CHECK_STR(c.env, "PROD");
	CHECK(c.collector_on == 0);
	free(c.gateway);
	c.gateway = xstrdup("g2:80");
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	p = tpath(CONFIG_FILE);
	s = slurp(p);
	want = xasprintf("%s",
	    "# licence\r\n"
	    "devops.project.id=p\r\n"
	    "devops.agent.id=a\r\n"
	    "devops.agent.secret.key=s\r\n"
	    "landun.gateway=g2:80\r\n"
	    "devops.parallel.task.count=2\r\n"
	    "landun.env=PROD\r\n"
	    "devops.agent.collectorOn=false\r\n"
	    "landun.fileGateway=\r\n"
	    "devops.slave.user=\r\n"
	    "devops.agent.request.timeout.sec=5\r\n"
	    "devops.agent.detect.shell=false\r\n"
	    "devops.agent.ignoreLocalIps=127.0.0.1\r\n"
	    "devops.agent.logs.keep.hours=96\r\n"
	    "devops.agent.jdk.dir.path=\r\n"
	    "devops.agent.jdk17.dir.path=\r\n"
	    "devops.docker.parallel.task.count=4\r\n"
	    "devops.docker.enable=false\r\n"
	    "devops.language=zh_CN\r\n"
	    "devops.imagedebug.portrange=30000-32767\r\n");
	CHECK_STR(s, want);
	free(want);
	free(s);
	free(p);
	config_free(&c);
}

TEST(t_defaults)
{
	struct config c;
	char err[256], *jdk;

	CHECK(load_text(&c, REQUIRED, err, sizeof(err)) == 0);
	CHECK_STR(c.file_gateway, "");
	CHECK_STR(c.slave_user, "");
	CHECK(c.collector_on == 1);
	CHECK(c.request_timeout_sec == 5);
	CHECK(c.detect_shell == 0);
	CHECK_STR(c.ignore_local_ips, "127.0.0.1");
	CHECK_STR(c.batch_install, "");
	CHECK(c.logs_keep_hours == 96);
	CHECK_STR(c.jdk_dir, "");
	CHECK(c.docker_parallel_task_count == 4);
	CHECK(c.docker_enable == 0);
	CHECK_STR(c.language, "zh_CN");
	CHECK_STR(c.imagedebug_portrange, "30000-32767");
	CHECK(c.pipeline_enable == 0);
	CHECK(c.pipeline_timeout_sec == 3600);
	jdk = xasprintf("%s/jre", tmpdir);
	CHECK_STR(c.jdk_dir_resolved, jdk);
	free(jdk);
	CHECK(c.path != NULL && str_ends(c.path, CONFIG_FILE));
	config_free(&c);

	/* WORKDIR/jdk wins over jre when it exists; relative paths are
	 * relative to workdir. */
	jdk = xasprintf("%s/jdk", tmpdir);
	CHECK(mkdir(jdk, 0755) == 0);
	CHECK(load_text(&c, REQUIRED, err, sizeof(err)) == 0);
	CHECK_STR(c.jdk_dir_resolved, jdk);
	config_free(&c);
	CHECK(rmdir(jdk) == 0);
	free(jdk);
	CHECK(load_text(&c, REQUIRED "devops.agent.jdk.dir.path=java/17\n",
	    err, sizeof(err)) == 0);
	jdk = xasprintf("%s/java/17", tmpdir);
	CHECK_STR(c.jdk_dir_resolved, jdk);
	free(jdk);
	config_free(&c);
	CHECK(load_text(&c, REQUIRED "devops.agent.jdk.dir.path=/opt/jdk\n",
	    err, sizeof(err)) == 0);
	CHECK_STR(c.jdk_dir_resolved, "/opt/jdk");
	config_free(&c);
}

TEST(t_lenient_values)
{
	struct config c;
	char err[256];

	CHECK(load_text(&c, REQUIRED
	    "devops.agent.request.timeout.sec=0\n"
	    "devops.agent.logs.keep.hours=abc\n"
	    "devops.language=not a tag!\n"
	    "devops.agent.ignoreLocalIps=\n"
	    "devops.imagedebug.portrange=\n"
	    "devops.pipeline.timeout.sec=-5\n"
	    "devops.pipeline.enable=On\n"
	    "devops.agent.detect.shell=maybe\n"
	    "devops.agent.collectorOn=Y\n"
	    "devops.docker.enable=1\n", err, sizeof(err)) == 0);
	CHECK(c.request_timeout_sec == 5);
	CHECK(c.logs_keep_hours == 96);
	CHECK_STR(c.language, "zh_CN");
	CHECK_STR(c.ignore_local_ips, "127.0.0.1");
	CHECK_STR(c.imagedebug_portrange, "30000-32767");
	CHECK(c.pipeline_timeout_sec == 3600);
	CHECK(c.pipeline_enable == 1);
	CHECK(c.detect_shell == 0);
	CHECK(c.collector_on == 1);	/* "Y" is not an ini.v1 boolean */
	CHECK(c.docker_enable == 1);
	config_free(&c);

	CHECK(load_text(&c, REQUIRED
	    "devops.agent.request.timeout.sec=0x10\n"
	    "devops.agent.logs.keep.hours=010\n"
	    "devops.language=en-US\n"
	    "devops.pipeline.timeout.sec=7200\n"
	    "devops.agent.collectorOn=off\n"
	    "devops.agent.detect.shell=TRUE\n", err, sizeof(err)) == 0);
	CHECK(c.request_timeout_sec == 5);	/* W26: no hex */
	CHECK(c.logs_keep_hours == 10);		/* W26: decimal, not octal */
	CHECK_STR(c.language, "en-US");
	CHECK(c.pipeline_timeout_sec == 7200);
	CHECK(c.collector_on == 0);
	CHECK(c.detect_shell == 1);
	config_free(&c);
}

TEST(t_required_missing)
{
	static const char *req[] = { "devops.project.id", "devops.agent.id",
	    "devops.agent.secret.key", "landun.gateway",
	    "devops.parallel.task.count", "landun.env" };
	size_t i, j;
	struct config c;
	char err[256], want[128];

	for (i = 0; i < nitems(req); i++) {
		for (j = 0; j < 2; j++) {
			char *text = xstrdup("");
			size_t k;

			/* j == 0: key left out; j == 1: present but blank. */
			for (k = 0; k < nitems(req); k++) {
				char *n;

				if (k == i && j == 0)
					continue;
				n = xasprintf("%s%s=%s\n", text, req[k],
				    k == i ? "  " : "1");
				free(text);
				text = n;
			}
			snprintf(want, sizeof(want), "%s: missing or blank",
			    req[i]);
			err[0] = '\0';
			CHECK(load_text(&c, text, err, sizeof(err)) == -1);
			CHECK_STR(err, want);
			CHECK(c.doc == NULL && c.project_id == NULL);
			free(text);
		}
	}
	/* Keys under a section are not the agent's. */
	CHECK(load_text(&c, "devops.project.id=p\ndevops.agent.id=a\n"
	    "devops.agent.secret.key=s\nlandun.gateway=g\n"
	    "devops.parallel.task.count=2\n[other]\nlandun.env=PROD\n",
	    err, sizeof(err)) == -1);
	CHECK_STR(err, "landun.env: missing or blank");
}

TEST(t_duplicate)
{
	struct config c;
	char err[256];

	CHECK(load_text(&c, REQUIRED "devops.agent.id=b\n", err,
	    sizeof(err)) == -1);
	CHECK(str_starts(err, "devops.agent.id: duplicate key"));
	CHECK(load_text(&c, REQUIRED "devops.agent.secret.key : S3cr3tV4lue\n",
	    err, sizeof(err)) == -1);
	CHECK(str_starts(err, "devops.agent.secret.key: duplicate key"));
	CHECK(clean_msg(err));
	/* Unknown keys and keys in sections may repeat. */
	CHECK(load_text(&c, REQUIRED "x=1\nx=2\n[s]\ndevops.agent.id=z\n"
	    "[t]\ndevops.agent.id=y\n", err, sizeof(err)) == 0);
	CHECK_STR(c.agent_id, "a");
	config_free(&c);
}

TEST(t_bad_ints)
{
	struct config c;
	char err[256];

	CHECK(load_text(&c, "devops.project.id=p\ndevops.agent.id=a\n"
	    "devops.agent.secret.key=s\nlandun.gateway=g\nlandun.env=E\n"
	    "devops.parallel.task.count=abc\n", err, sizeof(err)) == -1);
	CHECK_STR(err, "devops.parallel.task.count: not a decimal integer "
	    ">= 0: 'abc'");
	CHECK(load_text(&c, "devops.project.id=p\ndevops.agent.id=a\n"
	    "devops.agent.secret.key=s\nlandun.gateway=g\nlandun.env=E\n"
	    "devops.parallel.task.count=0x10\n", err, sizeof(err)) == -1);
	CHECK_STR(err, "devops.parallel.task.count: not a decimal integer "
	    ">= 0: '0x10'");
	CHECK(load_text(&c, "devops.project.id=p\ndevops.agent.id=a\n"
	    "devops.agent.secret.key=s\nlandun.gateway=g\nlandun.env=E\n"
	    "devops.parallel.task.count=-1\n", err, sizeof(err)) == -1);
	CHECK(load_text(&c, "devops.project.id=p\ndevops.agent.id=a\n"
	    "devops.agent.secret.key=s\nlandun.gateway=g\nlandun.env=E\n"
	    "devops.parallel.task.count=99999999999\n", err, sizeof(err)) == -1);
	CHECK(load_text(&c, "devops.project.id=p\ndevops.agent.id=a\n"
	    "devops.agent.secret.key=s\nlandun.gateway=g\nlandun.env=E\n"
	    "devops.parallel.task.count=010\n", err, sizeof(err)) == 0);
	CHECK(c.parallel_task_count == 10);
	config_free(&c);
	CHECK(load_text(&c, "devops.project.id=p\ndevops.agent.id=a\n"
	    "devops.agent.secret.key=s\nlandun.gateway=g\nlandun.env=E\n"
	    "devops.parallel.task.count=0\n", err, sizeof(err)) == 0);
	CHECK(c.parallel_task_count == 0);
	config_free(&c);
	CHECK(load_text(&c, REQUIRED "devops.docker.parallel.task.count=x\n",
	    err, sizeof(err)) == -1);
	CHECK_STR(err, "devops.docker.parallel.task.count: not a decimal "
	    "integer >= 0: 'x'");
	CHECK(load_text(&c, REQUIRED "devops.docker.parallel.task.count=\n",
	    err, sizeof(err)) == -1);
	CHECK_STR(err, "devops.docker.parallel.task.count: not a decimal "
	    "integer >= 0: ''");
	CHECK(load_text(&c, REQUIRED "devops.docker.parallel.task.count=-2\n",
	    err, sizeof(err)) == -1);
	CHECK(load_text(&c, REQUIRED "devops.docker.parallel.task.count=0\n",
	    err, sizeof(err)) == 0);
	CHECK(c.docker_parallel_task_count == 0);
	config_free(&c);
	/* Control bytes in a quoted value do not break the message. */
	CHECK(load_text(&c, REQUIRED "devops.docker.parallel.task.count=\"1\t2\"\n",
	    err, sizeof(err)) == -1);
	CHECK_STR(err, "devops.docker.parallel.task.count: not a decimal "
	    "integer >= 0: '1?2'");
}

TEST(t_long_lines)
{
	struct config c;
	char err[256], *big, *line, *text;
	size_t n = 4u << 20;

	/* A 4 MB line: a clean one-line error, no crash. */
	big = xmalloc(n + 64);
	memcpy(big, "devops.agent.secret.key=", 24);
	memset(big + 24, 'x', n - 24);
	memcpy(big + n, "\n", 2);
	line = puts_(CONFIG_FILE, big);
	CHECK(config_load(&c, line, tmpdir, err, sizeof(err)) == -1);
	CHECK(clean_msg(err));
	CHECK(strstr(err, "larger than") != NULL);
	free(line);
	free(big);

	/* iniparser's buffer: 1022 bytes per line pass, 1023 fail. */
	big = xmalloc(2048);
	memset(big, 'v', 2047);
	big[2047] = '\0';
	text = xasprintf(REQUIRED "k=%.*s\n", 1020, big);
	CHECK(load_text(&c, text, err, sizeof(err)) == 0);
	config_free(&c);
	free(text);
	text = xasprintf(REQUIRED "k=%.*s\r\n", 1020, big);
	CHECK(load_text(&c, text, err, sizeof(err)) == -1);
	CHECK_STR(err, "line 7: longer than 1022 bytes");
	free(text);
	text = xasprintf(REQUIRED "# %.*s\n", 2000, big);
	CHECK(load_text(&c, text, err, sizeof(err)) == -1);
	CHECK_STR(err, "line 7: longer than 1022 bytes");
	free(text);
	/* Continuation lines count together. */
	text = xasprintf(REQUIRED "k=%.*s\\\n%.*s\n", 600, big, 600, big);
	CHECK(load_text(&c, text, err, sizeof(err)) == -1);
	CHECK_STR(err, "line 8: longer than 1022 bytes");
	free(text);
	free(big);
}

TEST(t_binary)
{
	struct config c;
	char err[256], blob[4096], *p;
	unsigned int seed = 12345;
	size_t i;

	for (i = 0; i < sizeof(blob); i++)
		blob[i] = (char)(rand_r(&seed) & 0xff);
	blob[100] = '\0';
	p = put(CONFIG_FILE, blob, sizeof(blob));
	CHECK(config_load(&c, p, tmpdir, err, sizeof(err)) == -1);
	CHECK(clean_msg(err));
	CHECK(strstr(err, "NUL byte") != NULL);
	free(p);

	/* A NUL after valid lines: the message names its line. */
	p = put(CONFIG_FILE, REQUIRED "x=1\0\n", sizeof(REQUIRED "x=1\0\n") - 1);
	CHECK(config_load(&c, p, tmpdir, err, sizeof(err)) == -1);
	CHECK_STR(err, "line 7: NUL byte (not a text file)");
	free(p);

	/* Garbage without NUL bytes. */
	for (i = 0; i < sizeof(blob); i++)
		blob[i] = (char)((rand_r(&seed) % 255) + 1);
	p = put(CONFIG_FILE, blob, sizeof(blob));
	CHECK(config_load(&c, p, tmpdir, err, sizeof(err)) == -1);
	CHECK(clean_msg(err));
	free(p);

	/* Not a key=value line, no key. */
	CHECK(load_text(&c, REQUIRED "just words\n", err, sizeof(err)) == -1);
	CHECK_STR(err, "line 7: not a key=value line");
	CHECK(load_text(&c, REQUIRED " = v\n", err, sizeof(err)) == -1);
	CHECK_STR(err, "line 7: empty key");
	CHECK(load_text(&c, REQUIRED "[ ]\n", err, sizeof(err)) == -1);
	CHECK_STR(err, "line 7: empty section name");
	CHECK(load_text(&c, REQUIRED "k=v\\\n", err, sizeof(err)) == -1);
	CHECK(clean_msg(err));
	/* A secret-looking line with no delimiter is not quoted back. */
	CHECK(load_text(&c, REQUIRED "S3cr3tV4lue\n", err, sizeof(err)) == -1);
	CHECK(clean_msg(err));

	/* Unreadable file. */
	p = tpath("does-not-exist");
	CHECK(config_load(&c, p, tmpdir, err, sizeof(err)) == -1);
	CHECK(strstr(err, "No such file") != NULL);
	free(p);
}

TEST(t_bom)
{
	struct config c;
	char err[256], *p, *s;

	CHECK(load_text(&c, "\xEF\xBB\xBF" TEMPLATE, err, sizeof(err)) == 0);
	CHECK_STR(c.project_id, "demo");
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	config_free(&c);
	p = tpath(CONFIG_FILE);
	s = slurp(p);
	CHECK_STR(s, "\xEF\xBB\xBF" TEMPLATE TEMPLATE_APPENDED);
	free(s);
	free(p);
	/* BOM directly before the first key. */
	CHECK(load_text(&c, "\xEF\xBB\xBF" REQUIRED, err, sizeof(err)) == 0);
	CHECK_STR(c.project_id, "p");
	config_free(&c);
}

TEST(t_formats)
{
	struct config c;
	char err[256];

	CHECK(load_text(&c,
	    "; comment\n"
	    "  devops.project.id : p1  \n"
	    "devops.agent.id=\"quoted\"\n"
	    "devops.agent.secret.key='sq'\n"
	    "landun.gateway = http://h:8080 # inline\n"
	    "landun.fileGateway = f ; inline\n"
	    "devops.parallel.task.count = 3\n"
	    "landun.env=a\\\n"
	    "b\n"
	    "DEVOPS.AGENT.ID=ignored\n"
	    "devops.agent.collectoron=false\n"
	    "[section]\n"
	    "devops.agent.collectorOn=false\n",
	    err, sizeof(err)) == 0);
	CHECK_STR(c.project_id, "p1");
	CHECK_STR(c.agent_id, "quoted");
	CHECK_STR(c.secret_key, "sq");
	CHECK_STR(c.gateway, "http://h:8080");
	CHECK_STR(c.file_gateway, "f");
	CHECK(c.parallel_task_count == 3);
	CHECK_STR(c.env, "ab");
	CHECK(c.collector_on == 1);	/* mis-cased and section keys ignored */
	config_free(&c);
}

TEST(t_save_nochange)
{
	struct config c;
	char err[256], *p, *s;
	struct stat st1, st2;

	CHECK(load_text(&c, FULL, err, sizeof(err)) == 0);
	CHECK(c.detect_shell == 1);
	p = tpath(CONFIG_FILE);
	CHECK(stat(p, &st1) == 0);
	usleep(20000);
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	CHECK(stat(p, &st2) == 0);
	CHECK(st1.st_ino == st2.st_ino);
	CHECK(st1.st_mtim.tv_sec == st2.st_mtim.tv_sec &&
	    st1.st_mtim.tv_nsec == st2.st_mtim.tv_nsec);
	s = slurp(p);
	CHECK_STR(s, FULL);
	free(s);
	free(p);
	config_free(&c);
}

TEST(t_save_changes)
{
	struct config c;
	char err[256], *p, *s;
	struct stat st;

	CHECK(load_text(&c, FULL "tail.key=1", err, sizeof(err)) == 0);
	p = tpath(CONFIG_FILE);
	CHECK(chmod(p, 0640) == 0);
	free(c.gateway);
	c.gateway = xstrdup("new.example.com:8080");
	c.parallel_task_count = 10;
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	s = slurp(p);
	CHECK_STR(s,
	    "# full\n"
	    "devops.project.id=demo\n"
	    "devops.agent.id=a1b2c3\n"
	    "devops.agent.secret.key=S3cr3tV4lue\n"
	    "landun.gateway = new.example.com:8080\n"
	    "landun.fileGateway=\n"
	    "devops.parallel.task.count: 10\n"
	    "landun.env=PROD\n"
	    "devops.slave.user=\n"
	    "devops.agent.request.timeout.sec=5\n"
	    "devops.agent.detect.shell=yes\n"
	    "devops.agent.ignoreLocalIps=127.0.0.1\n"
	    "devops.agent.logs.keep.hours=96\n"
	    "devops.agent.jdk.dir.path=\n"
	    "devops.agent.jdk17.dir.path=\n"
	    "devops.docker.parallel.task.count=4\n"
	    "devops.docker.enable=false\n"
	    "devops.language=zh_CN\n"
	    "devops.imagedebug.portrange=30000-32767\n"
	    "tail.key=1");
	free(s);
	CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 0640);

	/* Later changes apply to the text written last. */
	c.detect_shell = 0;
	c.pipeline_enable = 1;
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	s = slurp(p);
	CHECK(strstr(s, "devops.agent.detect.shell=false\n") != NULL);
	CHECK(str_ends(s, "tail.key=1\ndevops.pipeline.enable=true\n"));
	CHECK(strstr(s, "collectorOn") == NULL);	/* default, absent */
	free(s);
	config_free(&c);
	CHECK(config_load(&c, p, tmpdir, err, sizeof(err)) == 0);
	CHECK_STR(c.gateway, "new.example.com:8080");
	CHECK(c.parallel_task_count == 10);
	CHECK(c.pipeline_enable == 1);
	CHECK(c.detect_shell == 0);
	config_free(&c);
	free(p);
}

TEST(t_save_sections_continuations)
{
	struct config c;
	char err[256], *p, *s;

	CHECK(load_text(&c,
	    REQUIRED
	    "landun.fileGateway=a\\\n"
	    "   b\n"
	    "[extra]\n"
	    "x=1\n", err, sizeof(err)) == 0);
	CHECK_STR(c.file_gateway, "a   b");
	free(c.file_gateway);
	c.file_gateway = xstrdup("fg");
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	p = tpath(CONFIG_FILE);
	s = slurp(p);
	CHECK_STR(s,
	    REQUIRED
	    "landun.fileGateway=fg\n"
	    "devops.slave.user=\n"
	    "devops.agent.request.timeout.sec=5\n"
	    "devops.agent.detect.shell=false\n"
	    "devops.agent.ignoreLocalIps=127.0.0.1\n"
	    "devops.agent.logs.keep.hours=96\n"
	    "devops.agent.jdk.dir.path=\n"
	    "devops.agent.jdk17.dir.path=\n"
	    "devops.docker.parallel.task.count=4\n"
	    "devops.docker.enable=false\n"
	    "devops.language=zh_CN\n"
	    "devops.imagedebug.portrange=30000-32767\n"
	    "[extra]\n"
	    "x=1\n");
	free(s);
	free(p);
	config_free(&c);
}

TEST(t_save_invalid_value)
{
	struct config c;
	char err[256], *p, *s;

	CHECK(load_text(&c, FULL, err, sizeof(err)) == 0);
	p = tpath(CONFIG_FILE);
	free(c.gateway);
	c.gateway = xstrdup("a#b");
	errno = 0;
	CHECK(config_save(&c, err, sizeof(err)) == -1);
	CHECK(errno == EINVAL);
	CHECK(str_starts(err, "landun.gateway: value cannot be stored"));
	free(c.gateway);
	c.gateway = xstrdup("g");
	free(c.secret_key);
	c.secret_key = xstrdup("S3cr3tV4lue\ninjected=1");
	CHECK(config_save(&c, err, sizeof(err)) == -1);
	CHECK(errno == EINVAL);
	CHECK(clean_msg(err));
	free(c.secret_key);
	c.secret_key = xstrdup("");
	CHECK(config_save(&c, err, sizeof(err)) == -1);
	CHECK(errno == EINVAL);
	CHECK(strstr(err, "devops.agent.secret.key: missing or blank") != NULL);
	s = slurp(p);
	CHECK_STR(s, FULL);
	free(s);
	free(p);
	config_free(&c);
}

/* config_save of c as an unprivileged user (a child when we are root). */
static int
save_unprivileged(struct config *c, int *err_no)
{
	char err[256];
	pid_t pid;
	int st;

	if (geteuid() != 0) {
		int rc = config_save(c, err, sizeof(err));

		*err_no = errno;
		return rc == -1 && clean_msg(err) ? -1 : 0;
	}
	if ((pid = fork()) == -1)
		return 0;
	if (pid == 0) {
		int rc;

		if (setgroups(0, NULL) == -1 || setgid(65534) == -1 ||
		    setuid(65534) == -1)
			_exit(3);
		rc = config_save(c, err, sizeof(err));
		rc = rc == -1 && clean_msg(err) ? errno & 0x7f : 0;
		config_free(c);		/* no leak report from valgrind */
		_exit(rc);
	}
	if (waitpid(pid, &st, 0) == -1 || !WIFEXITED(st))
		return 0;
	*err_no = WEXITSTATUS(st);
	return *err_no != 0 ? -1 : 0;
}

/* Paths of t_save_readonly, global so a forked child leaks nothing. */
static char *ro_dir, *ro_path;

TEST(t_save_readonly)
{
	struct config c;
	char err[256], *dir, *p, *s;
	int e = 0;
	struct rlimit old, lim;

	dir = ro_dir = tpath("ro");
	CHECK(mkdir(dir, 0755) == 0);
	p = ro_path = xasprintf("%s/%s", dir, CONFIG_FILE);
	free(put("ro/" CONFIG_FILE, TEMPLATE, strlen(TEMPLATE)));
	CHECK(config_load(&c, p, tmpdir, err, sizeof(err)) == 0);
	CHECK(chmod(dir, 0555) == 0);
	CHECK(chmod(tmpdir, 0755) == 0);	/* let "nobody" reach ro/ */
	CHECK(save_unprivileged(&c, &e) == -1);
	CHECK(e == EACCES);
	s = slurp(p);
	CHECK_STR(s, TEMPLATE);
	free(s);
	CHECK(chmod(dir, 0755) == 0);
	CHECK(chmod(tmpdir, 0700) == 0);

	/* EFBIG from RLIMIT_FSIZE (hit by the check parse or the write)
	 * comes back as errno and leaves the file intact. */
	CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
	lim = old;
	lim.rlim_cur = 64;
	signal(SIGXFSZ, SIG_IGN);
	CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
	errno = 0;
	CHECK(config_save(&c, err, sizeof(err)) == -1);
	e = errno;
	CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
	signal(SIGXFSZ, SIG_DFL);
	CHECK(e == EFBIG);
	CHECK(clean_msg(err));
	s = slurp(p);
	CHECK_STR(s, TEMPLATE);
	free(s);
	/* Nothing but the file is left in the directory. */
	CHECK(unlink(p) == 0);
	CHECK(rmdir(dir) == 0);
	xfree_ptr(&ro_path);
	xfree_ptr(&ro_dir);
	config_free(&c);
}

TEST(t_symlink)
{
	struct config c;
	char err[256], *real, *link, *s;
	struct stat st;

	real = put("real.properties", REQUIRED, strlen(REQUIRED));
	link = tpath("link.properties");
	CHECK(symlink("real.properties", link) == 0);
	CHECK(config_load(&c, link, tmpdir, err, sizeof(err)) == 0);
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	CHECK(lstat(link, &st) == 0 && S_ISLNK(st.st_mode));
	s = slurp(real);
	CHECK(str_starts(s, REQUIRED "landun.fileGateway=\n"));
	free(s);
	config_free(&c);
	unlink(link);
	unlink(real);
	free(link);
	free(real);
}

TEST(t_head_keys)
{
	struct config c;
	char err[256], *p, *s, *want;

	/* Defaults: not written back while default (jdk17.dir.path is). */
	CHECK(load_text(&c, REQUIRED, err, sizeof(err)) == 0);
	CHECK_STR(c.jdk17_dir, "");
	want = xasprintf("%s/jdk17", tmpdir);
	CHECK_STR(c.jdk17_dir_resolved, want);
	free(want);
	CHECK(c.mcp_server_port == 0);
	CHECK_STR(c.http_proxy, "");
	CHECK_STR(c.https_proxy, "");
	CHECK_STR(c.no_proxy, "");
	config_free(&c);

	/* Values are trimmed; the upper-case names are the keys; a
	 * lower-case spelling is not the key (case-sensitive). */
	CHECK(load_text(&c, REQUIRED
	    "devops.agent.jdk17.dir.path=jdk17-1700000000\n"
	    "devops.mcp.server.port= 8123 \n"
	    "HTTP_PROXY =  http://proxy.example.com:3128  \n"
	    "HTTPS_PROXY=http://sproxy.example.com:3128\n"
	    "no_proxy=ignored.example.com\n"
	    "devops.pipeline.enable=true\n"
	    "# HTTP_PROXY=commented\n", err, sizeof(err)) == 0);
	want = xasprintf("%s/jdk17-1700000000", tmpdir);
	CHECK_STR(c.jdk17_dir_resolved, want);
	free(want);
	CHECK(c.mcp_server_port == 8123);
	CHECK_STR(c.http_proxy, "http://proxy.example.com:3128");
	CHECK_STR(c.https_proxy, "http://sproxy.example.com:3128");
	CHECK_STR(c.no_proxy, "");
	CHECK(c.pipeline_enable == 1);

	/* Round trip: changed values are written in place, new ones are
	 * appended with their upper-case names, the rest is kept. */
	free(c.http_proxy);
	c.http_proxy = xstrdup("");
	free(c.no_proxy);
	c.no_proxy = xstrdup("localhost,.example.com");
	free(c.jdk17_dir);
	c.jdk17_dir = xstrdup("jdk17-1800000000");
	c.mcp_server_port = 9000;
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	p = tpath(CONFIG_FILE);
	s = slurp(p);
	want = xasprintf("%s",
	    REQUIRED
	    "devops.agent.jdk17.dir.path=jdk17-1800000000\n"
	    "devops.mcp.server.port= 9000\n"
	    "HTTP_PROXY =  \n"
	    "HTTPS_PROXY=http://sproxy.example.com:3128\n"
	    "no_proxy=ignored.example.com\n"
	    "devops.pipeline.enable=true\n"
	    "# HTTP_PROXY=commented\n"
	    "landun.fileGateway=\n"
	    "devops.slave.user=\n"
	    "devops.agent.request.timeout.sec=5\n"
	    "devops.agent.detect.shell=false\n"
	    "devops.agent.ignoreLocalIps=127.0.0.1\n"
	    "devops.agent.logs.keep.hours=96\n"
	    "devops.agent.jdk.dir.path=\n"
	    "devops.docker.parallel.task.count=4\n"
	    "devops.docker.enable=false\n"
	    "devops.language=zh_CN\n"
	    "devops.imagedebug.portrange=30000-32767\n"
	    "NO_PROXY=localhost,.example.com\n");
	CHECK_STR(s, want);
	free(want);
	free(s);
	config_free(&c);
	CHECK(config_load(&c, p, tmpdir, err, sizeof(err)) == 0);
	CHECK_STR(c.jdk17_dir, "jdk17-1800000000");
	CHECK(c.mcp_server_port == 9000);
	CHECK_STR(c.http_proxy, "");
	CHECK_STR(c.https_proxy, "http://sproxy.example.com:3128");
	CHECK_STR(c.no_proxy, "localhost,.example.com");
	config_free(&c);

	/* A bad port is lenient (0), an absolute JDK 17 path is kept. */
	CHECK(load_text(&c, REQUIRED "devops.mcp.server.port=http\n"
	    "devops.agent.jdk17.dir.path=/opt/jdk17\n", err, sizeof(err)) == 0);
	CHECK(c.mcp_server_port == 0);
	CHECK_STR(c.jdk17_dir_resolved, "/opt/jdk17");
	config_free(&c);
	free(p);
}

TEST(t_backup_written)
{
	struct config c;
	char err[256], *p, *bak, *s;
	struct stat st;

	p = tpath(CONFIG_FILE);
	bak = tpath(CONFIG_FILE CONFIG_BAK_SUFFIX);
	(void)unlink(bak);
	CHECK(load_text(&c, FULL, err, sizeof(err)) == 0);
	CHECK(chmod(p, 0640) == 0);
	/* No write, no backup. */
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	CHECK(!fs_exists(bak));
	/* A write keeps the previous text in .bak, owner-only. */
	c.parallel_task_count = 7;
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	s = slurp(bak);
	CHECK_STR(s, FULL);
	free(s);
	CHECK(stat(bak, &st) == 0 && (st.st_mode & 07777) == 0600);
	c.parallel_task_count = 8;
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	s = slurp(bak);
	CHECK(strstr(s, "devops.parallel.task.count: 7\n") != NULL);
	free(s);
	/* A file broken on disk meanwhile does not replace a good backup. */
	free(puts_(CONFIG_FILE, "garbage without a delimiter\n"));
	c.parallel_task_count = 9;
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	s = slurp(bak);
	CHECK(strstr(s, "devops.parallel.task.count: 7\n") != NULL);
	free(s);
	/* An empty file on disk is not backed up either. */
	free(puts_(CONFIG_FILE, ""));
	c.parallel_task_count = 10;
	CHECK(config_save(&c, err, sizeof(err)) == 0);
	s = slurp(bak);
	CHECK(strstr(s, "devops.parallel.task.count: 7\n") != NULL);
	free(s);
	config_free(&c);
	CHECK(unlink(bak) == 0);
	free(bak);
	free(p);
}

TEST(t_backup_restore)
{
	struct config c;
	char err[512], *p, *bak, *s;
	struct stat st;
	int restored = -1;

	p = tpath(CONFIG_FILE);
	bak = tpath(CONFIG_FILE CONFIG_BAK_SUFFIX);
	free(puts_(CONFIG_FILE CONFIG_BAK_SUFFIX, FULL));
	/* Main file fine: the backup is not used. */
	free(puts_(CONFIG_FILE, REQUIRED));
	CHECK(config_load_restore(&c, p, tmpdir, &restored, err,
	    sizeof(err)) == 0);
	CHECK(restored == 0);
	CHECK_STR(c.project_id, "p");
	config_free(&c);

	/* Corrupt main file: restored from .bak, mode of the old file kept. */
	free(put(CONFIG_FILE, "devops.project.id=p\n\0garbage", 28));
	CHECK(chmod(p, 0640) == 0);
	CHECK(config_load_restore(&c, p, tmpdir, &restored, err,
	    sizeof(err)) == 0);
	CHECK(restored == 1);
	CHECK_STR(c.project_id, "demo");
	CHECK_STR(c.path, p);
	s = slurp(p);
	CHECK_STR(s, FULL);
	free(s);
	CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 0640);
	config_free(&c);

	/* Missing and empty main files are restored too. */
	CHECK(unlink(p) == 0);
	CHECK(config_load_restore(&c, p, tmpdir, &restored, err,
	    sizeof(err)) == 0 && restored == 1);
	config_free(&c);
	free(puts_(CONFIG_FILE, ""));
	CHECK(config_load_restore(&c, p, tmpdir, &restored, err,
	    sizeof(err)) == 0 && restored == 1);
	config_free(&c);

	/* Both broken: -1, the message names both problems, nothing written. */
	free(puts_(CONFIG_FILE, REQUIRED "just words\n"));
	free(puts_(CONFIG_FILE CONFIG_BAK_SUFFIX,
	    "devops.project.id=p\ndevops.agent.secret.key=S3cr3tV4lue\n"));
	CHECK(config_load_restore(&c, p, tmpdir, &restored, err,
	    sizeof(err)) == -1);
	CHECK(restored == 0);
	CHECK(strstr(err, "line 7: not a key=value line") != NULL);
	CHECK(strstr(err, CONFIG_FILE CONFIG_BAK_SUFFIX) != NULL);
	CHECK(strstr(err, "devops.agent.id: missing or blank") != NULL);
	CHECK(clean_msg(err));
	s = slurp(p);
	CHECK_STR(s, REQUIRED "just words\n");
	free(s);
	/* Both missing. */
	CHECK(unlink(p) == 0 && unlink(bak) == 0);
	CHECK(config_load_restore(&c, p, tmpdir, &restored, err,
	    sizeof(err)) == -1);
	CHECK(strstr(err, "No such file") != NULL &&
	    strstr(err, "backup") != NULL);
	free(bak);
	free(p);
}

TEST(t_url)
{
	char *u;

	u = config_url("host:8080", "/ms/x");
	CHECK_STR(u, "http://host:8080/ms/x");
	free(u);
	u = config_url("https://h", "/ms/x");
	CHECK_STR(u, "https://h/ms/x");
	free(u);
	u = config_url("http://h/", "/ms/x");
	CHECK_STR(u, "http://h//ms/x");	/* no slash normalisation */
	free(u);
	u = config_url("httpbin.org", "/ms/x");
	CHECK_STR(u, "httpbin.org/ms/x");	/* GoAgent's quirk, kept */
	free(u);
	u = config_gateway_base("devops.example.com");
	CHECK_STR(u, "http://devops.example.com");
	free(u);
	u = config_gateway_base("HTTP://h");
	CHECK_STR(u, "http://HTTP://h");	/* case-sensitive, as GoAgent */
	free(u);
}

TEST(t_free_zeroed)
{
	struct config c;

	memset(&c, 0, sizeof(c));
	config_free(&c);
	config_free(&c);
	CHECK(c.doc == NULL);
}

int
main(void)
{
	int rc;

	log_set_level(LOG_ERROR);	/* warnings are expected here */
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_config.XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	RUN(t_template_roundtrip);
	RUN(t_crlf);
	RUN(t_defaults);
	RUN(t_lenient_values);
	RUN(t_required_missing);
	RUN(t_duplicate);
	RUN(t_bad_ints);
	RUN(t_long_lines);
	RUN(t_binary);
	RUN(t_bom);
	RUN(t_formats);
	RUN(t_save_nochange);
	RUN(t_save_changes);
	RUN(t_save_sections_continuations);
	RUN(t_save_invalid_value);
	RUN(t_save_readonly);
	RUN(t_symlink);
	RUN(t_head_keys);
	RUN(t_backup_written);
	RUN(t_backup_restore);
	RUN(t_url);
	RUN(t_free_zeroed);
	rc = t_done();
	if (fs_rm_rf(tmpdir) == -1)
		perror(tmpdir);
	return rc;
}
