/*
 * fuzz_cron.c - what etcd hands the cron source (docs/cron.md): a job value
 * through agent/cron.h cron_job_parse, and the same bytes as a cron
 * expression through common/cronexpr.h cronexpr_parse + cronexpr_next.
 * Invariants: a refused input leaves nothing allocated and says why; an
 * accepted job has a name usable as a file name and a non-blank command; a
 * next fire is a whole second strictly after its start, matches the
 * expression's fields, and asking again just before it gives it again.
 */
#include <string.h>
#include <time.h>

#include "cron.h"
#include "cronexpr.h"
#include "executor.h"
#include "fuzz.h"
#include "util.h"

FUZZ_QUIET_INIT

/* Whether t (ms, UTC) matches the bitmaps of c. */
static int
matches(const struct cronexpr *c, int64_t t)
{
	time_t s = (time_t)(t / 1000);
	struct tm tm;
	int d, w;

	gmtime_r(&s, &tm);
	d = (c->dom >> tm.tm_mday) & 1;
	w = (c->dow >> tm.tm_wday) & 1;
	if (!((c->sec >> tm.tm_sec) & 1) || !((c->min >> tm.tm_min) & 1) ||
	    !((c->hour >> tm.tm_hour) & 1) || !((c->month >> (tm.tm_mon + 1)) & 1))
		return 0;
	if (!c->dom_any && !c->dow_any)
		return d || w;
	return c->dow_any ? d : w;
}

/* One input through both parsers. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cron_job j;
	struct cronexpr c;
	char err[300], expr[CRONEXPR_MAX + 2];
	/* 2024-02-28 23:59:58 UTC: month, leap day and year ends are near. */
	const int64_t t0 = 1709164798000LL;
	int64_t t;

	err[0] = '\0';
	if (cron_job_parse(NULL, (const char *)data, size, &j, err,
	    sizeof(err)) == 0) {
		FUZZ_ASSERT(exec_id_valid(j.name) && strlen(j.name) <= CRON_NAME_MAX);
		FUZZ_ASSERT(strchr(j.name, '/') == NULL);
		FUZZ_ASSERT(j.command != NULL && !str_blank(j.command));
		FUZZ_ASSERT(j.expr != NULL);
		cron_job_free(&j);
	} else {
		FUZZ_ASSERT(err[0] != '\0');
		FUZZ_ASSERT(j.name == NULL && j.command == NULL && j.expr == NULL);
	}

	if (size > CRONEXPR_MAX + 1)
		return 0;
	memcpy(expr, data, size);
	expr[size] = '\0';
	err[0] = '\0';
	if (cronexpr_parse(expr, &c, err, sizeof(err)) == -1) {
		FUZZ_ASSERT(err[0] != '\0');
		return 0;
	}
	t = cronexpr_next(&c, t0, 1);
	if (t == -1)
		return 0;
	FUZZ_ASSERT(t > t0 && t % 1000 == 0);
	FUZZ_ASSERT(cronexpr_next(&c, t - 1, 1) == t);
	if (c.every_ms == 0)
		FUZZ_ASSERT(matches(&c, t));
	return 0;
}
