/*
 * upgrade.c - `upgrader -action=upgrade`: replace devopsAgent/devopsDaemon
 * from tmp/, health-check the new agent, roll back when it fails, and send
 * exactly one FinishUpgrade (agent-behaviour §7.5, W7; docs/upgrader.md).
 *
 *   [holding total-lock: no daemon can start an agent meanwhile]
 *   1. compare tmp/<bin> with <bin> (md5); a changed tmp/<bin> must match
 *      its download record tmp/<bin>.md5 (http.h), else nothing is touched
 *      and the attempt is reported failed
 *   2. stop the daemon (if it changes), then the agent: verified pid,
 *      SIGTERM, wait until its lock is free
 *   3. swap by rename: <bin> -> <bin>.bak (hard link), tmp/<bin> -> <bin>
 *   4. start the daemon if it was stopped or none runs
 *   [release total-lock: the daemon starts the new agent]
 *   5. health: the new agent takes agent.lock within START_SEC and keeps it
 *      for HEALTH_SEC
 *   6. failure: retake total-lock, stop the new processes, copy the .bak
 *      files back, restart, report false; success: report true
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "fsutil.h"
#include "http.h"
#include "json.h"
#include "lock.h"
#include "log.h"
#include "md5.h"
#include "proc.h"
#include "upgrader.h"
#include "util.h"

/* One binary being replaced. */
struct swap {
	const char	*bin;		/* devopsAgent */
	const char	*src;		/* tmp/devopsAgent */
	int		 changed;	/* differs from the installed file */
	int		 swapped;	/* new file in place; .bak holds the old */
};

/* Seconds from env name (1..3600), else def; logged when ignored. */
static int
env_sec(const char *name, int def)
{
	const char *v = getenv(name);
	long long n;

	if (v == NULL || *v == '\0')
		return def;
	if (str_to_ll(v, &n) == -1 || n < 1 || n > 3600) {
		log_warnx("ignoring %s=%s (want 1..3600 seconds)", name, v);
		return def;
	}
	return (int)n;
}

/* 1 when src exists and its content differs from dst (missing dst too). */
static int
differs(const char *src, const char *dst)
{
	char a[MD5_HEX_LEN], b[MD5_HEX_LEN];

	if (md5_file(src, a) == -1)
		return 0;		/* nothing to install */
	if (md5_file(dst, b) == -1)
		return 1;
	return strcmp(a, b) != 0;
}

/*
 * Keep the installed file as <bin>.bak (a hard link: same inode, instant;
 * a copy when links are not possible), then rename a copy of src over bin.
 * Readers see the old or the new binary, never a torn one.
 */
static int
swap_in(struct swap *s)
{
	char *bak = xasprintf("%s" BAK_SUFFIX, s->bin);
	char *tmp = xasprintf("%s" BAK_SUFFIX ".new", s->bin);
	int rc = -1;

	(void)unlink(tmp);
	if (fs_exists(s->bin)) {
		if (link(s->bin, tmp) == -1 && fs_copy_file(s->bin, tmp, 0755) == -1) {
			log_warn("cannot back up %s", s->bin);
			goto out;
		}
		if (rename(tmp, bak) == -1) {
			log_warn("cannot rename %s to %s", tmp, bak);
			(void)unlink(tmp);
			goto out;
		}
	}
	if (fs_copy_file(s->src, s->bin, 0755) == -1) {
		log_warn("cannot install %s as %s", s->src, s->bin);
		goto out;
	}
	s->swapped = 1;
	log_info("installed %s (the old one is %s)", s->bin, bak);
	rc = 0;
out:
	free(bak);
	free(tmp);
	return rc;
}

/* Put <bin>.bak back in place of bin (by rename of a copy; .bak stays). */
static int
swap_back(struct swap *s)
{
	char *bak = xasprintf("%s" BAK_SUFFIX, s->bin);
	int rc = 0;

	if (!s->swapped) {
		free(bak);
		return 0;
	}
	if (fs_copy_file(bak, s->bin, 0755) == -1) {
		log_warn("ROLLBACK FAILED: cannot restore %s from %s", s->bin, bak);
		rc = -1;
	} else {
		log_info("restored %s from %s", s->bin, bak);
		s->swapped = 0;
	}
	free(bak);
	return rc;
}

