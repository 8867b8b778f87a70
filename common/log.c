/* log.c - leveled, size-rotated, secret-masking logger. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LOG_LINE_MAX	8192
#define LOG_SECRETS_MAX	16

static int	 log_fd = -1;
static char	*log_path;
static char	 log_tag[32] = "agent";
static int	 log_to_stderr;
static enum log_level log_level = LOG_INFO;
static long long log_max_bytes = 50LL * 1024 * 1024;
static int	 log_keep = 5;
static long long log_size;
static long long log_lost;	/* records not written since the last success */
static int	 log_lost_errno;	/* why the first of them failed */
static char	*log_secrets[LOG_SECRETS_MAX];

/* Open (or switch to) the log file at path; lines get tag. */
int
log_open(const char *path, const char *tag)
{
	int fd;
	struct stat st;

	if (tag != NULL)
		snprintf(log_tag, sizeof(log_tag), "%s", tag);
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd == -1)
		return -1;
	if (log_fd != -1)
		close(log_fd);
	log_fd = fd;
	log_size = fstat(fd, &st) == 0 ? (long long)st.st_size : 0;
	if (log_path != path) {
		free(log_path);
		log_path = strdup(path);
	}
	return 0;
}

/* Reopen the same log path (after an external move, SIGHUP). */
int
log_reopen(void)
{
	if (log_path == NULL)
		return 0;
	return log_open(log_path, NULL);
}

/* Copy every line to stderr too. */
void
log_set_stderr(int on)
{
	log_to_stderr = on;
}

/* Drop lines below level from now on. */
void
log_set_level(enum log_level level)
{
	log_level = level;
}

/* The current minimum level. */
enum log_level
log_get_level(void)
{
	return log_level;
}

/* Rotate at max_bytes, keeping keep old files. */
void
log_set_rotation(long long max_bytes, int keep)
{
	log_max_bytes = max_bytes;
	log_keep = keep < 1 ? 1 : keep;
}

/* Remember a secret to mask in every later line. */
void
log_add_secret(const char *secret)
{
	size_t i;

	if (secret == NULL || *secret == '\0')
		return;
	for (i = 0; i < LOG_SECRETS_MAX; i++) {
		if (log_secrets[i] != NULL && strcmp(log_secrets[i], secret) == 0)
			return;
		if (log_secrets[i] == NULL) {
			log_secrets[i] = strdup(secret);
			return;
		}
	}
}

/* Forget every registered secret. */
void
log_clear_secrets(void)
{
	size_t i;

	for (i = 0; i < LOG_SECRETS_MAX; i++) {
		free(log_secrets[i]);
		log_secrets[i] = NULL;
	}
}

/* Replace every registered secret in buf by "***", in place. */
void
log_redact(char *buf, size_t size)
{
	size_t i, slen, blen;
	char *p;

	(void)size;
	for (i = 0; i < LOG_SECRETS_MAX; i++) {
		if (log_secrets[i] == NULL)
			continue;
		slen = strlen(log_secrets[i]);
		/*
		 * Search on after each mask: a secret made of '*' (e.g. "***")
		 * would otherwise be found again in its own mask forever.
		 */
		p = buf;
		while ((p = strstr(p, log_secrets[i])) != NULL) {
			/* "***" is never longer than a masked secret of >= 3 bytes. */
			if (slen >= 3) {
				blen = strlen(p + slen);
				p[0] = p[1] = p[2] = '*';
				memmove(p + 3, p + slen, blen + 1);
				p += 3;
			} else {
				memset(p, '*', slen);
				p += slen;
			}
		}
	}
}

/*
 * One record, one line: server messages, error files and command output
 * end up in format arguments, and a '\n' in them could forge a line with
 * its own timestamp and level. Line breaks become spaces and other control
 * bytes '?' (tabs stay). Returns the length of s.
 */
static size_t
log_flatten(char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\n' || c == '\r')
			s[i] = ' ';
		else if ((c < 0x20 && c != '\t') || c == 0x7f)
			s[i] = '?';
	}
	return i;
}

/* name.log -> name.N.log; the path without ".log" gets ".N.log". */
static void
rotated_name(char *out, size_t size, int n)
{
	size_t len = strlen(log_path);

	if (len > 4 && strcmp(log_path + len - 4, ".log") == 0)
		snprintf(out, size, "%.*s.%d.log", (int)(len - 4), log_path, n);
	else
		snprintf(out, size, "%s.%d", log_path, n);
}

