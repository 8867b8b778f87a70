/*
 * test_hardening.c - regression tests for defects found by the hardening
 * work (issue #7): static analysis, sanitizers and fuzzing. Each test names
 * the finding it pins down.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build.h"
#include "fsutil.h"
#include "http.h"
#include "log.h"
#include "t.h"
#include "util.h"

/*
 * Found in review of a clang-tidy finding in log_redact: a secret made of
 * '*' was found again inside its own mask, so the loop never ended.
 */
TEST(redact_star_secret_terminates)
{
	char line[64];

	log_clear_secrets();
	log_add_secret("***");
	snprintf(line, sizeof(line), "key=*** and ***");
	log_redact(line, sizeof(line));
	CHECK_STR(line, "key=*** and ***");

	log_clear_secrets();
	log_add_secret("*");
	snprintf(line, sizeof(line), "a*b**");
	log_redact(line, sizeof(line));
	CHECK_STR(line, "a*b**");

	log_clear_secrets();
	log_add_secret("s3cr3t");
	snprintf(line, sizeof(line), "s3cr3ts3cr3t|xs3cr3t");
	log_redact(line, sizeof(line));
	CHECK_STR(line, "******|x***");
	log_clear_secrets();
}

/*
 * Hardening: a server message with a line break must not forge a log line
 * of its own (a fake "|ERROR|" record, or hiding the real one).
 */
TEST(log_line_breaks_are_flattened)
{
	char path[] = "/tmp/unit-hardening-XXXXXX";
	char *buf = NULL;
	size_t len = 0, lines = 0, i;
	int fd = mkstemp(path);

	CHECK(fd != -1);
	close(fd);
	CHECK(log_open(path, "unit") == 0);
	log_info("server said: %s", "ok\n2024-01-01 00:00:00.000|ERROR|agent[1]|forged\r\x1b[2J");
	CHECK(fs_read_file(path, 4096, &buf, &len) == 0);
	for (i = 0; i < len; i++)
		lines += buf[i] == '\n';
	CHECK(lines == 1);
	CHECK(buf != NULL && strstr(buf, "ok 2024-01-01") != NULL);
	CHECK(buf != NULL && strstr(buf, "forged ?[2J") != NULL);
	free(buf);
	unlink(path);
}

/*
 * Found while exposing the X-Checksum-Md5 parser for fuzzing: a value with
 * the right md5 followed by junk was cut to 32 bytes and accepted, and any
 * 32 bytes counted as a checksum.
 */
TEST(md5_header_needs_exactly_32_hex_digits)
{
	static const char good[] = "X-Checksum-Md5: 0CC175B9C0F1B6A8 31c399e269772661\r\n";
	static const char junk[] = "x-checksum-md5: 0cc175b9c0f1b6a831c399e269772661junk\r\n";
	static const char nothex[] = "X-Checksum-Md5: zzc175b9c0f1b6a831c399e269772661\r\n";
	static const char empty[] = "X-Checksum-Md5:  \r\n";
	static const char other[] = "Content-Type: application/octet-stream\r\n";
	char out[MD5_HEX_LEN];

	CHECK(http_md5_header_parse(good, sizeof(good) - 1, out) == 1);
	CHECK_STR(out, "0cc175b9c0f1b6a831c399e269772661");
	CHECK(http_md5_header_parse(junk, sizeof(junk) - 1, out) == 1);
	CHECK(out[0] == '!');
	CHECK(http_md5_header_parse(nothex, sizeof(nothex) - 1, out) == 1);
	CHECK(out[0] == '!');
	CHECK(http_md5_header_parse(empty, sizeof(empty) - 1, out) == 1);
	CHECK_STR(out, "");
	out[0] = 'x';
	CHECK(http_md5_header_parse(other, sizeof(other) - 1, out) == 0);
	CHECK(out[0] == 'x');
}

/*
 * W17: the worker's argument is visible in ps; a build info that carries
 * docker credentials must reach it without them.
 */
TEST(worker_argument_has_no_credentials)
{
	cJSON *info = cJSON_Parse("{\"projectId\":\"p\",\"buildId\":\"b-1\","
	    "\"vmSeqId\":\"1\",\"dockerBuildInfo\":{\"secretKey\":\"k3y\","
	    "\"credential\":{\"user\":\"u\",\"password\":\"pa55\"}}}");
	char *json = build_info_json(info);

	CHECK(strstr(json, "\"dockerBuildInfo\":null") != NULL);
	CHECK(strstr(json, "k3y") == NULL && strstr(json, "pa55") == NULL);
	free(json);
	cJSON_Delete(info);
}

/*
 * Review of files the agent (often root) touches in directories a build
 * user can write: a symlink or FIFO planted as the worker's error file
 * must not be read (it would leak a root-only file to the server, or hang
 * the loop), and a recursive removal must never follow a link outside.
 */
TEST(untrusted_dirs_links_and_fifos)
{
	char dir[] = "/tmp/unit-hardening-XXXXXX";
	char *secret, *link, *fifo, *tree, *outside, *buf = NULL;

	CHECK(mkdtemp(dir) != NULL);
	secret = xasprintf("%s/secret", dir);
	link = xasprintf("%s/link", dir);
	fifo = xasprintf("%s/fifo", dir);
	tree = xasprintf("%s/tree", dir);
	outside = xasprintf("%s/outside", dir);
	CHECK(fs_write_atomic(secret, "root only", 9, 0600) == 0);
	CHECK(symlink(secret, link) == 0);
	CHECK(mkfifo(fifo, 0600) == 0);
	CHECK(fs_read_regular(link, 1024, &buf, NULL) == -1 && errno == ELOOP);
	CHECK(fs_read_regular(fifo, 1024, &buf, NULL) == -1 && errno == EINVAL);
	CHECK(fs_read_regular(secret, 1024, &buf, NULL) == 0);
	CHECK_STR(buf, "root only");
	free(buf);

	/* tree/a/b/x, tree/a/out -> outside (with a file in it) */
	char *ab = xasprintf("%s/a/b", tree), *x = xasprintf("%s/a/b/x", tree);
	char *keep = xasprintf("%s/keep", outside), *out = xasprintf("%s/a/out", tree);
	CHECK(fs_mkdir_p(ab, 0755) == 0 && fs_mkdir_p(outside, 0755) == 0);
	CHECK(fs_write_atomic(x, "x", 1, 0644) == 0);
	CHECK(fs_write_atomic(keep, "k", 1, 0644) == 0);
	CHECK(symlink(outside, out) == 0);
	CHECK(fs_rm_rf(tree) == 0);
	CHECK(!fs_exists(tree));
	CHECK(fs_is_file(keep));
	CHECK(fs_rm_rf(tree) == 0);		/* gone already: still 0 */
	CHECK(fs_rm_rf(dir) == 0 && !fs_exists(dir));
	free(ab); free(x); free(keep); free(out);
	free(secret); free(link); free(fifo); free(tree); free(outside);
}

int
main(void)
{
	RUN(redact_star_secret_terminates);
	RUN(log_line_breaks_are_flattened);
	RUN(md5_header_needs_exactly_32_hex_digits);
	RUN(worker_argument_has_no_credentials);
	RUN(untrusted_dirs_links_and_fifos);
	return t_done();
}