/* One DELETE upgrade?success= call with the identity of .agent.properties. */
int
upgrade_report(const char *workdir, int success)
{
	struct config cfg;
	struct http_result res;
	char err[256], *path;
	int rc;

	if (config_load(&cfg, CONFIG_FILE, workdir, err, sizeof(err)) == -1) {
		log_error("cannot send FinishUpgrade(%s): %s: %s",
		    success ? "true" : "false", CONFIG_FILE, err);
		return -1;
	}
	struct http_settings hs = {
		.project_id = cfg.project_id, .agent_id = cfg.agent_id,
		.secret_key = cfg.secret_key, .gateway = cfg.gateway,
		.timeout_ms = cfg.request_timeout_sec * 1000, .ca_file = ".cert",
		.user_agent = "upgrader/" AGENT_VERSION,
	};
	if (http_init(&hs) == -1) {
		log_error("cannot initialise libcurl: FinishUpgrade not sent");
		config_free(&cfg);
		return -1;
	}
	path = xasprintf("%s?success=%s", EP_UPGRADE_END, success ? "true" : "false");
	memset(&res, 0, sizeof(res));
	/* One call, no retry: a lost answer must not become a second report. */
	rc = http_json_sync("DELETE", path, NULL, &res);
	if (rc == 0)
		log_info("FinishUpgrade(success=%s) sent: HTTP %ld",
		    success ? "true" : "false", res.code);
	else
		log_warnx("FinishUpgrade(success=%s) failed: %s",
		    success ? "true" : "false", res.error);
	http_result_free(&res);
	free(path);
	http_shutdown();
	config_free(&cfg);
	return rc;
}

/* Release total-lock (the daemon may start the agent from now on). */
static void
total_release(int *fd)
{
	if (*fd >= 0) {
		lock_release(*fd);
		log_info("released %s", TOTAL_LOCK);
	}
	*fd = -1;
}

/*
 * Undo the swap: holding total-lock again, stop the new agent, put the .bak
 * files back and make sure a daemon runs; the daemon then starts the old
 * agent once the caller releases total-lock. A daemon that was re-executed
 * in place (dpid) is re-executed again into the restored binary, so it
 * stays under its service manager; otherwise it is stopped and started.
 */
static void
rollback(const char *workdir, struct swap *sw, size_t n, int *total,
    pid_t dpid, unsigned long long dstart)
{
	int daemon_stopped = 0, daemon_swapped = sw[1].swapped;
	size_t i;

	log_warnx("rolling back to the previous binaries");
	if (*total < 0 && (*total = lock_wait(TOTAL_LOCK, RELOCK_MS)) == -1)
		log_warn("cannot retake %s; rolling back without it", TOTAL_LOCK);
	if (daemon_swapped && dpid == -1 &&
	    instance_stop(&INST_DAEMON, &daemon_stopped) == -1)
		log_error("the new daemon does not stop; restoring anyway");
	if (instance_stop(&INST_AGENT, NULL) == -1)
		log_error("the new agent does not stop; restoring anyway");
	for (i = 0; i < n; i++)
		(void)swap_back(&sw[i]);
	if (daemon_swapped && dpid != -1 && daemon_reexec(dpid, dstart, REEXEC_MS) == 0)
		return;
	if (instance_running(&INST_DAEMON) != 1)
		(void)daemon_start(workdir);
}

/*
 * End a failed attempt: report first, then release total-lock, so the
 * report is on the server before any (old) agent can start a new attempt.
 */
static int
fail(const char *workdir, int *total)
{
	(void)upgrade_report(workdir, 0);
	total_release(total);
	return 1;
}

/*
 * 1 when src carries the agent's download record (src HTTP_VERIFIED_SUFFIX,
 * written only after X-Checksum-Md5 matched) and its content still has
 * that md5; else logged and 0: a file nobody verified is never installed.
 */
static int
verified(const char *src)
{
	char *rec = xasprintf("%s" HTTP_VERIFIED_SUFFIX, src), *text = NULL;
	char hex[MD5_HEX_LEN];
	int ok = 0;

	if (fs_read_file(rec, 64, &text, NULL) == -1)
		log_error("%s: no download record %s (%s): the file was never "
		    "verified against the server's X-Checksum-Md5; refusing it",
		    src, rec, strerror(errno));
	else if (md5_file(src, hex) == -1)
		log_error("%s: cannot compute its md5: %s", src, strerror(errno));
	else if (strcmp(str_trim(text), hex) != 0)
		log_error("%s: md5 %s differs from the verified download (%s); "
		    "refusing it", src, hex, str_trim(text));
	else
		ok = 1;
	free(text);
	free(rec);
	return ok;
}

