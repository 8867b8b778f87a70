"""Helpers shared by the bench scripts: starting and stopping an agent, memory
of a process and percentiles."""

import os
import signal
import subprocess

GOAGENT_RSS_MB = (30, 50)   # GoAgent with its embedded telegraf (agent-behaviour §10)


def smaps(pid: int) -> dict:
    """RSS, PSS and USS (private pages) of pid in KiB, from /proc/<pid>/smaps_rollup."""
    out = {"rss": 0, "pss": 0, "uss": 0}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == "Rss":
                out["rss"] = int(v.split()[0])
            elif k == "Pss":
                out["pss"] = int(v.split()[0])
            elif k in ("Private_Clean", "Private_Dirty"):
                out["uss"] += int(v.split()[0])
    return out


def percentile(values, p):
    """Nearest-rank percentile of values (0 < p <= 100)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def start_agent(install: str, fast: bool = False) -> subprocess.Popen:
    """Start <install>/devopsAgent in its own session (test periods when fast)."""
    env = {k: v for k, v in os.environ.items() if k != "DEVOPS_AGENT_TEST_FAST"}
    if fast:
        env["DEVOPS_AGENT_TEST_FAST"] = "1"
    return subprocess.Popen(["./devopsAgent"], cwd=install, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def stop_agent(p: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL its session after 10 s."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
