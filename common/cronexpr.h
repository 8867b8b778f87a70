/*
 * cronexpr.h - cron expressions as github.com/gorhill/cronexpr reads them
 * (the library of the go-crontab design the cron task source follows), in
 * one small file with no dependency.
 *
 * Accepted forms (fields separated by blanks):
 *   5 fields   minute hour day-of-month month day-of-week   (second 0, any year)
 *   6 fields   minute hour day-of-month month day-of-week year
 *   7 fields   second minute hour day-of-month month day-of-week year
 * (gorhill's rule: with six fields the extra one is the YEAR, not seconds.)
 * Each field is a comma list of "*", "?" (day fields), "N", "N-M", and any
 * of those with "/STEP" ("N/STEP" runs from N to the field's maximum).
 * Months take JAN..DEC, days of the week SUN..SAT (also full names, any
 * case); day of week 7 is Sunday. Ranges: second 0-59, minute 0-59, hour
 * 0-23, day 1-31, month 1-12, weekday 0-7, year 1970-2099.
 * When both day fields are restricted (not "*" or "?"), a day matches when
 * either matches (crontab(5)); when only one is, that one decides.
 * Macros: @yearly @annually @monthly @weekly @daily @midnight @hourly, and
 * "@every <duration>" (Go duration: "90s", "5m", "1h30m"; units h m s ms;
 * at least 1 s, rounded down to whole seconds) whose fires are the multiples of the duration since the
 * Unix epoch, so every machine computes the same plan times.
 * Not supported (refused with a message): gorhill's L, W, LW and '#'.
 */
#ifndef CRONEXPR_H
#define CRONEXPR_H

#include <stddef.h>
#include <stdint.h>

/** Longest expression accepted, bytes. */
#define CRONEXPR_MAX	256

/** A parsed expression (plain data: copy it freely). */
struct cronexpr {
	uint64_t	sec;		/* bit n: second n allowed */
	uint64_t	min;
	uint32_t	hour;
	uint32_t	dom;		/* bits 1..31 */
	uint32_t	month;		/* bits 1..12 */
	uint32_t	dow;		/* bits 0..6 (7 folded into 0) */
	uint64_t	year[3];	/* bit (y - 1970) */
	int		dom_any;	/* day-of-month is "*" or "?" */
	int		dow_any;
	int64_t		every_ms;	/* > 0: "@every", the bitmaps are unused */
};

/**
 * Parse s (NUL-terminated, at most CRONEXPR_MAX bytes) into *out.
 * Returns 0, or -1 with a one-line reason in err (errlen bytes, may be 0),
 * e.g. "field 2 (hour): 24 out of range 0-23".
 */
int cronexpr_parse(const char *s, struct cronexpr *out, char *err, size_t errlen);

/**
 * The first fire time strictly after after_ms (ms since the epoch), in ms
 * (always a whole second). utc: 1 to read the fields in UTC, 0 in the
 * local time zone (TZ). A wall-clock time skipped by a DST change is not
 * fired; one repeated by it may fire twice (as cron does). Returns -1 when
 * there is no later fire (the year field ended, or beyond 2099).
 */
int64_t cronexpr_next(const struct cronexpr *c, int64_t after_ms, int utc);

#endif