/* The whole -action=upgrade flow of the header comment, steps 1-6. */
int
upgrade_run(const char *workdir, int total_fd)
{
	struct swap sw[2] = {
		{ AGENT_BIN, AGENT_NEW, 0, 0 },
		{ DAEMON_BIN, DAEMON_NEW, 0, 0 },
	};
	int total = total_fd, health = env_sec(HEALTH_ENV, HEALTH_SEC);
	int start_sec = env_sec(START_ENV, START_SEC), daemon_stopped = 0;
	unsigned long long old_start = 0, start = 0, dstart = 0;
	pid_t old_pid, pid, dpid = -1;
	long p;

	sw[0].changed = differs(AGENT_NEW, AGENT_BIN);
	sw[1].changed = differs(DAEMON_NEW, DAEMON_BIN);
	log_info("upgrade: agent binary %s, daemon binary %s",
	    sw[0].changed ? "changes" : "unchanged",
	    sw[1].changed ? "changes" : "unchanged");
	if (!sw[0].changed && !sw[1].changed) {
		if (instance_running(&INST_DAEMON) != 1)
			(void)daemon_start(workdir);
		(void)fail(workdir, &total);
		return 0;
	}
	if ((sw[0].changed && !verified(AGENT_NEW)) ||
	    (sw[1].changed && !verified(DAEMON_NEW))) {
		if (instance_running(&INST_DAEMON) != 1)
			(void)daemon_start(workdir);
		return fail(workdir, &total);
	}
	p = pidfile_read("agent");
	old_pid = p > 0 ? (pid_t)p : -1;
	old_start = old_pid > 0 ? proc_start_time(old_pid) : 0;

	/*
	 * 2. Stop the agent. A changed daemon that runs is kept, to be
	 * re-executed in place after the swap (its service manager keeps it);
	 * it cannot restart the agent meanwhile: we hold total-lock. One that
	 * cannot be verified is stopped, the way GoAgent replaces it.
	 */
	if (sw[1].changed)
		dpid = daemon_pid(&dstart);
	if ((sw[1].changed && dpid == -1 &&
	    instance_stop(&INST_DAEMON, &daemon_stopped) == -1) ||
	    instance_stop(&INST_AGENT, NULL) == -1) {
		if (instance_running(&INST_DAEMON) != 1)
			(void)daemon_start(workdir);
		return fail(workdir, &total);
	}

	/* 3. Swap by rename, keeping .bak. */
	if ((sw[1].changed && swap_in(&sw[1]) == -1) ||
	    (sw[0].changed && swap_in(&sw[0]) == -1)) {
		rollback(workdir, sw, 2, &total, dpid, dstart);
		return fail(workdir, &total);
	}

	/* 4. A daemon must run to start the new agent: the re-executed one
	 * (no lock probe: it is taking daemon.lock now), or a started one. */
	if (dpid != -1 && daemon_reexec(dpid, dstart, REEXEC_MS) == -1) {
		rollback(workdir, sw, 2, &total, dpid, dstart);
		return fail(workdir, &total);
	}
	if (dpid == -1 && (daemon_stopped || instance_running(&INST_DAEMON) != 1) &&
	    daemon_start(workdir) == -1) {
		rollback(workdir, sw, 2, &total, dpid, dstart);
		return fail(workdir, &total);
	}
	total_release(&total);

	/* 5. Health check. */
	log_info("waiting up to %d s for the new agent, then %d s of health",
	    start_sec, health);
	pid = agent_wait_up(old_pid, old_start, start_sec * 1000, &start);
	if (pid == -1) {
		log_error("no new agent took runtime/agent.lock within %d s",
		    start_sec);
	} else if (!agent_stays_up(pid, start, (int64_t)health * 1000)) {
		log_error("the new agent (pid %ld) did not stay up for %d s",
		    (long)pid, health);
		pid = -1;
	}
	if (pid != -1) {
		log_info("upgrade done: the new agent (pid %ld) is healthy", (long)pid);
		(void)upgrade_report(workdir, 1);
		return 0;
	}

	/* 6. Roll back, report, then see the old agent come back (log only). */
	rollback(workdir, sw, 2, &total, dpid, dstart);
	(void)fail(workdir, &total);
	pid = agent_wait_up(-1, 0, start_sec * 1000, &start);
	if (pid == -1)
		log_error("after the rollback no agent runs yet (the daemon backs"
		    " off after crashes; it keeps trying)");
	else
		log_info("after the rollback the previous agent runs: pid %ld",
		    (long)pid);
	return 1;
}
