/*
 * util.h - memory helpers, string helpers and clocks shared by all binaries.
 *
 * Out-of-memory is fatal everywhere (STYLE.md §3): the x* allocators never
 * return NULL; they log and abort.
 */
#ifndef UTIL_H
#define UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

/**
 * Bytes that every binary of this project carries (util.c), so that the
 * agent can tell one of its own binaries from GoAgent's in an upgrade
 * package without running it (docs/upgrader.md, version policy).
 */
#define IMPL_MARKER "devops-agent-c/implementation-marker/1"
extern const char impl_marker[];

/**
 * snprintf into a caller's message buffer err (errlen bytes) when there is
 * one: err may be NULL or errlen 0, then nothing is written.
 */
void err_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** malloc(n); never returns NULL (aborts on OOM). Caller frees. */
void *xmalloc(size_t n);
/** calloc(n, size); never returns NULL. Caller frees. */
void *xcalloc(size_t n, size_t size);
/** realloc(p, n); never returns NULL. */
void *xrealloc(void *p, size_t n);
/** strdup(s); s must not be NULL. Caller frees. */
char *xstrdup(const char *s);
/** strndup(s, n). Caller frees. */
char *xstrndup(const char *s, size_t n);
/** printf into a new heap string. Caller frees. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** vprintf into a new heap string. Caller frees. */
char *xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/**
 * Copy src into dst (size bytes, always NUL-terminated when size > 0).
 * Returns strlen(src); a result >= size means the copy was truncated.
 */
size_t strlcpy_(char *dst, const char *src, size_t size);

/** Trim ASCII white space at both ends, in place. Returns s. */
char *str_trim(char *s);
/** True when s is NULL or only white space. */
int str_blank(const char *s);
/**
 * Quote s for a POSIX shell: '...' with each ' written as '\''.
 * New string, caller frees.
 */
char *shell_quote(const char *s);

/** True when s starts with prefix. */
int str_starts(const char *s, const char *prefix);
/** True when s ends with suffix. */
int str_ends(const char *s, const char *suffix);

/**
 * Parse a decimal integer (optional sign, surrounding blanks allowed) into
 * *out. Returns 0 on success, -1 when s is not a whole number in range.
 * Replaces atoi(), which cannot report errors (banned, STYLE.md).
 */
int str_to_ll(const char *s, long long *out);

/** Monotonic clock in milliseconds (CLOCK_MONOTONIC); for scheduling. */
int64_t mono_ms(void);
/** Wall clock in milliseconds since the Unix epoch; for reports only. */
int64_t wall_ms(void);

/** Free *p and set it to NULL. */
void xfree_ptr(char **p);

#endif
