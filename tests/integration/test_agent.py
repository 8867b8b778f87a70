"""devopsAgent against the fake BK-CI server: startup, heartbeats, builds,
the parallel cap, settings from the heartbeat, and server faults (issue 2).

Every test starts the real binary in a temporary install directory with
DEVOPS_AGENT_TEST_FAST=1 (short loop periods) and checks what reached the
server, which validates every body against the server's models.
"""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import (Agent, assert_no_violations, heartbeats, read_properties,
                      wait_heartbeats, wait_until, write_properties)


def start_agent(install_dir, **kw):
    return Agent(install_dir, fast=True, **kw).start()


def finished_for(fakeci, build_id):
    return [f for f in fakeci.finished if f["buildId"] == build_id]


def test_version_commands(install_dir):
    out = subprocess.run(["./devopsAgent", "version"], cwd=install_dir,
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0
    assert re.fullmatch(r"v\S+\n", out.stdout)
    full = subprocess.run(["./devopsAgent", "fullVersion"], cwd=install_dir,
                          capture_output=True, text=True, timeout=10)
    assert full.returncode == 0
    assert full.stdout.splitlines()[0] == out.stdout.strip()
    assert len(full.stdout.splitlines()) == 3


def test_startup_and_two_heartbeats(install_dir, fakeci, poll_mode):
    agent = start_agent(install_dir)
    assert fakeci.wait_for("requests", 1, timeout=10, path_contains="thirdPartyAgent/startup"
                           ) and fakeci.wait_until(lambda: fakeci.get_state()["lastStartup"])
    startup = fakeci.get_state()["lastStartup"]
    assert startup["detectOS"] == "linux"
    assert startup["version"] == "v1.15.2"          # probed through jdk17/bin/java
    assert startup["masterVersion"].startswith("v")
    assert startup["hostIp"] and startup["hostname"] is not None

    assert len(wait_heartbeats(fakeci, 2)) >= 2
    hb = fakeci.get_state()["lastHeartbeat"]
    assert hb["parallelTaskCount"] == 4
    assert hb["agentInstallPath"] == os.path.realpath(install_dir)
    assert hb["taskList"] is None                    # no build runs
    assert hb["props"]["arch"] in ("amd64", "arm64", "386", "mips64")
    assert len(hb["props"]["jdkVersion"]) == 3
    assert hb["props"]["jdkVersion"][0].startswith("openjdk 17")    # jdk17 --version
    assert hb["errorExitData"] is None
    assert hb["dockerTaskList"] == []
    os_version = json.loads(hb["props"]["osVersion"])  # a JSON text, as HEAD sends it
    assert os_version["KernelVersion"] == os.uname().release
    assert os_version["Architecture"] == os.uname().machine
    assert agent.running
    # The mode the server allows, said in the log.
    agent.wait_for_log(f"poll mode: {poll_mode} ")
    if poll_mode == "ask":
        assert not fakeci.requests(path_contains="newHeartbeat")
        assert not fakeci.requests(path_contains="thirdPartyAgent/status")
    assert_no_violations(fakeci)


def test_build_end_to_end(install_dir, fakeci, poll_mode):
    agent = start_agent(install_dir)
    build = fakeci.queue_build(script='echo "hello from $DEVOPS_BUILD_ID"; pwd')
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-3000:]
    report = finished_for(fakeci, build["buildId"])[0]
    assert report["success"] is True
    assert report["error"] is None
    assert report["vmSeqId"] == build["vmSeqId"]
    assert report["pipelineId"] == build["pipelineId"]
    assert report["containerHashId"] == build["containerHashId"]
    assert any(f"hello from {build['buildId']}" in m
               for m in fakeci.log_messages(build["buildId"]))
    # The worker ran with the environment of agent-behaviour §6.6.
    end = fakeci.worker_ends[0]
    assert end["env"]["DEVOPS_PROJECT_ID"] == build["projectId"]
    assert end["env"]["DEVOPS_GATEWAY"] == "http://" + fakeci.gateway
    assert end["env"]["BK_CI_LOCALE_LANGUAGE"] == "en_US"
    assert "DEVOPS_AGENT_TEST_FAST" not in end["env"]
    # Per-build files are gone and the journal entry was removed after the ack.
    key = f"{build['buildId']}_{build['vmSeqId']}"
    assert wait_until(lambda: not os.listdir(install_dir / "runtime" / "builds"), 5)
    assert not list(install_dir.glob(f"devops_agent_*{key}.sh"))
    assert not (install_dir / "build_tmp" / f"{key}_build_msg.log").exists()
    time.sleep(1)
    assert len(fakeci.finished) == 1                 # reported exactly once
    assert_no_violations(fakeci)


def test_failing_build_reports_the_message(install_dir, fakeci):
    start_agent(install_dir)
    build = fakeci.queue_build(script="echo about to fail; exit 7")
    assert fakeci.wait_for("finished", 1, timeout=30)
    report = finished_for(fakeci, build["buildId"])[0]
    assert report["success"] is False
    assert "exit code 7" in report["message"]
    assert report["error"] == {"errorType": "USER", "errorMessage": report["message"],
                               "errorCode": 2128040}
    assert_no_violations(fakeci)


