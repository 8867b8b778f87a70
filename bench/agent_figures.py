#!/usr/bin/python3
"""Print the agent's memory and build-start figures (bench, not a test).

Memory: daemon + agent run idle against the fake server with the normal
periods (heartbeat 10 s, build pull 5 s) and the host-metrics collector as
configured by default; after --idle seconds the script prints VmRSS, PSS and
USS (private pages) of each process, and the ratio to GoAgent's 30-50 MB RSS
(agent-behaviour §10: GoAgent embeds telegraf).

Latency: --builds builds are queued one at a time; for each, the time from
queueing to the worker's first request (the stand-in asks for its steps) and
the part of it spent inside the agent (from the server handing the build out
to that request) are printed, with median and p95.

Usage: bench/agent_figures.py [--idle 25] [--builds 10]
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from fakeci.layout import layout_install_dir  # noqa: E402
from fakeci.server import FakeCI  # noqa: E402

GOAGENT_RSS_MB = (30, 50)


def mem(pid: int) -> dict:
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


def read_pid(install: str, name: str) -> int:
    try:
        with open(os.path.join(install, "runtime", name + ".pid")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=25.0, help="idle seconds before sampling")
    ap.add_argument("--builds", type=int, default=10)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="agent-figures-")
    ci = FakeCI().start()
    install = os.path.join(tmp, "agent")
    layout_install_dir(install, ci)
    daemon = subprocess.Popen(["./devopsDaemon"], cwd=install, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        end = time.monotonic() + 15
        while not read_pid(install, "agent") and time.monotonic() < end:
            time.sleep(0.05)
        agent = read_pid(install, "agent")
        if not agent:
            print("agent did not start", file=sys.stderr)
            return 1
        time.sleep(args.idle)
        print(f"idle after {args.idle:.0f} s (KiB): RSS / PSS / USS")
        for name, pid in (("devopsAgent", agent), ("devopsDaemon", daemon.pid)):
            m = mem(pid)
            print(f"  {name:13s} {m['rss']:6d} / {m['pss']:6d} / {m['uss']:6d}")
        a = mem(agent)
        lo, hi = GOAGENT_RSS_MB
        print(f"agent RSS vs GoAgent's {lo}-{hi} MB: {a['rss'] / 1024 / hi:.2f}-"
              f"{a['rss'] / 1024 / lo:.2f} of it; agent USS: "
              f"{a['uss'] / 1024 / hi:.3f}-{a['uss'] / 1024 / lo:.3f}")

        total, inside = [], []
        for _ in range(args.builds):
            n = len(ci.finished)
            t0 = time.time()
            b = ci.queue_build(script="true")
            if not ci.wait_for("finished", n + 1, timeout=60):
                print("build did not finish", file=sys.stderr)
                return 1
            steps = ci.requests(path_contains="buildId=" + b["buildId"])
            pulls = [r["t"] for r in ci.requests(path_contains="startup?buildType")
                     if steps and r["t"] <= steps[0]["t"]]
            if steps:
                total.append(steps[0]["t"] - t0)
                if pulls:
                    inside.append(steps[0]["t"] - max(pulls))
        print(f"queued -> worker running over {len(total)} builds (s): "
              f"median {statistics.median(total):.2f}, p95 {pct(total, 95):.2f} "
              f"(the pull loop polls every 5 s, as GoAgent)")
        if inside:
            print(f"claimed -> worker running, inside the agent (ms): median "
                  f"{statistics.median(inside) * 1000:.0f}, p95 {pct(inside, 95) * 1000:.0f}")
    finally:
        os.kill(daemon.pid, signal.SIGTERM)
        daemon.wait(10)
        agent = read_pid(install, "agent")
        if agent:
            try:
                os.kill(agent, signal.SIGTERM)
            except OSError:
                pass
        ci.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
