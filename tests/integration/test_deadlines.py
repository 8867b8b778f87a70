"""Nothing the host does takes the agent offline: bounded waits, files that
cannot block, builds that cannot start do not burn the queue, and a server
that refuses a finish report forever does not wedge the agent.

docs/durability.md and docs/security.md say which defence each test proves.
"""

import json
import os
import signal
import time

from conftest import (Agent, assert_no_violations, heartbeats, wait_heartbeats,
                      wait_until)

HANGING_JAVA = """#!/bin/sh
# A java that closes its output at once and never ends (a hung JVM).
exec >/dev/null 2>&1
exec sleep 1000
"""


def start(install_dir, **env):
    return Agent(install_dir, fast=True, env_extra=env).start()


def sleepers(install_dir) -> list[int]:
    """Live `sleep 1000` processes started from install_dir's java."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            with open(f"/proc/{pid}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if argv[:2] == [b"sleep", b"1000"] and state != b"Z":
            out.append(int(pid))
    return out


def test_a_hanging_java_probe_does_not_stop_the_poll(install_dir, fakeci):
    """The JDK 17 version probe runs while the agent goes on polling; at its
    10 s deadline the probe is killed with its whole process group."""
    agent = start(install_dir)
    assert wait_heartbeats(fakeci, 2, timeout=30)
    java = install_dir / "jdk17" / "bin" / "java"
    java.write_text(HANGING_JAVA)
    java.chmod(0o755)
    # A changed JDK directory makes the agent probe its version again.
    os.utime(install_dir / "jdk17", (time.time() + 5, time.time() + 5))
    assert wait_until(lambda: sleepers(install_dir), timeout=15), "the probe never ran"
    n = len(heartbeats(fakeci))
    time.sleep(4)
    assert len(heartbeats(fakeci)) >= n + 3, "the poll stopped while java hung"
    agent.wait_for_log(r"probe \S+java: still running after its deadline", timeout=15)
    assert wait_until(lambda: not sleepers(install_dir), timeout=5), sleepers(install_dir)
    assert agent.running
    assert_no_violations(fakeci)


def test_a_fifo_in_place_of_the_properties_fails_at_once(install_dir, fakeci):
    props = install_dir / ".agent.properties"
    props.unlink()
    os.mkfifo(props)
    agent = start(install_dir)
    assert agent.wait(timeout=10) == 1, "the agent blocked on the FIFO"
    assert ".agent.properties" in agent.output()


def test_a_fifo_in_the_journal_is_set_aside(install_dir, fakeci):
    builds = install_dir / "runtime" / "builds"
    builds.mkdir(parents=True)
    os.mkfifo(builds / "b-fifo_1.json")
    agent = start(install_dir)
    assert wait_heartbeats(fakeci, 2, timeout=15), "the agent blocked on the FIFO"
    agent.wait_for_log(r"journal runtime/builds/b-fifo_1.json is corrupt")
    fakeci.queue_build(script="echo fine")
    assert fakeci.wait_for("finished", 1, timeout=30)
    assert agent.running


def test_builds_that_cannot_start_stop_the_claims_until_the_cause_is_gone(
        install_dir, fakeci):
    """java gone: the first build fails naming the cause, the next builds stay
    queued (not burnt), and once java is back they run."""
    agent = start(install_dir)
    assert wait_heartbeats(fakeci, 2, timeout=30)
    hidden = {}
    for jdk in ("jdk17", "jdk"):
        java = install_dir / jdk / "bin" / "java"
        hidden[java] = java.with_name("java.hidden")
        java.rename(hidden[java])
    first = fakeci.queue_build(script="echo must not run")
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-3000:]
    report = fakeci.finished[0]
    assert report["buildId"] == first["buildId"] and report["success"] is False
    assert "java not found" in report["message"], report["message"]
    agent.wait_for_log("builds cannot start on this host: java not found")
    later = [fakeci.queue_build(script="echo later") for _ in range(2)]
    n = len(heartbeats(fakeci))
    assert wait_heartbeats(fakeci, n + 5, timeout=30)
    assert len(fakeci.builds()["queued"]) == 2, "builds were claimed and burnt"
    asks = fakeci.asks()[-3:]
    assert all(a["askEnable"]["build"] == "NONE" for a in asks), asks
    for java, hide in hidden.items():
        hide.rename(java)
    agent.wait_for_log("local fault gone", timeout=30)
    assert fakeci.wait_for("finished", 3, timeout=60), agent.read_log()[-3000:]
    done = {f["buildId"]: f["success"] for f in fakeci.finished[1:]}
    assert done == {b["buildId"]: True for b in later}
    assert agent.running
    assert_no_violations(fakeci)


def test_a_finish_report_refused_forever_becomes_a_dead_letter(install_dir, fakeci):
    fakeci.add_fault("workerBuildFinish", "json", count=-1,
                     body={"status": 2101001, "message": "build not found"})
    agent = start(install_dir)
    build = fakeci.queue_build(script="true")
    agent.wait_for_log(r"refused its finish report 10 times", timeout=60)
    letters = list((install_dir / "runtime" / "deadletter").glob("*.json"))
    assert len(letters) == 1
    letter = json.loads(letters[0].read_text())
    assert letter["build"]["buildId"] == build["buildId"]
    assert "build not found" in letter["deadLetter"] and letter["reportsSent"] == 10
    assert not list((install_dir / "runtime" / "builds").glob("*.json"))
    # The agent is not wedged: a drain finishes at once.
    agent.send_signal(signal.SIGUSR1)
    assert agent.wait(timeout=15) == 0


def test_a_server_error_is_retried_not_dead_lettered(install_dir, fakeci):
    fakeci.add_fault("workerBuildFinish", "500", count=12)
    agent = start(install_dir)
    fakeci.queue_build(script="true")
    assert fakeci.wait_for("finished", 1, timeout=60), agent.read_log()[-3000:]
    assert not (install_dir / "runtime" / "deadletter").exists()