def test_nonzero_exit_without_message_is_a_failure(install_dir, fakeci):
    """W12: GoAgent reports success when the worker exits non-zero silently."""
    start_agent(install_dir)
    build = fakeci.queue_build(script="#!fake exit=3")
    assert fakeci.wait_for("finished", 1, timeout=30)
    report = finished_for(fakeci, build["buildId"])[0]
    assert report["success"] is False
    assert "exit code 3" in report["message"]
    assert report["error"]["errorCode"] == 2128040


def test_parallel_cap_is_respected(install_dir, fakeci, poll_mode):
    write_properties(install_dir, fakeci, {"devops.parallel.task.count": "2"})
    fakeci.set_state(parallelTaskCount=2)
    agent = start_agent(install_dir)
    builds = [fakeci.queue_build(script="sleep 2") for _ in range(5)]
    max_running = 0
    deadline = time.monotonic() + 60
    while len(fakeci.finished) < 5 and time.monotonic() < deadline:
        running = len(fakeci.builds()["running"])
        max_running = max(max_running, running)
        assert running <= 2, f"{running} builds running with a cap of 2"
        time.sleep(0.05)
    assert len(fakeci.finished) == 5, agent.read_log()[-3000:]
    assert max_running == 2
    lists = [hb["taskList"] for hb in heartbeats(fakeci)]
    assert max(len(t or []) for t in lists) == 2
    assert {f["buildId"] for f in fakeci.finished} == {b["buildId"] for b in builds}
    assert_no_violations(fakeci)


def test_heartbeat_settings_are_applied_and_persisted(install_dir, fakeci):
    props_path = install_dir / ".agent.properties"
    fakeci.set_state(parallelTaskCount=3, envs={"TOOLS_HOME": "/opt/tools"},
                     props={"keepLogsHours": 72}, language="zh_CN")
    start_agent(install_dir)
    assert wait_until(lambda: read_properties(props_path).get(
        "devops.parallel.task.count") == "3", 15)
    text = props_path.read_text()
    props = read_properties(props_path)
    assert props["devops.agent.logs.keep.hours"] == "72"
    assert props["devops.language"] == "zh_CN"
    assert text.startswith("#\n# BK-CI third-party build agent configuration.")
    assert "devops.agent.collectorOn=false" in text       # case and key kept (W5)
    build = fakeci.queue_build(script='echo "tools=$TOOLS_HOME"')
    assert fakeci.wait_for("finished", 1, timeout=30)
    assert any("tools=/opt/tools" in m for m in fakeci.log_messages(build["buildId"]))


def test_zero_or_missing_count_does_not_mean_unlimited(install_dir, fakeci):
    """W9: GoAgent adopts 0 (= unlimited) from a heartbeat."""
    fakeci.set_state(parallelTaskCount=0)
    agent = start_agent(install_dir)
    agent.wait_for_log(r"ignoring parallelTaskCount 0", timeout=15)
    assert read_properties(install_dir / ".agent.properties")[
        "devops.parallel.task.count"] == "4"


def test_capitalised_heartbeat_keys(install_dir, fakeci):
    fakeci.set_state(pascalCaseKeys=True, parallelTaskCount=2)
    start_agent(install_dir)
    assert wait_until(lambda: read_properties(install_dir / ".agent.properties").get(
        "devops.parallel.task.count") == "2", 15)


def test_no_claim_unless_import_ok(install_dir, fakeci):
    """Legacy mode: the agent asks GET status before each pull. (In ask mode
    the server itself hands out no build part unless the agent is IMPORT_OK.)"""
    fakeci.set_state(askSupported=False, status="IMPORT_EXCEPTION")
    agent = start_agent(install_dir)
    fakeci.queue_build(script="true")
    assert fakeci.wait_for("requests", 3, timeout=10, path_contains="thirdPartyAgent/status")
    assert not fakeci.requests(path_contains="startup?buildType")
    fakeci.set_state(status="IMPORT_OK")
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-2000:]


@pytest.mark.parametrize("mode", ["500", "html", "garbage", "truncated", "wrongtype", "close"])
def test_agent_survives_server_faults(install_dir, fakeci, mode):
    for path in ("newHeartbeat", "thirdPartyAgent/status", "startup?buildType",
                 "workerBuildFinish", "thirdPartyAgent/startup", "thirdPartyAgent/ask"):
        fakeci.add_fault(path, mode, count=2)
    agent = start_agent(install_dir)
    build = fakeci.queue_build(script="echo survived")
    assert fakeci.wait_for("finished", 1, timeout=45), agent.read_log()[-3000:]
    assert agent.running
    # The finish report was retried until acknowledged, and only then deleted.
    acked = [f for f in finished_for(fakeci, build["buildId"])]
    assert len(acked) >= 1
    assert acked[-1]["success"] is True
    assert wait_until(lambda: len(heartbeats(fakeci)) >= 4, 15)
    assert agent.running


