/*
 * replay.c - main() for replaying a fuzz target's corpus without libFuzzer
 * (see fuzz.h). Built once per target with -DFUZZ_NAME='"<name>"'; replays
 * every regular file of fuzz/corpus/<name>/ (relative to the repository
 * root, where make runs), or the files given as arguments, in name order.
 * Prints "fuzz_<name>: N passed, 0 failed" in the unit-test format of
 * tests/unit/run.sh. An input that breaks the target aborts the program.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "fuzz.h"
#include "util.h"

#ifndef FUZZ_NAME
#error "build with -DFUZZ_NAME='\"<name>\"'"
#endif

/* Weak: targets without set-up do not define it. */
__attribute__((weak)) int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

/* Feed one file to the target; 0, or -1 when it cannot be read. */
static int
replay_file(const char *path)
{
	char *buf = NULL;
	size_t len = 0;

	if (fs_read_file(path, (size_t)64 * 1024 * 1024, &buf, &len) == -1) {
		fprintf(stderr, "fuzz_%s: cannot read %s\n", FUZZ_NAME, path);
		return -1;
	}
	/* An exact-size copy, so that ASan sees a read past the input. */
	uint8_t *copy = malloc(len ? len : 1);
	if (copy == NULL)
		abort();
	memcpy(copy, buf, len);
	free(buf);
	(void)LLVMFuzzerTestOneInput(copy, len);
	free(copy);
	return 0;
}

/* qsort comparator for directory entry names. */
static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replay the corpus (or the files named) through the target. */
int
main(int argc, char **argv)
{
	const char *dir = "fuzz/corpus/" FUZZ_NAME;
	char **names = NULL;
	size_t n = 0, cap = 0, i;
	int pass = 0, fail = 0;
	struct dirent *e;
	DIR *d;

	(void)LLVMFuzzerInitialize(&argc, &argv);
	if (argc > 1) {
		for (i = 1; i < (size_t)argc; i++) {
			if (replay_file(argv[i]) == 0)
				pass++;
			else
				fail++;
		}
		printf("fuzz_%s: %d passed, %d failed\n", FUZZ_NAME, pass, fail);
		return fail != 0;
	}
	if ((d = opendir(dir)) == NULL) {
		fprintf(stderr, "fuzz_%s: cannot open %s\n", FUZZ_NAME, dir);
		printf("fuzz_%s: 0 passed, 1 failed\n", FUZZ_NAME);
		return 1;
	}
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = xrealloc(names, cap * sizeof(*names));
		}
		names[n++] = xasprintf("%s/%s", dir, e->d_name);
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof(*names), name_cmp);
	for (i = 0; i < n; i++) {
		if (fs_is_file(names[i])) {
			if (replay_file(names[i]) == 0)
				pass++;
			else
				fail++;
		}
		free(names[i]);
	}
	free(names);
	printf("fuzz_%s: %d passed, %d failed\n", FUZZ_NAME, pass, fail);
	return fail != 0;
}
