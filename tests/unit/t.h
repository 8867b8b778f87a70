/*
 * t.h - a tiny unit-test harness (in the spirit of redis' 30-line helper).
 *
 *   TEST(name) { CHECK(x == 1); CHECK_STR(a, "b"); }
 *   int main(void) { RUN(name); return t_done(); }
 *
 * Each CHECK prints the file:line of a failure; t_done() prints
 * "<prog>: N passed, N failed" and returns the exit status.
 */
#ifndef T_H
#define T_H

#include <stdio.h>
#include <string.h>

static int t_pass, t_fail, t_cur_failed;
static const char *t_cur;

#define TEST(name) static void name(void)

#define CHECK(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "  FAIL %s:%d in %s: %s\n",		\
		    __FILE__, __LINE__, t_cur, #cond);			\
		t_cur_failed = 1;					\
	}								\
} while (0)

#define CHECK_STR(a, b) do {						\
	const char *t_a = (a), *t_b = (b);				\
	if (t_a == NULL || t_b == NULL || strcmp(t_a, t_b) != 0) {	\
		fprintf(stderr, "  FAIL %s:%d in %s: \"%s\" != \"%s\"\n",	\
		    __FILE__, __LINE__, t_cur, t_a ? t_a : "(null)",	\
		    t_b ? t_b : "(null)");				\
		t_cur_failed = 1;					\
	}								\
} while (0)

#define RUN(name) do {							\
	t_cur = #name;							\
	t_cur_failed = 0;						\
	name();								\
	if (t_cur_failed) {						\
		t_fail++;						\
		fprintf(stderr, "not ok %s\n", #name);			\
	} else {							\
		t_pass++;						\
	}								\
} while (0)

static int
t_done(void)
{
	extern const char *__progname;

	printf("%s: %d passed, %d failed\n", __progname, t_pass, t_fail);
	return t_fail == 0 ? 0 : 1;
}

#endif
