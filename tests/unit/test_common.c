/* test_common.c - util, base64, md5, fsutil, envlist, lock, log redaction. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include "base64.h"
#include "child.h"
#include "envlist.h"
#include "fsutil.h"
#include "lock.h"
#include "log.h"
#include "md5.h"
#include "t.h"
#include "util.h"

static char dir[] = "/tmp/unit-common-XXXXXX";

TEST(str_to_ll_rejects_junk)
{
	long long v = 0;

	CHECK(str_to_ll(" 42 ", &v) == 0 && v == 42);
	CHECK(str_to_ll("-7", &v) == 0 && v == -7);
	CHECK(str_to_ll("", &v) == -1);
	CHECK(str_to_ll("0x10", &v) == -1);
	CHECK(str_to_ll("12abc", &v) == -1);
	CHECK(str_to_ll("99999999999999999999", &v) == -1);
}

TEST(base64_round_trip)
{
	const char *in = "{\"projectId\":\"p\",\"buildId\":\"b-1\"}";
	char *enc = base64_encode(in, strlen(in));
	unsigned char *dec = NULL;
	size_t n = 0;

	CHECK(base64_decode(enc, &dec, &n) == 0);
	CHECK(n == strlen(in) && memcmp(dec, in, n) == 0);
	free(dec);
	free(enc);
	enc = base64_encode("ab", 2);
	CHECK_STR(enc, "YWI=");
	free(enc);
	CHECK(base64_decode("YWI", &dec, &n) == -1);
	CHECK(base64_decode("Y!I=", &dec, &n) == -1);
	CHECK(base64_decode("YW=I", &dec, &n) == -1);
	CHECK(base64_decode("YWI=", &dec, &n) == 0 && n == 2);
	free(dec);
}

TEST(md5_known_values)
{
	char hex[MD5_HEX_LEN], *path = xasprintf("%s/m", dir);

	md5_hex("a", 1, hex);
	CHECK_STR(hex, "0cc175b9c0f1b6a831c399e269772661");
	md5_hex("", 0, hex);
	CHECK_STR(hex, "d41d8cd98f00b204e9800998ecf8427e");
	CHECK(fs_write_atomic(path, "a", 1, 0644) == 0);
	CHECK(md5_file(path, hex) == 0);
	CHECK_STR(hex, "0cc175b9c0f1b6a831c399e269772661");
	CHECK(md5_file("/nonexistent/x", hex) == -1 && errno == ENOENT);
	CHECK_STR(hex, "");
	free(path);
}

TEST(atomic_write_and_bounded_read)
{
	char *path = xasprintf("%s/f", dir), *buf = NULL;
	size_t len = 0;
	struct stat st;

	CHECK(fs_write_atomic(path, "hello", 5, 0600) == 0);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK(fs_read_file(path, 100, &buf, &len) == 0 && len == 5);
	CHECK_STR(buf, "hello");
	free(buf);
	CHECK(fs_read_file(path, 4, &buf, &len) == -1 && errno == EFBIG);
	/* Failure leaves the old file intact. */
	CHECK(fs_write_atomic("/nonexistent-dir/x", "y", 1, 0600) == -1);
	CHECK(fs_read_file(path, 100, &buf, &len) == 0);
	CHECK_STR(buf, "hello");
	free(buf);
	free(path);
}

/* fs_write_replace: same replace semantics as fs_write_atomic, no temp left. */
TEST(replace_write_keeps_mode_and_old_file_on_failure)
{
	char *path = xasprintf("%s/snap", dir), *buf = NULL;
	size_t len = 0;
	struct stat st;
	DIR *d;
	struct dirent *e;
	int temps = 0;

	CHECK(fs_write_replace(path, "one", 3, 0644) == 0);
	CHECK(fs_write_replace(path, "second", 6, 0640) == 0);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0640);
	CHECK(fs_read_file(path, 100, &buf, &len) == 0 && len == 6);
	CHECK_STR(buf, "second");
	free(buf);
	CHECK(fs_write_replace("/nonexistent-dir/x", "y", 1, 0600) == -1 &&
	    errno == ENOENT);
	CHECK((d = opendir(dir)) != NULL);
	while (d != NULL && (e = readdir(d)) != NULL)
		if (strncmp(e->d_name, ".snap.tmp", 9) == 0)
			temps++;
	if (d != NULL)
		closedir(d);
	CHECK(temps == 0);
	free(path);
}

TEST(mkdir_p_and_rm_rf)
{
	char *deep = xasprintf("%s/a/b/c", dir), *top = xasprintf("%s/a", dir);
	char *file = xasprintf("%s/a/b/c/f", dir);

	CHECK(fs_mkdir_p(deep, 0755) == 0);
	CHECK(fs_is_dir(deep));
	CHECK(fs_write_atomic(file, "x", 1, 0644) == 0);
	CHECK(fs_rm_rf(top) == 0);
	CHECK(!fs_exists(top));
	CHECK(fs_rm_rf(top) == 0);
	free(deep);
	free(top);
	free(file);
}

