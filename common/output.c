/*
 * output.c - the executor's output capture (executor.h, executor_int.h): the
 * task's stdout/stderr pipes read from the event loop, output.log, the tail
 * ring, the live output hook, back-pressure, and clean UTF-8 text.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "child.h"
#include "envlist.h"
#include "ev.h"
#include "executor.h"
#include "executor_int.h"
#include "fsutil.h"
#include "json.h"
#include "log.h"
#include "proc.h"
#include "util.h"

/*
 * Copy n bytes of p into a new string of valid UTF-8: invalid sequences and
 * NUL bytes become U+FFFD, as Go's json.Marshal does for the GoAgent's
 * response text. skip_partial drops continuation bytes at the start (the
 * tail of a truncated output may begin in the middle of a character).
 */
char *
output_utf8_clean(const char *src, size_t n, int skip_partial)
{
	const unsigned char *p = (const unsigned char *)src;
	char *out = xmalloc(n * 3 + 1), *o = out;
	size_t i = 0;

	while (skip_partial && i < n && i < 3 && (p[i] & 0xC0) == 0x80)
		i++;
	while (i < n) {
		unsigned char c = p[i];
		size_t len = 0, k;
		unsigned int cp = 0, min = 0;

		if (c >= 0x01 && c < 0x80) {
			*o++ = (char)c;
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			len = 2; cp = c & 0x1F; min = 0x80;
		} else if (c >= 0xE0 && c <= 0xEF) {
			len = 3; cp = c & 0x0F; min = 0x800;
		} else if (c >= 0xF0 && c <= 0xF4) {
			len = 4; cp = c & 0x07; min = 0x10000;
		}
		for (k = 1; len > 0 && k < len; k++) {
			if (i + k >= n || (p[i + k] & 0xC0) != 0x80) {
				len = 0;
				break;
			}
			cp = (cp << 6) | (p[i + k] & 0x3F);
		}
		if (len == 0 || cp < min || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF)) {
			memcpy(o, "\xEF\xBF\xBD", 3);
			o += 3;
			i++;
			continue;
		}
		memcpy(o, p + i, len);
		o += len;
		i += len;
	}
	*o = '\0';
	return out;
}

/* Wall-clock time as "YYYY-MM-DD HH:MM:SS" (local time) into buf. */
void
output_fmt_time(int64_t ms, char *buf, size_t size)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;

	if (localtime_r(&s, &tm) == NULL || strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(buf, size, "%lld", (long long)ms);
}

/* Append text to output.log (best effort: the tail in memory is what counts). */
void
output_log_put(struct task *t, const char *text, size_t len)
{
	if (t->log_fd == -1)
		return;
	if (fs_write_all(t->log_fd, text, len) == -1) {
		log_warn("task %s: cannot write %s/" LOG_FILE "; the output tail is "
		    "still kept", t->id, t->dir);
		close(t->log_fd);
		t->log_fd = -1;
	}
}

/* Keep the last EXEC_TAIL_MAX bytes of the output in the ring. */
static void
ring_put(struct task *t, const char *p, size_t n)
{
	size_t first;

	if (n >= EXEC_TAIL_MAX) {
		memcpy(t->ring, p + n - EXEC_TAIL_MAX, EXEC_TAIL_MAX);
		t->ring_head = 0;
		t->ring_len = EXEC_TAIL_MAX;
		return;
	}
	first = EXEC_TAIL_MAX - t->ring_head;
	if (first > n)
		first = n;
	memcpy(t->ring + t->ring_head, p, first);
	memcpy(t->ring, p + first, n - first);
	t->ring_head = (t->ring_head + n) % EXEC_TAIL_MAX;
	t->ring_len = t->ring_len + n > EXEC_TAIL_MAX ? EXEC_TAIL_MAX : t->ring_len + n;
}

/* The ring as one clean UTF-8 string. */
char *
output_ring_text(const struct task *t)
{
	char *lin = xmalloc(t->ring_len + 1), *s;
	size_t start = (t->ring_head + EXEC_TAIL_MAX - t->ring_len) % EXEC_TAIL_MAX;
	size_t first = EXEC_TAIL_MAX - start;

	if (first > t->ring_len)
		first = t->ring_len;
	memcpy(lin, t->ring + start, first);
	memcpy(lin + first, t->ring, t->ring_len - first);
	s = output_utf8_clean(lin, t->ring_len, t->total > (long long)t->ring_len);
	free(lin);
	return s;
}

/* Stop watching the output pipe and close it. */
void
output_pipe_close(struct task *t)
{
	if (t->err_fd >= 0) {
		ev_fd_del(t->err_fd);
		close(t->err_fd);
		t->err_fd = -1;
	}
	if (t->out_fd == -1)
		return;
	ev_fd_del(t->out_fd);
	close(t->out_fd);
	t->out_fd = -1;
}

/* Read one of the task's pipes; returns 1 at EOF (the fd is then closed). */
static int
pipe_read(struct task *t, int *fdp, int stream)
{
	static char buf[READ_CHUNK];
	int i;

	for (i = 0; i < READS_PER_TURN; i++) {
		ssize_t n = read(*fdp, buf, sizeof(buf));
		if (n > 0) {
			output_log_put(t, buf, (size_t)n);
			ring_put(t, buf, (size_t)n);
			t->total += n;
			if (t->out_fn != NULL)
				t->out_fn(t->id, stream, buf, (size_t)n, t->out_arg);
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n == -1)
			log_warn("task %s: reading its output", t->id);
		ev_fd_del(*fdp);	/* EOF (or a broken pipe) */
		close(*fdp);
		*fdp = -1;
		return 1;
	}
	return 0;
}

/* The split stderr pipe is readable. */
void
output_on_stderr(int fd, short revents, void *arg)
{
	struct task *t = arg;

	(void)fd;
	(void)revents;
	if (t->err_fd >= 0 && pipe_read(t, &t->err_fd, 2))
		exec_task_maybe_end(t);
}

/*
 * Read what the task wrote (a bounded number of chunks per turn so one
 * chatty task cannot starve the loop): to output.log and the tail ring.
 */
void
output_on_stdout(int fd, short revents, void *arg)
{
	struct task *t = arg;

	(void)fd;
	(void)revents;
	if (t->out_fd != -1 && pipe_read(t, &t->out_fd, 1))
		exec_task_maybe_end(t);
}

/* Stop or resume reading a task's output (back-pressure of the owner). */
int
exec_output_pause(struct executor *e, const char *id, int pause)
{
	struct task *t;

	for (t = e->tasks; t != NULL; t = t->next)
		if (!t->ended && strcmp(t->id, id) == 0)
			break;
	if (t == NULL)
		return 0;
	pause = pause != 0;
	if (t->paused == pause)
		return 1;
	t->paused = pause;
	if (pause) {
		if (t->out_fd >= 0)
			ev_fd_del(t->out_fd);
		if (t->err_fd >= 0)
			ev_fd_del(t->err_fd);
		return 1;
	}
	if ((t->out_fd >= 0 && ev_fd_add(t->out_fd, POLLIN, output_on_stdout, t) == -1) ||
	    (t->err_fd >= 0 && ev_fd_add(t->err_fd, POLLIN, output_on_stderr, t) == -1))
		log_warn("task %s: cannot watch its output again", t->id);
	return 1;
}
