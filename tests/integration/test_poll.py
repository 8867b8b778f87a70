"""The server poll: the ask call of current BK-CI servers and the legacy loops
of older ones (agent/poll.c, docs/devopsAgent.md "The server poll").

Covers what is the poll's own business: nothing before startup, the fallback
to the legacy loops on a server without ask and the switch back when the
server gains it, the forced modes, the servers' rate windows, a malformed
part costing that part only, a build always taken, an upgrade offered with a
build refused at once, and the exit error of DEVOPS_AGENT_TIMEOUT_EXIT_TIME.
"""

import json
import time

import pytest

from conftest import (Agent, assert_no_violations, heartbeats, read_properties,
                      wait_heartbeats, wait_until, write_properties)

ASK = "thirdPartyAgent/ask"


def journal_finished(install_dir, build_id):
    """A journal entry of a build that ended before a restart, report pending."""
    d = install_dir / "runtime" / "builds"
    d.mkdir(parents=True, exist_ok=True)
    build = {"projectId": "demo-proj", "buildId": build_id, "vmSeqId": "1",
             "workspace": "", "pipelineId": "p-1", "executeCount": 1,
             "containerHashId": "c-1"}
    (d / f"{build_id}_1.json").write_text(json.dumps({
        "version": 1, "build": build, "state": "finished", "pid": 0, "startTime": 0,
        "result": {"success": True, "message": "done", "errorCode": 0}}))


def start_agent(install_dir, fast=True, **kw):
    return Agent(install_dir, fast=fast, **kw).start()


def test_nothing_before_startup_is_acknowledged(install_dir, fakeci, poll_mode):
    """Only startup calls reach the server until one is answered with status 0,
    although a finished build waits in the journal and must be reported."""
    journal_finished(install_dir, "b-before")
    fakeci.add_fault("thirdPartyAgent/startup", "500", count=3)
    agent = start_agent(install_dir)
    assert fakeci.wait_until(lambda: any(f["buildId"] == "b-before" for f in fakeci.finished),
                             timeout=30), agent.read_log()[-3000:]
    reqs = fakeci.requests()
    first_ok = next(i for i, r in enumerate(reqs)
                    if r["path"].endswith("thirdPartyAgent/startup") and r["fault"] is None)
    assert first_ok == 3, [r["path"] for r in reqs[:first_ok + 1]]
    assert all(r["path"].endswith("thirdPartyAgent/startup") for r in reqs[:first_ok])
    assert wait_heartbeats(fakeci, 1)
    assert_no_violations(fakeci)


def test_legacy_server_then_gains_ask(install_dir, fakeci):
    """A server without ask answers 404: the legacy loops run, ask is tried
    again now and then, and once the server has it the agent switches."""
    fakeci.set_state(askSupported=False)
    agent = start_agent(install_dir)
    agent.wait_for_log(r"poll mode: legacy \(the server answers 404", timeout=15)
    assert fakeci.wait_for("requests", 2, timeout=15, path_contains="newHeartbeat")
    fakeci.queue_build(script="echo legacy build")
    assert fakeci.wait_for("finished", 1, timeout=30)
    # In test mode the probe runs every 2 s (10 min otherwise).
    fakeci.set_state(askSupported=True)
    agent.wait_for_log(r"poll mode: ask \(the server answers ask\)", timeout=15)
    switched = len(fakeci.requests())
    fakeci.queue_build(script="echo ask build")
    assert fakeci.wait_for("finished", 2, timeout=30), agent.read_log()[-3000:]
    time.sleep(2)
    later = [r["path"] for r in fakeci.requests()[switched:]]
    assert not [p for p in later if "newHeartbeat" in p or p.endswith("/status")
                or "startup?buildType" in p], later
    assert any(p.endswith(ASK) for p in later)
    # The mode is logged once per change, not per poll.
    assert len(agent.read_log().split("poll mode: ")) - 1 == 2
    assert_no_violations(fakeci)


