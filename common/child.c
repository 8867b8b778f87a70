/* child.c - spawning children and the single reaper. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "log.h"
#include "util.h"

extern char **environ;

struct watch {
	pid_t		 pid;
	child_exit_fn	 fn;
	void		*arg;
	struct watch	*next;
};

static struct watch *watches;

/* In the child: report "step: errno" through the pipe, then _exit(127). */
static void __attribute__((noreturn))
child_fail(int fd, const char *step)
{
	char msg[256];
	int n = snprintf(msg, sizeof(msg), "%s: %s", step, strerror(errno));

	if (n > 0)
		(void)!write(fd, msg, (size_t)n);
	_exit(127);
}

/* Point fd `to` at `from`, or /dev/null when from is -1. */
static int
redirect(int from, int to)
{
	int fd = from;

	if (fd == -1 && (fd = open("/dev/null", O_RDWR)) == -1)
		return -1;
	if (fd != to) {
		if (dup2(fd, to) == -1)
			return -1;
		if (from == -1)
			close(fd);
	}
	return 0;
}

/* Close every fd >= 3 except keep (close_range where the kernel has it). */
static void
close_fds(int keep)
{
	long max;
	int fd;

#if defined(__linux__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
	if ((keep <= 3 || close_range(3, (unsigned int)keep - 1, 0) == 0) &&
	    close_range((unsigned int)keep + 1, ~0U, 0) == 0)
		return;
#endif
	max = sysconf(_SC_OPEN_MAX);
	if (max < 0 || max > 65536)
		max = 65536;
	for (fd = 3; fd < max; fd++)
		if (fd != keep)
			close(fd);
}

/* Child side of fork: default signal dispositions, empty mask. */
void
child_reset_signals(void)
{
	sigset_t none;
	int sig;

	for (sig = 1; sig < NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		if (signal(sig, SIG_DFL) != SIG_ERR)
			continue;
#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__))
		/*
		 * glibc refuses its reserved real-time signals (32, 33), yet
		 * an ignored one is inherited across exec like any other and
		 * breaks thread cancellation in the child: ask the kernel.
		 */
		{
			struct {
				void (*handler)(int);
				unsigned long flags;
				void (*restorer)(void);
				unsigned long mask;
			} ksa = { SIG_DFL, 0, NULL, 0 };
			(void)syscall(SYS_rt_sigaction, sig, &ksa, NULL, sizeof(ksa.mask));
		}
#endif
	}
	(void)sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);
}

/* fork + exec with a clean child; exec errors come back through a pipe. */
pid_t
child_spawn(const struct spawn_opts *o, char *err, size_t errlen)
{
	int pfd[2];
	pid_t pid;
	ssize_t n;
	sigset_t all, old;

	if (pipe2(pfd, O_CLOEXEC) == -1) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		return -1;
	}
	/* Block signals across fork so the child starts with no handler run. */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid == 0) {
		int out = o->stdout_fd;
		int errfd = o->stderr_fd == -2 ? o->stdout_fd : o->stderr_fd;

		close(pfd[0]);
		child_reset_signals();
		if (o->new_session && setsid() == -1)
			child_fail(pfd[1], "setsid");
		if (o->cgroup_procs != NULL) {
			int cg = open(o->cgroup_procs, O_WRONLY);
			if (cg == -1 || write(cg, "0", 1) != 1)
				child_fail(pfd[1], "cgroup");
			close(cg);
		}
		if (redirect(o->stdin_fd, 0) == -1 || redirect(out, 1) == -1 ||
		    redirect(errfd, 2) == -1)
			child_fail(pfd[1], "redirect stdio");
		close_fds(pfd[1]);
		if (o->switch_user) {
			if (initgroups(o->user, o->gid) == -1)
				child_fail(pfd[1], "initgroups");
			if (setgid(o->gid) == -1)
				child_fail(pfd[1], "setgid");
			if (setuid(o->uid) == -1)
				child_fail(pfd[1], "setuid");
		}
		if (o->cwd != NULL && chdir(o->cwd) == -1)
			child_fail(pfd[1], "chdir");
		umask(022);
		execve(o->path, o->argv, o->envp ? o->envp : environ);
		child_fail(pfd[1], "exec");
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(pfd[1]);
	if (pid == -1) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(pfd[0]);
		return -1;
	}
	do {
		n = read(pfd[0], err, errlen > 0 ? errlen - 1 : 0);
	} while (n == -1 && errno == EINTR);
	close(pfd[0]);
	if (n > 0) {
		int status;
		err[n] = '\0';
		while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
			;
		return -1;
	}
	if (errlen > 0)
		err[0] = '\0';
	return pid;
}

