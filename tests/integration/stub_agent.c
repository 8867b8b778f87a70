/*
 * stub_agent.c - stand-in for devopsAgent in the daemon and script tests.
 *
 * Built by tests/integration/stub_agent.py into a temporary install dir as
 * "devopsAgent", so /proc/<pid>/exe names that file as for the real agent.
 * It honours the agent's side of the contract with the daemon (§3.2): chdir
 * to its own directory, try-lock runtime/agent.lock (exit 0 when held), wait
 * for runtime/total-lock.lock, write runtime/agent.pid (no newline, via
 * rename), release total-lock, keep agent.lock for life; SIGTERM -> exit 0.
 *
 * Behaviour after that comes, at each start, from the file stub_agent.mode
 * in its directory (a test may change it while the daemon runs), else from
 * $STUB_AGENT_MODE, else "normal":
 *
 *   normal       run until SIGTERM
 *   exit N       take the lock, then exit N at once
 *   run MS N     take the lock, run MS milliseconds, then exit N
 *   stubborn     like normal but ignore SIGTERM (for SIGKILL paths)
 *   worker       like normal, after starting a "build worker" (sleep 1000)
 *                in its own session; its pid goes to stub_agent.workers
 *
 * Every start appends one JSON line to stub_agent.starts: pid, args, cwd,
 * session id, the targets of the fds it was given, its ignored and blocked
 * signal masks (hex, /proc/self/status), the mode, $STUB_MARK and
 * whether it got agent.lock ("locked"; false means it exited 0 at once).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char mode[256] = "normal";

/* Print s as a JSON string to f. */
static void
json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s != NULL && *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static char fds[4096];	/* "fd": "target" pairs, taken before we open anything */
static char sigign[32] = "?", sigblk[32] = "?";	/* from /proc/self/status */

/* Copy the SigIgn and SigBlk masks we were started with. */
static void
sigs_read(void)
{
	char line[256];
	FILE *f;

	if ((f = fopen("/proc/self/status", "r")) == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "SigIgn:\t", 8) == 0)
			snprintf(sigign, sizeof(sigign), "%.31s", line + 8);
		else if (strncmp(line, "SigBlk:\t", 8) == 0)
			snprintf(sigblk, sizeof(sigblk), "%.31s", line + 8);
	}
	fclose(f);
}

/* List the fds we were given into fds. */
static void
fds_list(void)
{
	char link[300], target[PATH_MAX];
	struct dirent *de;
	size_t n = 0;
	ssize_t len;
	DIR *d;

	if ((d = opendir("/proc/self/fd")) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.' || strtol(de->d_name, NULL, 10) == dirfd(d))
				continue;
			snprintf(link, sizeof(link), "/proc/self/fd/%s", de->d_name);
			if ((len = readlink(link, target, sizeof(target) - 1)) < 0)
				continue;
			target[len] = '\0';
			n += (size_t)snprintf(fds + n, sizeof(fds) - n, "%s\"%s\": \"%s\"",
			    n ? ", " : "", de->d_name, target);
			if (n >= sizeof(fds))
				break;
		}
		closedir(d);
	}
}

/* Append the start record to stub_agent.starts; locked: got agent.lock. */
static void
record_start(int argc, char **argv, int locked)
{
	char cwd[PATH_MAX], *mark;
	struct timespec ts;
	FILE *f;
	int i;

	if ((f = fopen("stub_agent.starts", "a")) == NULL)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	fprintf(f, "{\"pid\": %ld, \"args\": [", (long)getpid());
	for (i = 1; i < argc; i++) {
		if (i > 1)
			fputs(", ", f);
		json_str(f, argv[i]);
	}
	fprintf(f, "], \"cwd\": ");
	json_str(f, getcwd(cwd, sizeof(cwd)));
	fprintf(f, ", \"sid\": %ld, \"fds\": {%s}, \"sigign\": \"%s\", \"sigblk\": \"%s\","
	    " \"mode\": ", (long)getsid(0), fds, sigign, sigblk);
	json_str(f, mode);
	fprintf(f, ", \"mark\": ");
	if ((mark = getenv("STUB_MARK")) != NULL)
		json_str(f, mark);
	else
		fputs("null", f);
	fprintf(f, ", \"locked\": %s, \"t\": %.6f}\n", locked ? "true" : "false", (double)ts.tv_sec + ts.tv_nsec / 1e9);
	fclose(f);
}