/* Shift name.(k).log up by one and start a fresh file. */
static void
log_rotate(void)
{
	char from[4096], to[4096];
	int i;

	for (i = log_keep - 1; i >= 1; i--) {
		rotated_name(from, sizeof(from), i);
		rotated_name(to, sizeof(to), i + 1);
		(void)rename(from, to);
	}
	rotated_name(to, sizeof(to), 1);
	if (rename(log_path, to) == -1)
		return;
	(void)log_open(log_path, NULL);
}

/*
 * Append one record to the log file. On failure (disk full, I/O error) a
 * torn tail is cut off again, so the file only ever holds whole lines, and
 * the record counts as lost; the first loss is reported on stderr.
 */
static int
log_file_write(const char *rec, size_t n)
{
	ssize_t w = write(log_fd, rec, n);

	if (w == (ssize_t)n) {
		log_size += (long long)n;
		return 0;
	}
	if (w > 0)
		(void)!ftruncate(log_fd, (off_t)log_size);
	if (log_lost++ == 0) {
		log_lost_errno = w == -1 ? errno : ENOSPC;
		fprintf(stderr, "%s: log write failed: %s\n", log_tag,
		    strerror(log_lost_errno));
	}
	return -1;
}

/*
 * Writing works again after a failure: first say in the log itself how
 * many lines are missing and why. stamp: the time stamp of the record
 * about to be written (slen bytes).
 */
static void
log_note_lost(const char *stamp, size_t slen)
{
	char note[512];
	int k;

	k = snprintf(note, sizeof(note), "%.*s|WARN|%s[%ld]|log: %lld earlier "
	    "line(s) could not be written: %s\n", (int)slen, stamp, log_tag,
	    (long)getpid(), log_lost, strerror(log_lost_errno));
	if (k <= 0 || (size_t)k >= sizeof(note))
		return;
	if (write(log_fd, note, (size_t)k) == k) {
		log_size += k;
		log_lost = 0;
	}
}

/* Format one record, mask, flatten, and write it. */
static void
log_vwrite(enum log_level level, int with_errno, const char *fmt, va_list ap)
{
	static const char *names[] = { "DEBUG", "INFO", "WARN", "ERROR" };
	char line[LOG_LINE_MAX];
	struct timeval tv;
	struct tm tm;
	size_t n;
	int saved = errno, k;

	if (level < log_level)
		return;
	gettimeofday(&tv, NULL);
	localtime_r(&tv.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%d %H:%M:%S", &tm);
	k = snprintf(line + n, sizeof(line) - n, ".%03ld|%s|%s[%ld]|",
	    (long)(tv.tv_usec / 1000), names[level], log_tag, (long)getpid());
	n += (size_t)k;
	k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	n = k < 0 ? n : n + (size_t)k;
	if (n >= sizeof(line) - 2)
		n = sizeof(line) - 2;
	if (with_errno) {
		k = snprintf(line + n, sizeof(line) - n, ": %s", strerror(saved));
		n = k < 0 ? n : n + (size_t)k;
		if (n >= sizeof(line) - 2)
			n = sizeof(line) - 2;
	}
	line[n] = '\0';
	log_redact(line, sizeof(line));
	n = log_flatten(line);
	line[n++] = '\n';
	line[n] = '\0';

	if (log_fd == -1 || log_to_stderr)
		(void)!write(STDERR_FILENO, line, n);
	if (log_fd != -1) {
		if (log_lost > 0)
			log_note_lost(line, strcspn(line, "|"));
		if (log_file_write(line, n) == 0 && log_max_bytes > 0 &&
		    log_size > log_max_bytes)
			log_rotate();
	}
	errno = saved;
}

#define LOG_FN(name, level, with_errno)				\
void								\
name(const char *fmt, ...)					\
{								\
	va_list ap;						\
	va_start(ap, fmt);					\
	log_vwrite(level, with_errno, fmt, ap);			\
	va_end(ap);						\
}

LOG_FN(log_debug, LOG_DEBUG, 0)
LOG_FN(log_info, LOG_INFO, 0)
LOG_FN(log_warn, LOG_WARN, 1)
LOG_FN(log_warnx, LOG_WARN, 0)
LOG_FN(log_error, LOG_ERROR, 0)

/* Log with strerror(errno), then exit(1). */
void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_ERROR, 1, fmt, ap);
	va_end(ap);
	exit(1);
}

/* Log, then exit(1). */
void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_ERROR, 0, fmt, ap);
	va_end(ap);
	exit(1);
}
