/*
 * log.h - the one logger of each process (STYLE.md §7).
 *
 * Line format (GoAgent's, plus the process tag):
 *   YYYY-MM-DD HH:MM:SS.mmm|LEVEL|tag[pid]|message
 * Lines go to one file (logs/devopsAgent.log, ...) that rotates by size:
 * name.log -> name.1.log -> ... -> name.<keep>.log. Until log_open() succeeds,
 * lines go to stderr.
 *
 * Secrets: every string registered with log_add_secret() is replaced by "***"
 * in every line before it is written, so a secret key that slips into a
 * format argument still never reaches a log file.
 *
 * One record is one line: '\n' and '\r' inside a message become spaces and
 * other control bytes '?', so text from the network cannot forge log lines.
 *
 * Disk full: a record that cannot be written is dropped whole (a torn tail
 * is truncated away), the first failure is reported on stderr, and once
 * writing works again the log gets a WARN line "log: N earlier line(s)
 * could not be written: <reason>" before the next record.
 */
#ifndef LOG_H
#define LOG_H

#include <stddef.h>
#include <stdio.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/**
 * Open (append, create 0600) the log file at path and tag lines with tag
 * (e.g. "agent"). Both strings are copied. Returns 0, or -1 with errno set;
 * on failure logging continues on stderr.
 */
int log_open(const char *path, const char *tag);
/** Reopen the log file at the same path (SIGHUP, after an external move). */
int log_reopen(void);
/** Also copy every line to stderr (foreground runs, tests). */
void log_set_stderr(int on);
/** Lines below level are dropped before formatting. Default LOG_INFO. */
void log_set_level(enum log_level level);
/** Current minimum level. */
enum log_level log_get_level(void);
/**
 * Rotate when the file exceeds max_bytes (0 = never), keeping keep old files.
 * Defaults: 50 MiB, 5 files.
 */
void log_set_rotation(long long max_bytes, int keep);
/** Register a secret (copied) to be masked in every later line; NULL/"" ignored. */
void log_add_secret(const char *secret);
/** Forget every registered secret. */
void log_clear_secrets(void);
/** Mask registered secrets in buf (NUL-terminated, size bytes) in place. */
void log_redact(char *buf, size_t size);

/**
 * printf-style line at DEBUG level; nothing is formatted unless the level
 * is enabled (log_set_level). The text is masked (log_add_secret) and
 * flattened to one line before it is written.
 */
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** printf-style line at INFO level (masked and flattened like log_debug). */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** Warning with ": strerror(errno)" appended. */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** Warning without errno. */
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** Error without errno. */
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** Log ": strerror(errno)" appended, then exit(1). */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/** Log, then exit(1). */
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
