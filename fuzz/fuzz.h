/*
 * fuzz.h - shared by the libFuzzer targets in fuzz/ (issue #7).
 *
 * Every fuzz_<name>.c defines LLVMFuzzerTestOneInput for one parser of
 * outside input. The same file builds two ways:
 *  - with clang -fsanitize=fuzzer,address,undefined (make fuzz, fuzz-smoke);
 *  - with fuzz/replay.c as main (any compiler): the program replays every
 *    file of fuzz/corpus/<name>/ and prints "<name>: N passed, 0 failed",
 *    so `make unit`, check-asan and check-valgrind replay the seeds and every
 *    input that once crashed a target.
 * A target checks invariants with FUZZ_ASSERT, which aborts: libFuzzer and
 * the replay runner both count an abort as a crash.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"
#include "util.h"

/** Abort with the failed condition: an invariant of the parser broke. */
#define FUZZ_ASSERT(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "%s:%d: invariant failed: %s\n",	\
		    __FILE__, __LINE__, #cond);				\
		abort();						\
	}								\
} while (0)

/** libFuzzer's entry point; one call per input (data is not NUL-terminated). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/** Optional one-time set-up (libFuzzer calls it before the first input). */
int LLVMFuzzerInitialize(int *argc, char ***argv);

/** Silence the logger: parsers warn about bad input, which is expected here. */
static inline void
fuzz_quiet(void)
{
	log_set_level((enum log_level)(LOG_ERROR + 1));
}

/** Defines LLVMFuzzerInitialize: quiet logger, nothing else to set up. */
#define FUZZ_QUIET_INIT							\
int									\
LLVMFuzzerInitialize(int *argc, char ***argv)				\
{									\
	(void)argc;							\
	(void)argv;							\
	fuzz_quiet();							\
	return 0;							\
}

static char *fuzz_scratch;

/* Remove the scratch directory at exit (libFuzzer and replay both exit()). */
static inline void
fuzz_scratch_remove(void)
{
	(void)fs_rm_rf(fuzz_scratch);
}

/**
 * Create a private scratch directory "<tmpfs or /tmp>/fuzz-<name>-<pid>",
 * removed at exit. Returns its path (owned here); aborts on failure. tmpfs
 * when possible: parsers that fsync would be slow on a disk.
 */
static inline const char *
fuzz_scratch_dir(const char *name)
{
	const char *base = fs_is_dir("/dev/shm") ? "/dev/shm" : "/tmp";

	fuzz_scratch = xasprintf("%s/fuzz-%s-%ld", base, name, (long)getpid());
	if (fs_mkdir_p(fuzz_scratch, 0700) == -1)
		abort();
	(void)atexit(fuzz_scratch_remove);
	return fuzz_scratch;
}

/** Copy data into a new NUL-terminated buffer (caller frees). */
static inline char *
fuzz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s == NULL)
		abort();
	for (size_t i = 0; i < size; i++)
		s[i] = (char)data[i];
	s[size] = '\0';
	return s;
}

#endif
