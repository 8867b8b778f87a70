/* proc.c - process identity checks through /proc. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "proc.h"
#include "util.h"

/* Read /proc/<pid>/stat; returns the state char and fills *start. */
static int
proc_stat(pid_t pid, char *state, unsigned long long *start)
{
	char path[64], *buf, *p;
	int field;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if (fs_read_file(path, 4096, &buf, NULL) == -1)
		return -1;
	/* comm (field 2) may hold spaces and ')': skip to the last ')'. */
	p = strrchr(buf, ')');
	if (p == NULL || p[1] != ' ') {
		free(buf);
		return -1;
	}
	p += 2;
	*state = *p;
	/* p is at field 3; start time is field 22. */
	for (field = 3; field < 22 && p != NULL; field++) {
		p = strchr(p, ' ');
		if (p != NULL)
			p++;
	}
	*start = p != NULL ? strtoull(p, NULL, 10) : 0;
	free(buf);
	return 0;
}

unsigned long long
proc_start_time(pid_t pid)
{
	char state;
	unsigned long long start;

	if (pid <= 0 || proc_stat(pid, &state, &start) == -1)
		return 0;
	return start;
}

int
proc_alive(pid_t pid)
{
	char state;
	unsigned long long start;

	if (pid <= 0 || proc_stat(pid, &state, &start) == -1)
		return 0;
	return state != 'Z' && state != 'X';
}

int
proc_same(pid_t pid, unsigned long long start_time)
{
	char state;
	unsigned long long start;

	if (pid <= 0 || start_time == 0 || proc_stat(pid, &state, &start) == -1)
		return 0;
	return state != 'Z' && state != 'X' && start == start_time;
}

int
proc_exe_is(pid_t pid, const char *path)
{
	char link[64], target[PATH_MAX], want[PATH_MAX];
	ssize_t n;
	size_t wl;

	if (!proc_alive(pid))
		return 0;
	snprintf(link, sizeof(link), "/proc/%ld/exe", (long)pid);
	n = readlink(link, target, sizeof(target) - 1);
	if (n == -1)
		return 0;
	target[n] = '\0';
	if (realpath(path, want) == NULL) {
		/* The file may be gone (moved away during an upgrade). */
		if (strlcpy_(want, path, sizeof(want)) >= sizeof(want))
			return 0;
	}
	if (strcmp(target, want) == 0)
		return 1;
	wl = strlen(want);
	return strncmp(target, want, wl) == 0 && strcmp(target + wl, " (deleted)") == 0;
}

/*
 * Read state, process group, session and start time of pid from
 * /proc/<pid>/stat (fields 3, 5, 6 and 22). 0, or -1 when it is gone.
 */
static int
proc_stat_ids(pid_t pid, char *state, pid_t *pgrp, pid_t *sid,
    unsigned long long *start)
{
	char path[64], *buf, *p, *end;
	int field;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if (fs_read_file(path, 4096, &buf, NULL) == -1)
		return -1;
	if ((p = strrchr(buf, ')')) == NULL || p[1] != ' ') {
		free(buf);
		return -1;
	}
	p += 2;
	*state = *p;
	*pgrp = *sid = 0;
	*start = 0;
	for (field = 3; p != NULL && field <= 22; field++) {
		if (field == 5)
			*pgrp = (pid_t)strtol(p, &end, 10);
		else if (field == 6)
			*sid = (pid_t)strtol(p, &end, 10);
		else if (field == 22)
			*start = strtoull(p, &end, 10);
		if ((p = strchr(p, ' ')) != NULL)
			p++;
	}
	free(buf);
	return 0;
}

int
proc_group_members(pid_t pgid, pid_t sid, unsigned long long since,
    unsigned long long until, pid_t *pids, int max)
{
	DIR *d;
	struct dirent *e;
	int n = 0;

	if ((d = opendir("/proc")) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		char state, *end;
		pid_t pid, g, s;
		unsigned long long start;
		long v = strtol(e->d_name, &end, 10);

		if (*end != '\0' || v <= 0)
			continue;
		pid = (pid_t)v;
		if (proc_stat_ids(pid, &state, &g, &s, &start) == -1 ||
		    state == 'Z' || state == 'X' || start < since ||
		    (until != 0 && start >= until))
			continue;
		if ((pgid > 0 && g == pgid) || (sid > 0 && s == sid)) {
			if (n < max)
				pids[n] = pid;
			n++;
		}
	}
	closedir(d);
	return n;
}

int
proc_exe_same_file(pid_t pid, const char *path)
{
	char link[64];
	struct stat a, b;

	if (!proc_alive(pid))
		return 0;
	snprintf(link, sizeof(link), "/proc/%ld/exe", (long)pid);
	if (stat(link, &a) == -1 || stat(path, &b) == -1)
		return 0;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}