@pytest.mark.parametrize("mode", ["legacy", "ask"])
def test_forced_mode(install_dir, fakeci, mode):
    write_properties(install_dir, fakeci, {"devops.agent.poll.mode": mode})
    fakeci.set_state(askSupported=(mode == "ask"))
    agent = start_agent(install_dir)
    fakeci.queue_build(script="true")
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-3000:]
    assert wait_heartbeats(fakeci, 3)
    asks = fakeci.requests(path_contains=ASK)
    legacy = fakeci.requests(path_contains="newHeartbeat")
    assert (not asks) if mode == "legacy" else (asks and not legacy)


def test_bad_poll_mode_key_is_refused(install_dir, fakeci):
    write_properties(install_dir, fakeci, {"devops.agent.poll.mode": "sometimes"})
    agent = start_agent(install_dir)
    agent.wait_for_log("poll mode: ask", timeout=15)
    assert read_properties(install_dir / ".agent.properties")[
        "devops.agent.poll.mode"] == "auto"


def test_rate_windows_let_two_builds_run_at_once(install_dir, fakeci, poll_mode):
    """Real periods and the server's real rate limits: after a claim the agent
    polls again as soon as the 3 s window allows (never sooner), so with a
    cap of 2 two short builds overlap. (Before, a legacy status call right
    after a claim was refused and the agent waited the full period.)"""
    write_properties(install_dir, fakeci, {"devops.parallel.task.count": "2"})
    fakeci.set_state(parallelTaskCount=2, rateLimits=True)
    agent = start_agent(install_dir, fast=False)
    agent.wait_for_log(f"poll mode: {poll_mode}", timeout=20)
    for _ in range(2):
        fakeci.queue_build(script="sleep 4")
    max_running = 0
    deadline = time.monotonic() + 40
    while len(fakeci.builds()["running"]) + len(fakeci.finished) < 2 \
            or (max_running < 2 and time.monotonic() < deadline):
        max_running = max(max_running, len(fakeci.builds()["running"]))
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert max_running == 2, agent.read_log()[-3000:]
    # Both builds end and are reported (the agent is not left mid-build).
    assert fakeci.wait_for("finished", 2, timeout=30), agent.read_log()[-3000:]
    assert fakeci.rate_limited == [], fakeci.rate_limited
    assert_no_violations(fakeci)


@pytest.mark.parametrize("part, value", [
    ("heartbeat", "oops"), ("heartbeat", {"parallelTaskCount": "many"}),
    ("upgrade", {"agent": "yes"}), ("pipeline", [1, 2]), ("data", "nope"),
])
def test_a_bad_part_costs_that_part_only(install_dir, fakeci, part, value):
    fakeci.set_state(parallelTaskCount=3)
    fakeci.corrupt_ask(part, value, count=3)
    agent = start_agent(install_dir)
    build = fakeci.queue_build(script="echo still built")
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-3000:]
    assert fakeci.finished[0]["buildId"] == build["buildId"]
    # The settings of a good heartbeat part are applied all the same.
    assert wait_until(lambda: read_properties(install_dir / ".agent.properties").get(
        "devops.parallel.task.count") == "3", 15)
    assert agent.running
    n = len(fakeci.asks())
    assert fakeci.wait_until(lambda: len(fakeci.asks()) > n + 2, timeout=10)


def test_a_bad_build_part_leaves_the_build_for_the_next_ask(install_dir, fakeci):
    fakeci.corrupt_ask("build", 42, count=2)
    agent = start_agent(install_dir)
    build = fakeci.queue_build(script="true")
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-3000:]
    assert fakeci.finished[0]["buildId"] == build["buildId"]
    assert fakeci.finished[0]["success"] is True


def test_a_build_without_agent_status_is_still_run(install_dir, fakeci):
    """GoAgent drops a build the server already marked running when the
    answer carries no IMPORT_OK; this agent runs it."""
    agent = start_agent(install_dir)
    assert wait_heartbeats(fakeci, 1)
    fakeci.corrupt_ask("heartbeat", None, count=5)
    build = fakeci.queue_build(script="echo ran")
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-3000:]
    assert fakeci.finished[0]["buildId"] == build["buildId"]
    assert fakeci.finished[0]["success"] is True


def test_malformed_build_with_usable_ids_is_reported_failed(install_dir, fakeci):
    agent = start_agent(install_dir)
    assert wait_heartbeats(fakeci, 1)
    fakeci.queue_build(raw={"projectId": "p", "buildId": "b-bad", "vmSeqId": "1",
                            "executeCount": "three"})
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-3000:]
    report = fakeci.finished[0]
    assert report["buildId"] == "b-bad" and report["success"] is False
    assert "malformed build info" in report["message"]
    assert agent.running


