"""The pipeline loop on the safe executor (issue 5; agent-behaviour §8, W16;
protocol §7.9, §7.10).

Every test starts the real devopsAgent with DEVOPS_AGENT_TEST_FAST=1 and
devops.pipeline.enable=true against fakeci, queues COMMAND items and checks
the PUTs that reached the server (fakeci validates each body against the
server's PipelineResponse model) and the task files in pipeline_tasks/.
"""

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import (Agent, assert_no_violations, pipeline_polls, same_root,
                      wait_heartbeats, wait_until, write_properties)

TAIL_MAX = 64 * 1024


def start_agent(install_dir, fakeci, **props):
    overrides = {"devops.pipeline.enable": "true"}
    overrides.update(props)
    write_properties(install_dir, fakeci, overrides)
    return Agent(install_dir, fast=True).start()


def updates_for(fakeci, seq):
    return [u for u in fakeci.pipeline_updates if u["seqId"] == seq]


def finals_for(fakeci, seq):
    return [u for u in updates_for(fakeci, seq) if u["status"] != "EXECUTING"]


def wait_final(fakeci, agent, seq, timeout=30):
    assert fakeci.wait_until(lambda: finals_for(fakeci, seq), timeout=timeout), \
        agent.read_log()[-4000:]
    return finals_for(fakeci, seq)[0]


def task_dir(install_dir, seq):
    return Path(install_dir) / "pipeline_tasks" / seq


def result_json(install_dir, seq):
    try:
        return json.loads((task_dir(install_dir, seq) / "result.json").read_text())
    except (OSError, ValueError):
        return None


# The length of the test sleeps names this run's processes: another suite on
# the same machine (a second checkout, a chroot) has other numbers.
SLEEP_BASE = 7_000_000 + os.getpid() % 100_000 * 10


