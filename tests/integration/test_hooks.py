"""Job hooks: hooks/pre-build before the worker, hooks/post-build after it and
before the finish report, each with the build's environment and a timeout,
and nothing of them left running afterwards (the build's cgroup, else its
process group). The real agent against the fake BK-CI server.
"""

import os
import stat

import pytest

from conftest import Agent, wait_until, write_properties


def write_hook(install_dir, name, body):
    hooks = install_dir / "hooks"
    hooks.mkdir(exist_ok=True)
    path = hooks / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def alive_with(marker):
    """Pids of live processes whose command line holds marker."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{p}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z":
            pids.append(int(p))
    return pids


def env_file(path):
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.mark.parametrize("cgroup", ["auto", "off"])
def test_hooks_run_around_the_worker(install_dir, fakeci, tmp_path, cgroup):
    out = tmp_path / "out"
    out.mkdir()
    # Each hook leaves a process behind: the agent must end it.
    write_hook(install_dir, "pre-build", f"""
env > {out}/pre.env
sleep 3171 &
echo pre-build ok
""")
    write_hook(install_dir, "post-build", f"""
env > {out}/post.env
sleep 3172 &
""")
    env = {"DEVOPS_AGENT_CGROUP": "off"} if cgroup == "off" else {}
    agent = Agent(install_dir, env_extra=env, fast=True).start()
    build = fakeci.queue_build(script=f'test -f {out}/pre.env && test ! -f {out}/post.env',
                               workspace=str(tmp_path / "ws"))
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-3000:]
    report = fakeci.finished[0]
    assert report["success"] is True, report
    # post-build ran before the report went out.
    post = env_file(out / "post.env")
    pre = env_file(out / "pre.env")
    for env in (pre, post):
        assert env["BUILD_ID"] == build["buildId"]
        assert env["VM_SEQ_ID"] == build["vmSeqId"]
        assert env["PROJECT_ID"] == build["projectId"]
        assert env["WORKSPACE"] == str(tmp_path / "ws")
    assert pre["DEVOPS_AGENT_HOOK"] == "pre-build"
    assert post["DEVOPS_AGENT_HOOK"] == "post-build"
    assert post["BUILD_OUTCOME"] == "success"
    assert "BUILD_OUTCOME" not in pre
    assert not alive_with("sleep 3171") and not alive_with("sleep 3172")
    log = agent.read_log()
    assert "hooks/pre-build succeeded: pre-build ok" in log
    assert "hooks/post-build succeeded" in log


def test_failing_pre_build_fails_the_build(install_dir, fakeci, tmp_path):
    ran = tmp_path / "worker-ran"
    write_hook(install_dir, "pre-build", 'echo "no GPU on this host" >&2\nexit 3\n')
    write_hook(install_dir, "post-build", f"touch {tmp_path}/post-ran\n")
    agent = Agent(install_dir, fast=True).start()
    fakeci.queue_build(script=f"touch {ran}")
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-3000:]
    report = fakeci.finished[0]
    assert report["success"] is False
    assert "hooks/pre-build" in report["message"] and "exit code 3" in report["message"]
    assert "no GPU on this host" in report["message"]
    assert not ran.exists()                       # the worker never started
    assert not (tmp_path / "post-ran").exists()   # no worker, no post-build


def test_hook_timeout_kills_everything(install_dir, fakeci, tmp_path):
    write_properties(install_dir, fakeci, {"devops.agent.hooks.timeout.sec": "1"})
    write_hook(install_dir, "pre-build", "sleep 3173 &\nexec sleep 3174\n")
    agent = Agent(install_dir, fast=True).start()
    fakeci.queue_build()
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-3000:]
    report = fakeci.finished[0]
    assert report["success"] is False
    assert "did not end within 1 s" in report["message"]
    assert wait_until(lambda: not alive_with("sleep 3173") and not alive_with("sleep 3174"),
                      timeout=5)
    # A failing post-build hook changes nothing of the outcome.
    write_hook(install_dir, "pre-build", "exit 0\n")
    write_hook(install_dir, "post-build", "echo cleanup failed; exit 1\n")
    fakeci.queue_build()
    assert fakeci.wait_for("finished", 2, timeout=30), agent.read_log()[-3000:]
    assert fakeci.finished[1]["success"] is True
    assert "hooks/post-build exit code 1: cleanup failed" in agent.read_log()