/* CheckProcess("agent"): 1 when we hold agent.lock now, 0 when another does. */
static int
check_process(void)
{
	char tmp[64], pid[32];
	int fd, total, n;

	mkdir("runtime", 0755);
	fd = open("runtime/agent.lock", O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd == -1 || flock(fd, LOCK_EX | LOCK_NB) == -1)
		return 0;
	total = open("runtime/total-lock.lock", O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
	if (total == -1 || flock(total, LOCK_EX) == -1)
		exit(1);
	snprintf(tmp, sizeof(tmp), "runtime/agent.pid.%ld", (long)getpid());
	n = snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	{
		int w = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (w == -1 || write(w, pid, (size_t)n) != n || close(w) == -1 ||
		    rename(tmp, "runtime/agent.pid") == -1)
			exit(1);
	}
	close(total);
	return 1;	/* fd stays open: the lock is held for life */
}

/* SIGTERM in normal modes: exit 0 at once, like the agent. */
static void
on_term(int signo)
{
	(void)signo;
	_exit(0);
}

/* Start a fake build worker in its own session and record its pid. */
static void
worker_start(void)
{
	FILE *f;
	pid_t pid;
	int fd;

	if ((pid = fork()) == 0) {
		setsid();
		if ((fd = open("/dev/null", O_RDWR)) != -1) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execlp("sleep", "sleep", "1000", (char *)NULL);
		_exit(127);
	}
	if (pid > 0 && (f = fopen("stub_agent.workers", "a")) != NULL) {
		fprintf(f, "{\"pid\": %ld}\n", (long)pid);
		fclose(f);
	}
}

int
main(int argc, char **argv)
{
	char self[PATH_MAX], *slash, *env;
	ssize_t n;
	FILE *f;
	struct timespec ts;
	long ms;
	int code;

	if (argc == 2 && strcmp(argv[1], "version") == 0) {
		puts("v0.0.0-stub");
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "fullVersion") == 0) {
		puts("v0.0.0-stub\nstub\nnow");
		return 0;
	}
	fds_list();
	sigs_read();
	if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) < 0)
		return 1;
	self[n] = '\0';
	if ((slash = strrchr(self, '/')) != NULL)
		*slash = '\0';
	if (chdir(self) == -1)
		return 1;
	if ((f = fopen("stub_agent.mode", "r")) != NULL) {
		if (fgets(mode, sizeof(mode), f) == NULL)
			snprintf(mode, sizeof(mode), "normal");
		fclose(f);
		mode[strcspn(mode, "\r\n")] = '\0';
	} else if ((env = getenv("STUB_AGENT_MODE")) != NULL) {
		snprintf(mode, sizeof(mode), "%s", env);
	}
	if (!check_process()) {
		record_start(argc, argv, 0);
		return 0;
	}
	record_start(argc, argv, 1);

	signal(SIGTERM, strncmp(mode, "stubborn", 8) == 0 ? SIG_IGN : on_term);
	if (sscanf(mode, "exit %d", &code) == 1)
		return code;
	if (sscanf(mode, "run %ld %d", &ms, &code) == 2) {
		ts.tv_sec = ms / 1000;
		ts.tv_nsec = (ms % 1000) * 1000000L;
		while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
			;
		return code;
	}
	if (strncmp(mode, "worker", 6) == 0)
		worker_start();
	for (;;)
		pause();
}