def live_cmdlines(needle):
    """Command lines of live (non-zombie) processes of our root containing needle."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not same_root(int(entry)):
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if needle in cmd:
            found.append(cmd)
    return found


def vm_kb(pid, key):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def test_success_and_failure(install_dir, fakeci):
    agent = start_agent(install_dir, fakeci)
    fakeci.queue_pipeline("echo hello\necho err >&2", seq_id="okseq1")
    final = wait_final(fakeci, agent, "okseq1")
    ups = updates_for(fakeci, "okseq1")
    assert [u["status"] for u in ups] == ["EXECUTING", "SUCCESS"]
    assert ups[0]["response"] == "Executing"
    assert final["response"] == "hello\nerr\n"

    fakeci.queue_pipeline("echo before\nexit 3\necho after", seq_id="failseq1")
    final = wait_final(fakeci, agent, "failseq1")
    assert final["status"] == "FAILURE"
    assert final["response"] == "run pipeline failed: exit status 3\noutput: before\n"

    # The §8 script file, the full output and the done/reported flags.
    d = task_dir(install_dir, "okseq1")
    script = (d / "devops_pipeline_okseq1_COMMAND.sh").read_text()
    assert script == f"#!/bin/bash\n\nset -e\ncd '{os.path.realpath(d)}'\necho hello\necho err >&2\n"
    assert "hello\nerr\n" in (d / "output.log").read_text()
    assert wait_until(lambda: (result_json(install_dir, "okseq1") or {}).get("reported"), 10)
    res = result_json(install_dir, "okseq1")
    assert res["done"] is True and res["status"] == "SUCCESS" and res["exitCode"] == 0
    assert res["output"] == "hello\nerr\n" and res["outputBytes"] == 10
    assert res["end"] >= res["start"] and res["durationMs"] == res["end"] - res["start"]
    assert agent.running
    assert_no_violations(fakeci)


def test_timeout_leaves_no_survivors(install_dir, fakeci):
    agent = start_agent(install_dir, fakeci, **{"devops.pipeline.timeout.sec": "2"})
    # The script and its grandchild ignore SIGTERM: only the SIGKILL after
    # the grace period ends them.
    fakeci.queue_pipeline(f"trap '' TERM\nsleep {SLEEP_BASE + 7} &\necho started\n"
                          f"sleep {SLEEP_BASE + 9}\necho never", seq_id="slowseq1")
    assert wait_until(lambda: live_cmdlines(f"sleep {SLEEP_BASE + 7} "), 20), \
        agent.read_log()[-3000:]
    final = wait_final(fakeci, agent, "slowseq1")
    assert final["status"] == "TIMEOUT"
    assert final["response"] == "run pipeline failed: timed out after 2 s\noutput: started\n"
    # The result is reported only after the kill: nothing of the task is left.
    left = f"sleep {SLEEP_BASE // 10}"
    assert not wait_until(lambda: live_cmdlines(left), 2), live_cmdlines(left)
    assert agent.running
    assert_no_violations(fakeci)


def test_large_output_bounded_rss_and_right_tail(install_dir, fakeci):
    agent = start_agent(install_dir, fakeci)
    fakeci.queue_pipeline("echo warmup", seq_id="warm1")
    wait_final(fakeci, agent, "warm1")
    before = vm_kb(agent.pid, "VmHWM")

    lines = 7_000_000                                   # about 55 MB of output
    fakeci.queue_pipeline(f"seq 1 {lines}", seq_id="bigseq1")
    final = wait_final(fakeci, agent, "bigseq1", timeout=120)
    expected = "".join(f"{i}\n" for i in range(1, lines + 1))
    assert len(expected) > 50 * 1024 * 1024
    assert final["status"] == "SUCCESS"
    assert final["response"] == expected[-TAIL_MAX:]
    grown = vm_kb(agent.pid, "VmHWM") - before
    assert grown < 16 * 1024, f"agent peak RSS grew by {grown} kB for 55 MB of output"
    res = result_json(install_dir, "bigseq1")
    assert res["outputBytes"] == len(expected)
    # The whole output is in output.log (between the executor's header and footer).
    assert (task_dir(install_dir, "bigseq1") / "output.log").stat().st_size > len(expected)
    assert_no_violations(fakeci)


def test_output_env_and_debug_script(install_dir, fakeci):
    agent = start_agent(install_dir, fakeci)
    fakeci.queue_pipeline("echo VERSION=1.2.3 > output.env\n"
                          "echo 'export NAME=\"two words\"' >> output.env\n"
                          "echo '# comment' >> output.env\n"
                          "echo \"task $DEVOPS_TASK_ID\"", seq_id="envseq1")
    final = wait_final(fakeci, agent, "envseq1")
    assert final["status"] == "SUCCESS"
    res = result_json(install_dir, "envseq1")
    assert res["params"] == {"VERSION": "1.2.3", "NAME": "two words"}
    # debug.sh re-runs the task by hand with the same environment.
    d = task_dir(install_dir, "envseq1")
    out = subprocess.run(["/bin/sh", str(d / "debug.sh")], cwd="/", capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "task envseq1\n"
    assert "DEVOPS_AGENT_TEST_FAST" not in (d / "debug.sh").read_text()


def test_path_escapes_are_rejected(install_dir, fakeci, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (install_dir / "pipeline_tasks").mkdir()
    os.symlink(outside, install_dir / "pipeline_tasks" / "evil")
    agent = start_agent(install_dir, fakeci)

    fakeci.queue_pipeline("echo pwned > pwned.txt", seq_id="../escape1")
    final = wait_final(fakeci, agent, "../escape1")
    assert final["status"] == "FAILURE"
    assert "not a safe task name" in final["response"]

    fakeci.queue_pipeline("echo pwned > pwned.txt", seq_id="evil")
    final = wait_final(fakeci, agent, "evil")
    assert final["status"] == "FAILURE"
    assert "leaves the workspace" in final["response"]

    assert list(outside.iterdir()) == []
    assert not (install_dir / "escape1").exists() and not (install_dir.parent / "escape1").exists()
    assert not list(install_dir.rglob("pwned.txt"))
    assert agent.running
    assert_no_violations(fakeci)


def test_answer_crossing_the_report_does_not_report_again(install_dir, fakeci, tmp_path):
    """The agent dies before the server hears of the task (its EXECUTING is
    lost), so the server still serves the item after the restart. The
    restarted agent's first ask reads it pending; the recovered result's
    report is acknowledged while that answer is on its way. The stale answer
    must not make the agent report the task again, nor run it again."""
    runs, go = tmp_path / "runs", tmp_path / "go"
    fakeci.add_fault("agents/pipelines", "close", count=-1, method="PUT")
    agent = start_agent(install_dir, fakeci)
    fakeci.queue_pipeline(f"echo run >> '{runs}'\n"
                          f"while [ ! -f '{go}' ]; do sleep 0.1; done\necho finished",
                          seq_id="xseq1")
    assert wait_until(lambda: runs.exists(), 30)
    go.touch()
    assert wait_until(lambda: (result_json(install_dir, "xseq1") or {}).get("done"), 20)
    os.kill(agent.pid, signal.SIGKILL)
    agent.proc.wait(10)
    fakeci.stop()        # the dead agent's requests in progress end dropped
    assert updates_for(fakeci, "xseq1") == []          # the server heard nothing
    fakeci.clear_faults()
    fakeci.start()

    n_asks = len(fakeci.requests("thirdPartyAgent/ask"))
    fakeci.add_fault("thirdPartyAgent/ask", "late", seconds=4)
    fakeci.add_fault("agents/pipelines", "stall", seconds=1.5, method="PUT")
    agent2 = Agent(install_dir, fast=True).start()
    final = wait_final(fakeci, agent2, "xseq1")
    assert final["status"] == "SUCCESS" and final["response"] == "finished\n"
    late = fakeci.requests("thirdPartyAgent/ask")[n_asks]
    assert late["fault"] == "late" and late["json"]["askEnable"]["pipeline"], late
    polls = pipeline_polls(fakeci)
    assert wait_until(lambda: pipeline_polls(fakeci) >= polls + 4, 30)
    assert len(finals_for(fakeci, "xseq1")) == 1
    assert runs.read_text() == "run\n"
    agent2.wait_for_log(r"pipeline xseq1: served by a request sent before its "
                        r"result was acknowledged", timeout=1)
    agent2.stop()


def test_restart_between_end_and_put_reports_once(install_dir, fakeci, tmp_path):
    runs, go = tmp_path / "runs", tmp_path / "go"
    agent = start_agent(install_dir, fakeci)
    fakeci.queue_pipeline(f"echo run >> '{runs}'\n"
                          f"while [ ! -f '{go}' ]; do sleep 0.1; done\necho finished",
                          seq_id="rseq1")
    assert fakeci.wait_until(lambda: updates_for(fakeci, "rseq1"), timeout=30)
    assert wait_until(lambda: runs.exists(), 10)
    # The server goes away (connections refused: no request of this agent can
    # be handled later), the task ends, the agent dies before any PUT lands.
    fakeci.stop()
    go.touch()
    assert wait_until(lambda: (result_json(install_dir, "rseq1") or {}).get("done"), 20)
    os.kill(agent.pid, signal.SIGKILL)
    agent.proc.wait(10)
    assert finals_for(fakeci, "rseq1") == []
    fakeci.start()

    agent2 = Agent(install_dir, fast=True).start()
    final = wait_final(fakeci, agent2, "rseq1")
    assert final["status"] == "SUCCESS" and final["response"] == "finished\n"
    # Several more loop turns: no second report, no second run.
    polls = pipeline_polls(fakeci)
    assert wait_until(lambda: pipeline_polls(fakeci) >= polls + 4, 30)
    assert len(finals_for(fakeci, "rseq1")) == 1
    assert runs.read_text() == "run\n"
    assert wait_until(lambda: result_json(install_dir, "rseq1")["reported"], 10)
    assert_no_violations(fakeci)


def test_served_again_is_reported_not_rerun(install_dir, fakeci, tmp_path):
    runs = tmp_path / "runs"
    agent = start_agent(install_dir, fakeci)
    fakeci.queue_pipeline(f"echo run >> '{runs}'\necho once", seq_id="again1")
    wait_final(fakeci, agent, "again1")
    fakeci.queue_pipeline(f"echo run >> '{runs}'\necho once", seq_id="again1")
    assert fakeci.wait_until(lambda: len(finals_for(fakeci, "again1")) == 2, timeout=30)
    assert [u["status"] for u in finals_for(fakeci, "again1")] == ["SUCCESS", "SUCCESS"]
    assert runs.read_text() == "run\n"
    assert "ran already" in agent.read_log()


def test_blank_command_and_wrong_types_fail_and_the_loop_lives_on(install_dir, fakeci):
    agent = start_agent(install_dir, fakeci)
    fakeci.queue_pipeline(" \n\t\n", seq_id="blank1")
    final = wait_final(fakeci, agent, "blank1")
    assert [u["status"] for u in updates_for(fakeci, "blank1")] == ["EXECUTING", "FAILURE"]
    assert final["response"] == "run pipeline failed: the command is blank"

    # {"type": "COMMAND", "seqId": 42, "command": ["ls"]}: GoAgent's loop died here.
    fakeci.corrupt_ask("pipeline", {"type": "COMMAND", "seqId": 42, "command": ["ls"]})
    final = wait_final(fakeci, agent, "42")
    assert final["status"] == "FAILURE"
    assert final["response"] == "run pipeline failed: command is not a string"

    # FILE items are skipped without a status update (§7.9).
    fakeci.queue_pipeline(data={"type": "FILE", "seqId": "file1", "operation": "DOWNLOAD",
                                "file": "/tmp/x"}, max_serves=1)
    assert fakeci.wait_until(lambda: not fakeci.pipelines(), timeout=20)

    fakeci.queue_pipeline("echo alive", seq_id="after1")
    final = wait_final(fakeci, agent, "after1")
    assert final["status"] == "SUCCESS" and final["response"] == "alive\n"
    assert updates_for(fakeci, "file1") == []
    assert agent.running
    assert_no_violations(fakeci)


def test_loop_is_off_by_default(install_dir, fakeci):
    agent = Agent(install_dir, fast=True).start()
    assert wait_heartbeats(fakeci, 4, timeout=20)
    assert pipeline_polls(fakeci) == 0
    assert "pipeline executor off" in agent.read_log()
    assert not (install_dir / "pipeline_tasks").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_runs_as_slave_user(install_dir, fakeci):
    os.chmod(install_dir, 0o755)
    for parent in install_dir.parents:
        if parent == parent.parent:
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o005)
    agent = start_agent(install_dir, fakeci, **{"devops.slave.user": "nobody"})
    fakeci.queue_pipeline('echo "$(id -un) $USER"\necho x > output.env', seq_id="userseq1")
    final = wait_final(fakeci, agent, "userseq1")
    assert final["status"] == "SUCCESS", final["response"]
    assert final["response"] == "nobody nobody\n"
    assert (task_dir(install_dir, "userseq1") / "output.env").stat().st_uid == 65534


def test_agent_stop_ends_a_running_task(install_dir, fakeci):
    agent = start_agent(install_dir, fakeci)
    fakeci.queue_pipeline(f"echo up\nsleep {SLEEP_BASE + 1}", seq_id="stopseq1")
    assert wait_until(lambda: live_cmdlines(f"sleep {SLEEP_BASE + 1} "), 20), \
        agent.read_log()[-3000:]
    assert agent.stop(timeout=10) == 0
    assert not live_cmdlines(f"sleep {SLEEP_BASE + 1} ")
    # Reported before the exit, or by the next agent from result.json.
    if not finals_for(fakeci, "stopseq1"):
        Agent(install_dir, fast=True).start()
    final = wait_final(fakeci, agent, "stopseq1")
    assert final["status"] == "FAILURE"
    assert final["response"] == ("run pipeline failed: stopped: the agent is shutting down\n"
                                 "output: up\n")
    assert len(finals_for(fakeci, "stopseq1")) == 1


def test_allowlist(install_dir, fakeci):
    allowed = "echo allowed"
    (install_dir / "allow.txt").write_text(
        f"# sha256 of pipeline commands\n{hashlib.sha256(allowed.encode()).hexdigest()}  ok\n")
    agent = start_agent(install_dir, fakeci, **{"devops.pipeline.allowlist": "allow.txt"})
    fakeci.queue_pipeline(allowed, seq_id="allow1")
    final = wait_final(fakeci, agent, "allow1")
    assert final["status"] == "SUCCESS" and final["response"] == "allowed\n"
    fakeci.queue_pipeline("echo sneaky", seq_id="allow2")
    final = wait_final(fakeci, agent, "allow2")
    assert final["status"] == "FAILURE"
    assert "is not in the allow-list" in final["response"]
    assert not (task_dir(install_dir, "allow2") / "output.log").exists()


def test_timeout_kills_processes_that_left_the_session(install_dir, fakeci, tmp_path):
    """A double-forked, setsid'd sleep is outside the task's process group and
    session: only the task's cgroup finds it. Where cgroups are usable nothing
    of the task is left after the timeout; elsewhere the agent says so."""
    agent = start_agent(install_dir, fakeci, **{"devops.pipeline.timeout.sec": "2"})
    mech = agent.wait_for_log(r"process-tree cleanup: ([^\n]*)").group(1)
    if not mech.startswith("cgroup v2"):
        pytest.skip(f"no writable cgroup v2 here ({mech}): escaped processes are "
                    f"not tracked, as docs/pipeline.md says")
    pid_file = tmp_path / "escaped.pid"
    fakeci.queue_pipeline(
        f"(setsid sh -c 'sleep {SLEEP_BASE + 3} & echo $! > {pid_file}' </dev/null >/dev/null 2>&1 &)\n"
        f"echo started\nsleep {SLEEP_BASE + 2}", seq_id="escape-tree1")
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 20), \
        agent.read_log()[-3000:]
    escaped = int(pid_file.read_text())
    assert os.getsid(escaped) != os.getsid(agent.pid)
    final = wait_final(fakeci, agent, "escape-tree1")
    assert final["status"] == "TIMEOUT"
    left = f"sleep {SLEEP_BASE // 10}"
    assert not live_cmdlines(left), live_cmdlines(left)
    assert agent.running
    assert_no_violations(fakeci)