/* Call fn when pid is reaped. */
void
child_watch(pid_t pid, child_exit_fn fn, void *arg)
{
	struct watch *w = xcalloc(1, sizeof(*w));

	w->pid = pid;
	w->fn = fn;
	w->arg = arg;
	w->next = watches;
	watches = w;
}

/* Forget a watched pid. */
void
child_unwatch(pid_t pid)
{
	struct watch **pp, *w;

	for (pp = &watches; (w = *pp) != NULL; pp = &w->next)
		if (w->pid == pid) {
			*pp = w->next;
			free(w);
			return;
		}
}

/* The one waitpid(-1) loop: reap every exited child. */
void
child_reap(void)
{
	pid_t pid;
	int status;

	for (;;) {
		struct watch **pp, *w;
		pid = waitpid(-1, &status, WNOHANG);
		if (pid == 0)
			break;
		if (pid == -1) {
			if (errno == EINTR)
				continue;
			break;	/* ECHILD */
		}
		for (pp = &watches; (w = *pp) != NULL; pp = &w->next)
			if (w->pid == pid)
				break;
		if (w == NULL) {
			log_debug("reaped unknown child %ld: %s", (long)pid,
			    child_status_str(status));
			continue;
		}
		*pp = w->next;
		w->fn(pid, status, w->arg);
		free(w);
	}
}

/* Run a short probe, capturing its output, with a timeout. */
int
child_run_capture(char *const argv[], const char *cwd, int timeout_ms,
    size_t max, char **out, int *status)
{
	struct spawn_opts o;
	char err[256], *buf;
	size_t len = 0;
	int pfd[2];
	int64_t deadline = mono_ms() + timeout_ms;
	pid_t pid;

	*out = NULL;
	if (pipe2(pfd, O_CLOEXEC) == -1)
		return -1;
	memset(&o, 0, sizeof(o));
	o.path = argv[0];
	o.argv = argv;
	o.cwd = cwd;
	/* Its own process group from before exec (setsid in the child), so
	 * that an overrun kills whatever it started too. */
	o.new_session = 1;
	o.stdin_fd = -1;
	o.stdout_fd = pfd[1];
	o.stderr_fd = -2;
	pid = child_spawn(&o, err, sizeof(err));
	close(pfd[1]);
	if (pid == -1) {
		close(pfd[0]);
		log_warnx("run %s: %s", argv[0], err);
		errno = ENOEXEC;
		return -1;
	}
	buf = xmalloc(max + 1);
	for (;;) {
		struct pollfd p = { pfd[0], POLLIN, 0 };
		int64_t left = deadline - mono_ms();
		char tmp[4096];
		ssize_t n;
		if (left <= 0)
			goto overrun;
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		n = read(pfd[0], tmp, sizeof(tmp));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (len < max) {
			size_t k = (size_t)n < max - len ? (size_t)n : max - len;
			memcpy(buf + len, tmp, k);
			len += k;
		}
	}
	close(pfd[0]);
	buf[len] = '\0';
	/* Output closed; the exit must come within the same deadline. */
	for (;;) {
		pid_t w = waitpid(pid, status, WNOHANG);

		if (w == pid)
			break;
		if (w == -1 && errno != EINTR) {
			*status = 0;
			break;
		}
		if (mono_ms() >= deadline) {
			free(buf);
			buf = NULL;
			pfd[0] = -1;
			goto overrun;
		}
		(void)poll(NULL, 0, 10);
	}
	*out = buf;
	return 0;
overrun:
	kill(-pid, SIGKILL);
	kill(pid, SIGKILL);
	while (waitpid(pid, status, 0) == -1 && errno == EINTR)
		;
	if (pfd[0] != -1)
		close(pfd[0]);
	free(buf);
	errno = ETIMEDOUT;
	return -1;
}

/* Start a detached program (child.h). */
pid_t
child_spawn_detached(const char *path, char *const argv[], const char *cwd,
    char *err, size_t errlen)
{
	struct spawn_opts o;

	(void)chmod(path, 0755);
	memset(&o, 0, sizeof(o));
	o.path = path;
	o.argv = argv;
	o.cwd = cwd;
	o.new_session = 1;
	o.stdin_fd = o.stdout_fd = o.stderr_fd = -1;
	return child_spawn(&o, err, errlen);
}

/* A wait status in words. */
const char *
child_status_str(int status)
{
	static char buf[64];

	if (WIFEXITED(status))
		snprintf(buf, sizeof(buf), "exit code %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, sizeof(buf), "signal %d (%s)", WTERMSIG(status),
		    strsignal(WTERMSIG(status)));
	else
		snprintf(buf, sizeof(buf), "status 0x%x", status);
	return buf;
}
