"""Integration tests of bin/devopsDaemon (issue 3, agent-behaviour §4).

Each test builds a temporary install dir holding a copy of devopsDaemon and
a stub devopsAgent (stub_agent.c) or, where said, the real bin/devopsAgent,
and kills everything that runs from it at teardown. The tests check
behaviour, never speed: restart latency is measured by bench/restart_latency.
"""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

import stub_agent as sa

pytestmark = pytest.mark.skipif(not sa.daemon_bin().exists(),
                                reason="devopsDaemon not built")

FAST = {"DEVOPS_DAEMON_STABLE_MS": "300"}


@pytest.fixture
def inst(tmp_path):
    """A stub install dir; everything started from it is killed afterwards."""
    d = sa.make_install(tmp_path)
    procs = []
    yield d, procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    sa.kill_all(d)


def run_daemon(inst_procs, *args, env=None, cwd=None):
    """Start the daemon of the fixture's install dir and track it."""
    d, procs = inst_procs
    p = sa.start_daemon(d, *args, env=env, cwd=cwd)
    procs.append(p)
    return p


def test_version_and_full_version(inst):
    d, _ = inst
    out = subprocess.run([str(d / "devopsDaemon"), "version"], cwd="/",
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0
    assert len(out.stdout.splitlines()) == 1 and out.stdout.strip()
    out = subprocess.run([str(d / "devopsDaemon"), "fullVersion"], cwd="/",
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0
    assert len(out.stdout.splitlines()) == 3
    assert not (d / "runtime").exists(), "version must not start anything"


def test_starts_agent_detached_in_own_dir(inst, tmp_path):
    d, _ = inst
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    p = run_daemon(inst, env={"STUB_MARK": "inherited"}, cwd=elsewhere)
    agent = sa.wait_new_agent(d)
    assert agent, sa.daemon_log(d)
    assert sa.read_pid(d, "daemon") == p.pid
    assert sa.lock_holders(d / "runtime" / "daemon.lock") == [p.pid]
    # W22: log and runtime in the binary's dir, not in the caller's cwd.
    assert "started agent pid %d" % agent in sa.daemon_log(d)
    assert not list(elsewhere.iterdir())
    rec = sa.starts(d)[-1]
    assert rec["pid"] == agent
    assert rec["args"] == []
    assert rec["cwd"] == str(d)
    assert rec["sid"] == agent, "agent must lead its own session"
    assert rec["mark"] == "inherited", "environment must be inherited"
    assert rec["fds"] == {"0": "/dev/null", "1": "/dev/null", "2": "/dev/null"}
    assert rec["locked"]


def test_agent_gets_default_signal_dispositions(inst):
    d, procs = inst
    # As `nohup devopsDaemon &` from a script: SIGHUP, SIGINT, SIGQUIT ignored.
    def ignore():
        for s in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE):
            signal.signal(s, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    p = subprocess.Popen([str(d / "devopsDaemon")], cwd=str(d.parent),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, preexec_fn=ignore)
    procs.append(p)
    assert sa.wait_new_agent(d)
    rec = sa.starts(d)[-1]
    assert int(rec["sigign"], 16) == 0, rec["sigign"]
    assert int(rec["sigblk"], 16) == 0, rec["sigblk"]


def test_agent_is_started_without_arguments(inst):
    # A HEAD agent takes any argument as a subcommand and exits at once.
    d, _ = inst
    run_daemon(inst)
    pid = sa.wait_new_agent(d)
    assert pid
    assert sa.starts(d)[-1]["args"] == []
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        assert f.read().split(b"\0")[:-1] == [str(d / "devopsAgent").encode()]


@pytest.mark.parametrize("how", ["argument", "file"])
def test_debug_is_not_forwarded_to_the_agent(inst, how):
    # Debug comes from WORKDIR/.debug, which the agent reads itself; the
    # daemon's own log goes to debug level with either switch.
    d, _ = inst
    if how == "file":
        (d / ".debug").write_text("1")
        run_daemon(inst)
    else:
        run_daemon(inst, "debug")
    assert sa.wait_new_agent(d)
    assert sa.starts(d)[-1]["args"] == []
    assert sa.wait_for(lambda: re.search(r"started: pid \d+, .*, debug", sa.daemon_log(d)))


def test_kill9_brings_new_agent_holding_lock(inst):
    d, _ = inst
    p = run_daemon(inst, env=FAST)
    old = sa.wait_new_agent(d)
    assert old
    for _ in range(3):
        time.sleep(0.4)  # past the stable threshold: no backoff
        os.kill(old, signal.SIGKILL)
        new = sa.wait_new_agent(d, old)
        assert new and new != old, sa.daemon_log(d)
        assert sa.pid_exe(new) == str(d / "devopsAgent")
        old = new
    assert p.poll() is None
    assert "signal 9" in sa.daemon_log(d)
    # W14: no agent the daemon started ever found agent.lock taken.
    assert all(r["locked"] for r in sa.starts(d)), sa.starts(d)


@pytest.mark.skipif(sa.real_agent_bin() is None, reason="bin/devopsAgent not built yet")
def test_kill9_brings_new_real_agent(tmp_path):
    d = sa.make_install(tmp_path, agent="real")
    p = sa.start_daemon(d, env=FAST)
    try:
        old = sa.wait_new_agent(d, timeout=20)
        assert old, sa.daemon_log(d)
        time.sleep(0.4)
        os.kill(old, signal.SIGKILL)
        new = sa.wait_new_agent(d, old, timeout=20)
        assert new and new != old, sa.daemon_log(d)
        assert sa.pid_exe(new) == str(d / "devopsAgent")
        assert p.poll() is None
    finally:
        sa.kill_all(d)
        p.wait(5)


def restarts_in(log):
    """The 'restarting in N ms' delays logged, in order."""
    return [int(m) for m in re.findall(r"restarting in (\d+) ms", log)]


def test_agent_exiting_at_once_backs_off(inst):
    d, _ = inst
    sa.set_mode(d, "exit 3")
    run_daemon(inst)  # default stable threshold (10 s)
    assert sa.wait_for(lambda: len(sa.starts(d)) >= 3, timeout=10), sa.daemon_log(d)
    time.sleep(0.5)
    # Without backoff a failing agent restarts hundreds of times a second.
    n = len(sa.starts(d))
    assert n <= 4, "%d starts in about 3.5 s" % n
    log = sa.daemon_log(d)
    assert restarts_in(log)[:2] == [1000, 2000], log
    assert "exit code 3" in log


@pytest.mark.skipif(sa.real_agent_bin() is None, reason="bin/devopsAgent not built yet")
def test_real_agent_with_broken_properties_backs_off(tmp_path):
    d = sa.make_install(tmp_path, agent="real")
    (d / ".agent.properties").write_text("devops.project.id=p\n")  # no agent id
    p = sa.start_daemon(d)
    try:
        assert sa.wait_for(lambda: len(restarts_in(sa.daemon_log(d))) >= 2, timeout=10), \
            sa.daemon_log(d)
        log = sa.daemon_log(d)
        assert restarts_in(log)[:2] == [1000, 2000], log
        assert "exit code 1" in log
        assert p.poll() is None
    finally:
        sa.kill_all(d)
        p.wait(5)


def test_backoff_resets_after_stable_run(inst):
    d, _ = inst
    sa.set_mode(d, "exit 2")
    run_daemon(inst, env=FAST)
    assert sa.wait_for(lambda: restarts_in(sa.daemon_log(d)) == [1000, 2000], timeout=10)
    sa.set_mode(d, "run 600 0")  # the next run is stable (>= 300 ms)
    assert sa.wait_for(lambda: "backoff reset" in sa.daemon_log(d), timeout=10), \
        sa.daemon_log(d)
    sa.set_mode(d, "exit 2")
    # After the stable run: restart at once, then a fast death backs off 1 s.
    assert sa.wait_for(lambda: restarts_in(sa.daemon_log(d))[2:] == [1000],
                       timeout=10), sa.daemon_log(d)
    assert "restarting now" in sa.daemon_log(d)


def test_exit_88_stops_daemon(inst):
    d, _ = inst
    sa.set_mode(d, "exit 88")
    p = run_daemon(inst)
    assert p.wait(timeout=10) == 88
    assert len(sa.starts(d)) == 1
    assert "daemon exits 88" in sa.daemon_log(d)


def test_second_daemon_exits_0_without_disturbing(inst):
    d, _ = inst
    first = run_daemon(inst)
    agent = sa.wait_new_agent(d)
    assert agent
    second = run_daemon(inst)
    assert second.wait(timeout=10) == 0
    assert first.poll() is None
    assert sa.read_pid(d, "daemon") == first.pid
    assert sa.agent_holder(d) == agent
    assert len(sa.starts(d)) == 1


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_sigint_leave_agent_running(inst, signo):
    d, _ = inst
    p = run_daemon(inst)
    agent = sa.wait_new_agent(d)
    assert agent
    p.send_signal(signo)
    assert p.wait(timeout=10) == 0
    time.sleep(0.2)
    assert sa.pid_alive(agent)
    assert sa.agent_holder(d) == agent
    assert "keeps running" in sa.daemon_log(d)


def test_new_daemon_adopts_running_agent_and_sees_its_death(inst):
    d, _ = inst
    p = run_daemon(inst)
    agent = sa.wait_new_agent(d)
    p.terminate()
    assert p.wait(timeout=10) == 0
    p2 = run_daemon(inst, env=FAST)
    assert sa.wait_for(lambda: "already running" in sa.daemon_log(d), timeout=10)
    assert len(sa.starts(d)) == 1, "must not start a second agent"
    os.kill(agent, signal.SIGKILL)  # not its child: seen through the lock
    new = sa.wait_new_agent(d, agent)
    assert new, sa.daemon_log(d)
    assert p2.poll() is None
    assert "did not start has released" in sa.daemon_log(d)


def test_total_lock_holds_back_restart(inst):
    import fcntl
    d, _ = inst
    run_daemon(inst, env=FAST)
    agent = sa.wait_new_agent(d)
    time.sleep(0.4)
    with open(d / "runtime" / "total-lock.lock", "rb") as total:
        fcntl.flock(total, fcntl.LOCK_EX)  # as the upgrader does
        os.kill(agent, signal.SIGKILL)
        assert sa.wait_for(lambda: "an upgrade is running" in sa.daemon_log(d), timeout=10)
        time.sleep(0.5)
        assert len(sa.starts(d)) == 1, "started an agent under total-lock"
    new = sa.wait_new_agent(d, agent)
    assert new, sa.daemon_log(d)


def test_sighup_reopens_log(inst):
    d, _ = inst
    p = run_daemon(inst)
    assert sa.wait_new_agent(d)
    log = d / "logs" / "devopsDaemon.log"
    os.rename(log, d / "logs" / "rotated.log")
    p.send_signal(signal.SIGHUP)
    assert sa.wait_for(lambda: log.exists() and "reopened" in log.read_text(), timeout=10)


def test_stop_all_stops_both_and_spares_workers(inst):
    d, _ = inst
    sa.set_mode(d, "worker")
    p = run_daemon(inst)
    agent = sa.wait_new_agent(d)
    assert sa.wait_for(lambda: sa.workers(d), timeout=10)
    worker = sa.workers(d)[0]
    out = subprocess.run([str(d / "devopsDaemon"), "stop-all"], cwd="/",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert p.wait(timeout=10) == 0
    assert sa.wait_for(lambda: not sa.pid_alive(agent), timeout=10)
    assert sa.pid_alive(worker), "a build worker was killed"
    os.kill(worker, signal.SIGKILL)


def test_stop_all_never_signals_stale_pids(inst):
    d, _ = inst
    sleeps = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    try:
        (d / "runtime").mkdir()
        (d / "runtime" / "daemon.pid").write_text(str(sleeps[0].pid))
        (d / "runtime" / "agent.pid").write_text(str(sleeps[1].pid))
        out = subprocess.run([str(d / "devopsDaemon"), "stop-all"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0
        assert "not signalled" in out.stderr
        assert all(s.poll() is None for s in sleeps)
    finally:
        for s in sleeps:
            s.kill()
            s.wait()


def test_stop_all_kills_agent_ignoring_sigterm(inst):
    d, _ = inst
    sa.set_mode(d, "stubborn")
    run_daemon(inst)
    agent = sa.wait_new_agent(d)
    out = subprocess.run([str(d / "devopsDaemon"), "stop-all"],
                         env=dict(os.environ, DEVOPS_STOP_GRACE_SEC="1"),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "SIGKILL" in out.stderr
    assert not sa.pid_alive(agent)


def test_missing_agent_binary_backs_off(inst):
    d, _ = inst
    os.unlink(d / "devopsAgent")
    p = run_daemon(inst)
    assert sa.wait_for(lambda: "retrying in 1000 ms" in sa.daemon_log(d), timeout=10)
    time.sleep(1.5)
    assert p.poll() is None
    assert "retrying in 2000 ms" in sa.daemon_log(d)