def test_finish_report_retried_until_acknowledged(install_dir, fakeci):
    """W1: one failed report must neither crash the agent nor lose the build."""
    fakeci.add_fault("workerBuildFinish", "close", count=3)
    agent = start_agent(install_dir)
    build = fakeci.queue_build(script="true")
    assert wait_until(lambda: len([r for r in fakeci.requests(path_contains="workerBuildFinish")
                                   if r["status"] == 200]) == 1, 40), agent.read_log()[-3000:]
    assert len(fakeci.requests(path_contains="workerBuildFinish")) == 4
    assert [f["buildId"] for f in fakeci.finished] == [build["buildId"]]
    agent.wait_for_log("finish report acknowledged")
    assert agent.running


def test_sigterm_exits_zero(install_dir, fakeci):
    agent = start_agent(install_dir)
    assert wait_heartbeats(fakeci, 1)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=5) == 0


def test_second_agent_exits_zero(install_dir, fakeci):
    first = start_agent(install_dir)
    first.wait_for_log(r"startup reported")
    second = Agent(install_dir, fast=True).start()
    assert second.wait(timeout=10) == 0
    assert first.running
    assert (install_dir / "runtime" / "agent.pid").read_text() == str(first.pid)


@pytest.mark.parametrize("overrides, key", [
    ({"devops.agent.id": None}, "devops.agent.id"),
    ({"devops.agent.secret.key": "  "}, "devops.agent.secret.key"),
    ({"devops.parallel.task.count": "many"}, "devops.parallel.task.count"),
])
def test_bad_config_exits_1_naming_the_key(install_dir, fakeci, overrides, key):
    path = write_properties(install_dir, fakeci, overrides)
    before = path.read_bytes()
    agent = Agent(install_dir, fast=True).start()
    assert agent.wait(timeout=10) == 1
    lines = [l for l in agent.output().splitlines() if l.strip()]
    assert len(lines) == 1 and key in lines[0], agent.output()
    assert path.read_bytes() == before


def test_secret_never_logged(install_dir, fakeci):
    agent = start_agent(install_dir, env_extra={"MY_API_TOKEN": "tok-123456789"})
    fakeci.queue_build(script="true")
    assert fakeci.wait_for("finished", 1, timeout=30)
    agent.stop()
    log = agent.read_log()
    assert fakeci.secret_key not in log
    assert "tok-123456789" not in log
    assert "env MY_API_TOKEN=***" in log


def test_worker_jar_restored_from_tmp(install_dir, fakeci):
    """agent-behaviour §6.10: a missing jar is restored from tmp/ and the build runs."""
    jar = install_dir / "worker-agent.jar"
    agent = start_agent(install_dir)
    agent.wait_for_log("startup reported")
    (install_dir / "tmp" / "worker-agent.jar").write_bytes(jar.read_bytes())
    jar.unlink()
    build = fakeci.queue_build(script="echo restored")
    assert fakeci.wait_for("finished", 1, timeout=30)
    assert finished_for(fakeci, build["buildId"])[0]["success"] is True
    assert jar.read_text() == "v1.15.2\n"
    agent.wait_for_log("restoring it from tmp/")


def test_missing_worker_jar_fails_without_starting(install_dir, fakeci):
    """GoAgent reports a failure and still starts the build. This agent does
    not start it, stops claiming (the next builds stay queued) and claims
    again once the jar is back."""
    agent = start_agent(install_dir)
    agent.wait_for_log("startup reported")
    jar = install_dir / "worker-agent.jar"
    saved = jar.read_bytes()
    jar.unlink()
    build = fakeci.queue_build(script="echo must not run")
    assert fakeci.wait_for("finished", 1, timeout=30)
    report = finished_for(fakeci, build["buildId"])[0]
    assert report["success"] is False
    assert report["error"]["errorCode"] == 2128042
    agent.wait_for_log("builds cannot start on this host: worker-agent.jar is missing")
    later = fakeci.queue_build(script="echo later")
    n = len(heartbeats(fakeci))
    assert wait_heartbeats(fakeci, n + 3)
    assert fakeci.worker_ends == []                   # the worker never ran
    assert len(fakeci.finished) == 1
    jar.write_bytes(saved)
    assert fakeci.wait_for("finished", 2, timeout=30), agent.read_log()[-2000:]
    assert finished_for(fakeci, later["buildId"])[0]["success"] is True
    assert agent.running


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_build_runs_as_slave_user(install_dir, fakeci):
    write_properties(install_dir, fakeci, {"devops.slave.user": "nobody"})
    os.chmod(install_dir, 0o755)
    for d in ("workspace", "logs"):                   # as start.sh leaves them
        os.chmod(install_dir / d, 0o777)
    for parent in install_dir.parents:
        if parent == parent.parent:
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o005)
    start_agent(install_dir)
    build = fakeci.queue_build(script='echo "uid=$(id -u) user=$USER home=$HOME"')
    assert fakeci.wait_for("finished", 1, timeout=30)
    end = fakeci.worker_ends[0]
    assert end["env"]["USER"] == "nobody"
    assert any("uid=65534 user=nobody" in m for m in fakeci.log_messages(build["buildId"])), \
        fakeci.log_messages(build["buildId"])