TEST(envlist_overrides)
{
	struct envlist e;

	setenv("UNIT_ENV_X", "1", 1);
	envlist_init(&e, 1);
	CHECK_STR(envlist_get(&e, "UNIT_ENV_X"), "1");
	envlist_set(&e, "UNIT_ENV_X", "2");
	envlist_set(&e, "UNIT_ENV_Y", "3");
	CHECK_STR(envlist_get(&e, "UNIT_ENV_X"), "2");
	CHECK_STR(envlist_get(&e, "UNIT_ENV_Y"), "3");
	envlist_unset(&e, "UNIT_ENV_X");
	CHECK(envlist_get(&e, "UNIT_ENV_X") == NULL);
	CHECK(e.v[e.n] == NULL);
	envlist_free(&e);
}

TEST(lock_excludes_second_holder)
{
	char *path = xasprintf("%s/x.lock", dir);
	int fd = lock_try(path), pid, status = -1;

	CHECK(fd >= 0);
	/* flock is per open file: a child process sees it held. */
	pid = fork();
	if (pid == 0) {
		/* Free before _exit: valgrind leak-checks the child too. */
		int held = lock_is_held(path) == 1;
		free(path);
		_exit(held ? 0 : 1);
	}
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	lock_release(fd);
	CHECK(lock_is_held(path) == 0);
	free(path);
}

TEST(log_masks_secrets)
{
	char *path = xasprintf("%s/t.log", dir), *buf = NULL;

	CHECK(log_open(path, "unit") == 0);
	log_add_secret("s3cr3t-KEY");
	log_info("header X-DEVOPS-AGENT-SECRET-KEY: %s done", "s3cr3t-KEY");
	CHECK(fs_read_file(path, 1 << 20, &buf, NULL) == 0);
	CHECK(strstr(buf, "s3cr3t-KEY") == NULL);
	CHECK(strstr(buf, "KEY: *** done") != NULL);
	CHECK(strstr(buf, "|INFO|unit[") != NULL);
	free(buf);
	log_clear_secrets();
	free(path);
}

TEST(log_rotates_by_size)
{
	char *path = xasprintf("%s/r.log", dir), *r1 = xasprintf("%s/r.1.log", dir);
	int i;

	CHECK(log_open(path, "unit") == 0);
	log_set_rotation(1000, 2);
	for (i = 0; i < 50; i++)
		log_info("line %d of the rotation test", i);
	CHECK(fs_is_file(r1));
	CHECK(fs_is_file(path));
	log_set_rotation(50LL * 1024 * 1024, 5);
	free(path);
	free(r1);
}

/* SigIgn of the calling process, from /proc/self/status. */
static unsigned long long
sig_ignored(void)
{
	char *buf = NULL, *p;
	unsigned long long v = ~0ULL;

	if (fs_read_file("/proc/self/status", 1 << 16, &buf, NULL) == 0 &&
	    (p = strstr(buf, "SigIgn:")) != NULL)
		v = strtoull(p + 7, NULL, 16);
	free(buf);
	return v;
}

TEST(child_gets_default_signals_even_reserved_ones)
{
	int status = -1;
	pid_t pid = fork();

	if (pid == 0) {
#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__))
		struct { void (*h)(int); unsigned long f; void (*r)(void);
		    unsigned long m; } ign = { SIG_IGN, 0, NULL, 0 };
		/* As if inherited: glibc's reserved signal 32 ignored. */
		(void)syscall(SYS_rt_sigaction, 32, &ign, NULL, sizeof(ign.m));
#endif
		signal(SIGHUP, SIG_IGN);
		signal(SIGPIPE, SIG_IGN);
		if (sig_ignored() == 0)
			_exit(2);	/* the setup did not take */
		child_reset_signals();
		_exit(sig_ignored() == 0 ? 0 : 1);
	}
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int
main(void)
{

	if (mkdtemp(dir) == NULL)
		return 1;
	RUN(str_to_ll_rejects_junk);
	RUN(base64_round_trip);
	RUN(md5_known_values);
	RUN(atomic_write_and_bounded_read);
	RUN(replace_write_keeps_mode_and_old_file_on_failure);
	RUN(mkdir_p_and_rm_rf);
	RUN(envlist_overrides);
	RUN(lock_excludes_second_holder);
	RUN(log_masks_secrets);
	RUN(log_rotates_by_size);
	RUN(child_gets_default_signals_even_reserved_ones);
	fs_rm_rf(dir);
	return t_done();
}
