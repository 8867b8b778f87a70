/* cronexpr.c - parse cron expressions and compute their next fire time. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cronexpr.h"
#include "util.h"

#define YEAR_MIN	1970
#define YEAR_MAX	2099

/* One field of the expression: its range and the names it takes. */
struct field {
	const char	*what;
	int		 lo, hi;
	const char *const *names;	/* names[i] is value lo_name + i */
	int		 name_base;
};

static const char *const month_names[] = { "jan", "feb", "mar", "apr", "may",
	"jun", "jul", "aug", "sep", "oct", "nov", "dec", NULL };
static const char *const month_long[] = { "january", "february", "march",
	"april", "may", "june", "july", "august", "september", "october",
	"november", "december", NULL };
static const char *const dow_names[] = { "sun", "mon", "tue", "wed", "thu",
	"fri", "sat", NULL };
static const char *const dow_long[] = { "sunday", "monday", "tuesday",
	"wednesday", "thursday", "friday", "saturday", NULL };

enum { F_SEC, F_MIN, F_HOUR, F_DOM, F_MON, F_DOW, F_YEAR, F_N };

static const struct field fields[F_N] = {
	{ "second", 0, 59, NULL, 0 },
	{ "minute", 0, 59, NULL, 0 },
	{ "hour", 0, 23, NULL, 0 },
	{ "day of month", 1, 31, NULL, 0 },
	{ "month", 1, 12, month_names, 1 },
	{ "day of week", 0, 7, dow_names, 0 },
	{ "year", YEAR_MIN, YEAR_MAX, NULL, 0 },
};

/* Set bit v of the field's bitmap. */
static void
bit_set(struct cronexpr *c, int f, int v)
{
	switch (f) {
	case F_SEC: c->sec |= 1ULL << v; break;
	case F_MIN: c->min |= 1ULL << v; break;
	case F_HOUR: c->hour |= 1U << v; break;
	case F_DOM: c->dom |= 1U << v; break;
	case F_MON: c->month |= 1U << v; break;
	case F_DOW: c->dow |= 1U << (v % 7); break;
	default: c->year[(v - YEAR_MIN) / 64] |= 1ULL << ((v - YEAR_MIN) % 64);
	}
}

/* Read a number or a name at *p (n bytes left); -1 when neither. */
static int
value_read(const struct field *fd, const char **p, const char *end, int *out)
{
	const char *s = *p;
	long v = 0;
	int digits = 0;

	while (s < end && isdigit((unsigned char)*s) && digits < 6) {
		v = v * 10 + (*s - '0');
		s++;
		digits++;
	}
	if (digits > 0) {
		if (s < end && isdigit((unsigned char)*s))
			return -1;
		*p = s;
		*out = (int)v;
		return 0;
	}
	if (fd->names != NULL) {
		const char *const *lists[2];
		int l, i;

		lists[0] = fd->names;
		lists[1] = fd->names == month_names ? month_long : dow_long;
		/* Longest names first: "march" before "mar". */
		for (l = 1; l >= 0; l--)
			for (i = 0; lists[l][i] != NULL; i++) {
				size_t n = strlen(lists[l][i]);
				if ((size_t)(end - s) >= n &&
				    strncasecmp(s, lists[l][i], n) == 0 &&
				    (s + n == end || !isalpha((unsigned char)s[n]))) {
					*p = s + n;
					*out = fd->name_base + i;
					return 0;
				}
			}
	}
	return -1;
}

/* Say why list item [item, ie) of field fd cannot be read; returns -1. */
static int
item_bad(const struct field *fd, const char *item, const char *ie, char *err,
    size_t errlen)
{
	if (memchr(item, 'L', (size_t)(ie - item)) != NULL ||
	    memchr(item, 'W', (size_t)(ie - item)) != NULL ||
	    memchr(item, '#', (size_t)(ie - item)) != NULL)
		err_set(err, errlen, "%s: L, W and # are not supported", fd->what);
	else
		err_set(err, errlen, "%s: cannot read '%.*s'", fd->what,
		    (int)(ie - item > 40 ? 40 : ie - item), item);
	return -1;
}

