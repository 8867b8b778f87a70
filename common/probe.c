/*
 * probe.c - short probe commands on the event loop (probe.h): the output
 * pipe is an ev fd, the exit comes through the one reaper (child_watch), the
 * deadline is a timer. A probe is done when it was reaped and its output
 * ended; at the deadline its process group is killed and its output
 * abandoned (a grandchild that left the group may hold the pipe open).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "child.h"
#include "ev.h"
#include "log.h"
#include "probe.h"
#include "util.h"

struct probe {
	pid_t		 pid;
	int		 fd;		/* read end, -1 once ended */
	char		*buf;
	size_t		 len, max;
	int		 reaped, status, timed_out;
	struct timer	 deadline;
	probe_fn	 fn;
	void		*arg;
	char		*name;		/* argv[0], for the log */
	struct probe	*next;
};

static int running;
static struct probe *probes;	/* in flight, for probe_kill_all */

/* Close the output pipe (EOF, error or abandoned). */
static void
probe_close(struct probe *p)
{
	if (p->fd == -1)
		return;
	ev_fd_del(p->fd);
	close(p->fd);
	p->fd = -1;
}

/* Reaped and output ended: report and free. */
static void
probe_maybe_done(struct probe *p)
{
	struct probe_result r;

	if (!p->reaped || p->fd != -1)
		return;
	timer_cancel(&p->deadline);
	for (struct probe **pp = &probes; *pp != NULL; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	p->buf[p->len] = '\0';
	r.ok = !p->timed_out;
	r.status = p->status;
	r.timed_out = p->timed_out;
	r.out = p->buf;
	r.len = p->len;
	running--;
	p->fn(&r, p->arg);
	free(p->buf);
	free(p->name);
	free(p);
}

/* Output readable: keep up to max bytes, drop the rest. */
static void
probe_read(int fd, short revents, void *arg)
{
	struct probe *p = arg;
	char tmp[4096];
	ssize_t n;

	(void)revents;
	n = read(fd, tmp, sizeof(tmp));
	if (n == -1 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		probe_close(p);
		probe_maybe_done(p);
		return;
	}
	if (p->len < p->max) {
		size_t k = (size_t)n < p->max - p->len ? (size_t)n : p->max - p->len;
		memcpy(p->buf + p->len, tmp, k);
		p->len += k;
	}
}

/* The reaper saw the probe exit. */
static void
probe_exited(pid_t pid, int status, void *arg)
{
	struct probe *p = arg;

	(void)pid;
	p->reaped = 1;
	p->status = status;
	probe_maybe_done(p);
}

/* Deadline: kill the whole group, stop waiting for its output. */
static void
probe_overrun(void *arg)
{
	struct probe *p = arg;

	log_warnx("probe %s: still running after its deadline; killing its "
	    "process group", p->name);
	p->timed_out = 1;
	if (!p->reaped) {
		(void)kill(-p->pid, SIGKILL);
		(void)kill(p->pid, SIGKILL);
	}
	probe_close(p);
	probe_maybe_done(p);
}

/* Start a probe (probe.h). */
int
probe_run(char *const argv[], const char *cwd, int64_t timeout_ms,
    size_t max_out, probe_fn fn, void *arg)
{
	struct spawn_opts o;
	struct probe *p;
	char err[256];
	int pfd[2];

	if (pipe2(pfd, O_CLOEXEC) == -1) {
		log_warn("probe %s: pipe", argv[0]);
		return -1;
	}
	memset(&o, 0, sizeof(o));
	o.path = argv[0];
	o.argv = argv;
	o.cwd = cwd;
	o.new_session = 1;	/* its own group: an overrun kills all of it */
	o.stdin_fd = -1;
	o.stdout_fd = pfd[1];
	o.stderr_fd = -2;
	p = xcalloc(1, sizeof(*p));
	p->pid = child_spawn(&o, err, sizeof(err));
	close(pfd[1]);
	if (p->pid == -1) {
		log_warnx("probe %s: %s", argv[0], err);
		close(pfd[0]);
		free(p);
		return -1;
	}
	(void)fcntl(pfd[0], F_SETFL, fcntl(pfd[0], F_GETFL) | O_NONBLOCK);
	p->fd = pfd[0];
	p->max = max_out;
	p->buf = xmalloc(max_out + 1);
	p->fn = fn;
	p->arg = arg;
	p->name = xstrdup(argv[0]);
	running++;
	p->next = probes;
	probes = p;
	if (ev_fd_add(p->fd, POLLIN, probe_read, p) == -1) {
		log_warnx("probe %s: cannot watch its output; abandoned", argv[0]);
		close(p->fd);
		p->fd = -1;
	}
	child_watch(p->pid, probe_exited, p);
	timer_init(&p->deadline, "probe-deadline", probe_overrun, p);
	timer_set(&p->deadline, timeout_ms);
	return 0;
}

/* The process exits: kill every probe's group (probe.h). */
void
probe_kill_all(void)
{
	struct probe *p;

	for (p = probes; p != NULL; p = p->next)
		if (!p->reaped) {
			(void)kill(-p->pid, SIGKILL);
			(void)kill(p->pid, SIGKILL);
		}
}

/* Probes in flight. */
int
probe_running(void)
{
	return running;
}
