/*
 * fuzz_archive.c - the JDK zip of an upgrade (agent-behaviour §7.4 step 6;
 * common/archive.h archive_unpack): bytes from the server, unpacked by the
 * agent, often as root. libarchive itself is not instrumented; the code
 * under test is the entry vetting around it (zip-slip, links, modes, cap).
 *
 * Invariants after an unpack into a fresh directory: nothing but that
 * directory appeared next to it; every symlink in it that resolves, resolves
 * inside it; no file or directory is setuid, setgid, sticky or writable by
 * group or others.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive.h"
#include "fsutil.h"
#include "fuzz.h"
#include "util.h"

#define UNPACK_CAP	(16ULL << 20)	/* zip bombs stop here */

static const char *scratch;
static char *in, *out, *out_real;

/* One-time set-up before the first input. */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	scratch = fuzz_scratch_dir("archive");
	in = xasprintf("%s/in.zip", scratch);
	out = xasprintf("%s/out", scratch);
	return 0;
}

/* Check every entry under dir (a path inside out); depth-bounded. */
static void
check_tree(const char *dir, int depth)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	FUZZ_ASSERT(d != NULL);
	while ((e = readdir(d)) != NULL) {
		char *path, real[PATH_MAX];
		struct stat st;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		path = xasprintf("%s/%s", dir, e->d_name);
		FUZZ_ASSERT(lstat(path, &st) == 0);
		if (S_ISLNK(st.st_mode)) {
			if (realpath(path, real) != NULL)
				FUZZ_ASSERT(strncmp(real, out_real, strlen(out_real)) == 0 &&
				    (real[strlen(out_real)] == '/' ||
				    real[strlen(out_real)] == '\0'));
		} else {
			FUZZ_ASSERT(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode));
			FUZZ_ASSERT((st.st_mode & (S_ISUID | S_ISGID | S_ISVTX |
			    S_IWGRP | S_IWOTH)) == 0);
			if (S_ISDIR(st.st_mode) && depth < 64)
				check_tree(path, depth + 1);
		}
		free(path);
	}
	closedir(d);
}

/* One input through the parser, then the invariants. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct archive_stats st;
	char err[512];
	struct dirent *e;
	DIR *d;
	int n = 0;

	(void)fs_rm_rf(out);
	if (fs_write_atomic(in, data, size, 0600) == -1)
		abort();
	err[0] = '\0';
	if (archive_unpack(in, out, UNPACK_CAP, &st, err, sizeof(err)) == -1)
		FUZZ_ASSERT(err[0] != '\0' && strchr(err, '\n') == NULL);
	FUZZ_ASSERT(st.bytes <= UNPACK_CAP);
	/* Only in.zip and out/ may exist in the scratch directory. */
	FUZZ_ASSERT((d = opendir(scratch)) != NULL);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
			FUZZ_ASSERT(strcmp(e->d_name, "in.zip") == 0 ||
			    strcmp(e->d_name, "out") == 0);
			n++;
		}
	closedir(d);
	FUZZ_ASSERT(n <= 2);
	if (fs_is_dir(out)) {
		out_real = realpath(out, NULL);
		FUZZ_ASSERT(out_real != NULL);
		check_tree(out, 0);
		free(out_real);
		out_real = NULL;
	}
	return 0;
}