/* Parse one comma-separated field [s, end) into bitmap f of c. */
static int
field_parse(struct cronexpr *c, int f, const char *s, const char *end,
    char *err, size_t errlen)
{
	const struct field *fd = &fields[f];
	int any_star = 0;

	if (s == end) {
		err_set(err, errlen, "%s: empty", fd->what);
		return -1;
	}
	while (s < end) {
		const char *item = s, *ie = memchr(s, ',', (size_t)(end - s));
		int lo, hi, step = 1, star = 0;

		if (ie == NULL)
			ie = end;
		if (item == ie) {
			err_set(err, errlen, "%s: empty list item", fd->what);
			return -1;
		}
		if (*s == '*' || (*s == '?' && (f == F_DOM || f == F_DOW))) {
			star = 1;
			lo = fd->lo;
			hi = f == F_DOW ? 6 : fd->hi;
			s++;
		} else {
			if (value_read(fd, &s, ie, &lo) == -1)
				return item_bad(fd, item, ie, err, errlen);
			hi = lo;
			if (s < ie && *s == '-') {
				s++;
				if (value_read(fd, &s, ie, &hi) == -1)
					return item_bad(fd, item, ie, err, errlen);
			} else if (s < ie && *s == '/') {
				/* gorhill: "N/STEP" runs to the field's top (Saturday). */
				hi = f == F_DOW ? 6 : fd->hi;
			}
		}
		if (s < ie && *s == '/') {
			s++;
			if (value_read(&fields[F_SEC], &s, ie, &step) == -1 ||
			    step < 1) {
				err_set(err, errlen, "%s: bad step in '%.*s'",
				    fd->what, (int)(ie - item), item);
				return -1;
			}
		}
		if (s != ie)
			return item_bad(fd, item, ie, err, errlen);
		/* gorhill: a bare '*' or '?' item leaves the day field free. */
		if (star && step == 1)
			any_star = 1;
		if (step > (f == F_DOW ? 6 : fd->hi)) {
			err_set(err, errlen, "%s: step %d larger than %d", fd->what,
			    step, f == F_DOW ? 6 : fd->hi);
			return -1;
		}
		if (lo < fd->lo || lo > fd->hi || hi < fd->lo || hi > fd->hi) {
			err_set(err, errlen, "%s: %d out of range %d-%d", fd->what,
			    lo < fd->lo || lo > fd->hi ? lo : hi, fd->lo, fd->hi);
			return -1;
		}
		if (lo > hi) {
			err_set(err, errlen, "%s: range %d-%d runs backwards",
			    fd->what, lo, hi);
			return -1;
		}
		for (int v = lo; v <= hi; v += step)
			bit_set(c, f, v);
		s = ie < end ? ie + 1 : ie;
		if (ie < end && s == end) {
			err_set(err, errlen, "%s: trailing comma", fd->what);
			return -1;
		}
	}
	if (f == F_DOM)
		c->dom_any = any_star;
	if (f == F_DOW)
		c->dow_any = any_star;
	return 0;
}

/* Parse a Go duration ("1h30m", "90s", "1500ms") into ms; -1 when bad. */
static int64_t
duration_parse(const char *s)
{
	int64_t total = 0;

	if (*s == '\0')
		return -1;
	while (*s != '\0') {
		int64_t v = 0, unit;
		int digits = 0;

		while (isdigit((unsigned char)*s)) {
			if (v > 100000000000LL)
				return -1;
			v = v * 10 + (*s++ - '0');
			digits++;
		}
		if (digits == 0)
			return -1;
		if (strncmp(s, "ms", 2) == 0) {
			unit = 1;
			s += 2;
		} else if (*s == 's') {
			unit = 1000;
			s++;
		} else if (*s == 'm') {
			unit = 60000;
			s++;
		} else if (*s == 'h') {
			unit = 3600000;
			s++;
		} else {
			return -1;
		}
		total += v * unit;
		if (total > 100LL * 365 * 86400 * 1000)
			return -1;
	}
	return total;
}

/* Parse an expression (see cronexpr.h). */
int
cronexpr_parse(const char *s, struct cronexpr *out, char *err, size_t errlen)
{
	static const struct { const char *name, *expr; } macros[] = {
		{ "@yearly", "0 0 0 1 1 * *" }, { "@annually", "0 0 0 1 1 * *" },
		{ "@monthly", "0 0 0 1 * * *" }, { "@weekly", "0 0 0 * * 0 *" },
		{ "@daily", "0 0 0 * * * *" }, { "@midnight", "0 0 0 * * * *" },
		{ "@hourly", "0 0 * * * * *" },
	};
	const char *start[F_N + 1], *stop[F_N + 1];
	const char *p;
	size_t len, i;
	int n = 0, first;

	memset(out, 0, sizeof(*out));
	if (s == NULL || (len = strlen(s)) == 0) {
		err_set(err, errlen, "empty expression");
		return -1;
	}
	if (len > CRONEXPR_MAX) {
		err_set(err, errlen, "longer than %d bytes", CRONEXPR_MAX);
		return -1;
	}
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s == '@') {
		size_t wl = strcspn(s, " \t");
		const char *rest = s + wl;

		while (*rest == ' ' || *rest == '\t')
			rest++;
		if (wl == 6 && strncasecmp(s, "@every", 6) == 0) {
			char d[64];
			size_t dl = strcspn(rest, " \t");
			const char *tail = rest + dl;

			while (*tail == ' ' || *tail == '\t')
				tail++;
			if (dl == 0 || dl >= sizeof(d) || *tail != '\0') {
				err_set(err, errlen, "@every: expects one duration");
				return -1;
			}
			memcpy(d, rest, dl);
			d[dl] = '\0';
			if ((out->every_ms = duration_parse(d)) < 1000) {
				out->every_ms = 0;
				err_set(err, errlen, "@every: '%s' is not a Go duration "
				    "of at least 1s", d);
				return -1;
			}
			/* Fires are whole seconds (robfig/cron rounds the same way). */
			out->every_ms -= out->every_ms % 1000;
			return 0;
		}
		for (i = 0; i < sizeof(macros) / sizeof(macros[0]); i++)
			if (strlen(macros[i].name) == wl &&
			    strncasecmp(s, macros[i].name, wl) == 0 && *rest == '\0')
				return cronexpr_parse(macros[i].expr, out, err, errlen);
		err_set(err, errlen, "unknown macro '%.*s'", (int)(wl > 20 ? 20 : wl), s);
		return -1;
	}
	for (p = s; *p != '\0';) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		if (n == F_N) {
			err_set(err, errlen, "more than 7 fields");
			return -1;
		}
		start[n] = p;
		while (*p != '\0' && *p != ' ' && *p != '\t')
			p++;
		stop[n++] = p;
	}
	if (n < 5) {
		err_set(err, errlen, "%d fields: expects 5, 6 or 7", n);
		return -1;
	}
	/* 5: m h dom mon dow; 6: + year; 7: s m h dom mon dow year. */
	first = n == 7 ? F_SEC : F_MIN;
	if (n != 7)
		out->sec = 1;
	for (i = 0; i < (size_t)n; i++) {
		char ferr[160];
		int f = first + (int)i;

		if (field_parse(out, f, start[i], stop[i], ferr, sizeof(ferr)) == -1) {
			const char *colon = strchr(ferr, ':');
			int wl = colon != NULL ? (int)(colon - ferr) : 0;

			err_set(err, errlen, "field %zu (%.*s)%s", i + 1, wl, ferr,
			    colon != NULL ? colon : ferr);
			return -1;
		}
	}
	if (n == 5) {
		out->year[0] = out->year[1] = out->year[2] = ~0ULL;
	}
	if (out->dom == 0 || out->dow == 0) {
		err_set(err, errlen, "no day can match");
		return -1;
	}
	return 0;
}