def test_upgrade_offered_with_a_build_is_refused_at_once(install_dir, fakeci):
    """The server marks the agent "upgrading" for 60 s when it offers an
    upgrade: a refusal must clear that mark at once (DELETE success=false)."""
    fakeci.add_file("jar/worker-agent.jar", b"v1.16.0\n")
    fakeci.set_upgrade(worker=True)
    fakeci.queue_build(script="sleep 1")
    agent = start_agent(install_dir)
    assert fakeci.wait_for("upgrade_finishes", 1, timeout=20), agent.read_log()[-3000:]
    assert fakeci.upgrade_finishes[0]["success"] is False
    agent.wait_for_log("upgrade offered but refused: a build arrived in the same answer")
    assert fakeci.wait_for("finished", 1, timeout=30)
    # No download was made for the refused offer.
    assert not fakeci.requests(path_contains="upgrade/files/download")
    assert_no_violations(fakeci)


def test_ask_waits_for_the_window_after_too_frequent(install_dir, fakeci):
    fakeci.add_fault(ASK, "json", count=1,
                     body={"status": 1, "message": "request too frequently"})
    agent = start_agent(install_dir)
    agent.wait_for_log("ask refused: .*request too frequently", timeout=15)
    assert wait_heartbeats(fakeci, 3, timeout=15)
    assert agent.running


def test_ask_backs_off_while_the_server_is_away(install_dir, fakeci):
    """While asks get no answer the time between them grows (from the ask
    period up to a cap), so a fleet does not hammer a server on its way back;
    once the server answers, the agent asks at its usual pace again."""
    agent = start_agent(install_dir)
    assert wait_heartbeats(fakeci, 2)
    fakeci.set_down(True)               # every request: connection dropped

    def unanswered():
        # libcurl sends a request again at once on a fresh connection when
        # the kept-alive one was dropped: that is the same ask.
        out = []
        for r in fakeci.requests(ASK):
            if r["fault"] == "down" and (not out or r["t"] - out[-1] > 0.05):
                out.append(r["t"])
        return out
    assert fakeci.wait_until(lambda: len(unanswered()) >= 6, timeout=60), \
        agent.read_log()[-3000:]
    fakeci.set_down(False)
    down = unanswered()
    gaps = [b - a for a, b in zip(down, down[1:])]
    assert gaps[-1] > 2.5 * gaps[0], gaps       # fast mode: ~0.3 s growing to ~1.8 s

    def answered():
        return [r["t"] for r in fakeci.requests(ASK) if r["fault"] is None and r["t"] > down[-1]]
    assert fakeci.wait_until(lambda: len(answered()) >= 3, timeout=30)
    back = answered()
    assert min(b - a for a, b in zip(back, back[1:])) < gaps[-1] / 2, (gaps, back)
    assert agent.running


def test_timeouts_in_a_row_exit_1_after_reporting(install_dir, fakeci):
    """DEVOPS_AGENT_TIMEOUT_EXIT_TIME=N: N polls in a row that time out record
    THIRD_AGENT_EXIT_TIMEOUT_ERROR; the next poll reports it and the agent
    exits 1, so the daemon starts a fresh one."""
    write_properties(install_dir, fakeci, {"devops.agent.request.timeout.sec": "1"})
    agent = start_agent(install_dir, env_extra={"DEVOPS_AGENT_TIMEOUT_EXIT_TIME": "2"})
    assert wait_heartbeats(fakeci, 1)
    fakeci.add_fault(ASK, "stall", count=2, seconds=3)
    assert agent.wait(timeout=30) == 1, agent.read_log()[-3000:]
    sent = [hb.get("errorExitData") for hb in heartbeats(fakeci)]
    assert {"errorEnum": "THIRD_AGENT_EXIT_TIMEOUT_ERROR"}.items() <= (sent[-1] or {}).items()
    agent.wait_for_log("exit error THIRD_AGENT_EXIT_TIMEOUT_ERROR reported; exiting with 1")