/* Seconds since the epoch of tm, as UTC or local time. */
static time_t
tm_make(struct tm *tm, int utc)
{
	return utc ? timegm(tm) : mktime(tm);
}

/* Break t down as UTC or local time. */
static void
tm_break(time_t t, struct tm *tm, int utc)
{
	if (utc)
		gmtime_r(&t, tm);
	else
		localtime_r(&t, tm);
}

/* Whether the day of tm matches (the day-of-month / day-of-week rule). */
static int
day_ok(const struct cronexpr *c, const struct tm *tm)
{
	int d = (int)((c->dom >> tm->tm_mday) & 1);
	int w = (int)((c->dow >> tm->tm_wday) & 1);

	if (!c->dom_any && !c->dow_any)
		return d || w;
	if (!c->dow_any)
		return w;
	return d;
}

/* Whether year y is allowed. */
static int
year_ok(const struct cronexpr *c, int y)
{
	if (y < YEAR_MIN || y > YEAR_MAX)
		return 0;
	return (int)((c->year[(y - YEAR_MIN) / 64] >> ((y - YEAR_MIN) % 64)) & 1);
}

/* The next fire strictly after after_ms (see cronexpr.h). */
int64_t
cronexpr_next(const struct cronexpr *c, int64_t after_ms, int utc)
{
	time_t t, nt;
	struct tm tm;
	int guard;

	if (c->every_ms > 0) {
		if (after_ms < 0)
			after_ms = -1;
		return (after_ms / c->every_ms + 1) * c->every_ms;
	}
	t = (time_t)(after_ms >= 0 ? after_ms / 1000 : (after_ms - 999) / 1000) + 1;
	/*
	 * Walk forward field by field, largest first: a field that does not
	 * match moves to the start of its next unit. mktime() normalises
	 * overflowing fields; the guard forbids any step backwards (a DST
	 * fold read with tm_isdst = -1).
	 */
	for (guard = 0; guard < 200000; guard++) {
		int unit;

		tm_break(t, &tm, utc);
		if (tm.tm_year + 1900 > YEAR_MAX)
			return -1;
		if (!year_ok(c, tm.tm_year + 1900)) {
			tm.tm_year++;
			tm.tm_mon = 0;
			tm.tm_mday = 1;
			tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
			unit = 1;
		} else if (!((c->month >> (tm.tm_mon + 1)) & 1)) {
			tm.tm_mon++;
			tm.tm_mday = 1;
			tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
			unit = 1;
		} else if (!day_ok(c, &tm)) {
			tm.tm_mday++;
			tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
			unit = 1;
		} else if (!((c->hour >> tm.tm_hour) & 1)) {
			tm.tm_hour++;
			tm.tm_min = tm.tm_sec = 0;
			unit = 1;
		} else if (!((c->min >> tm.tm_min) & 1)) {
			tm.tm_min++;
			tm.tm_sec = 0;
			unit = 60;
		} else if (!((c->sec >> tm.tm_sec) & 1)) {
			t++;
			continue;
		} else {
			return (int64_t)t * 1000;
		}
		tm.tm_isdst = -1;
		nt = tm_make(&tm, utc);
		if (nt == (time_t)-1)
			return -1;
		if (nt <= t)
			nt = t + unit;
		t = nt;
	}
	return -1;
}
