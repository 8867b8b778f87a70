#!/usr/bin/python3
"""Print how fast a queued build reaches a running worker (bench, not a test).

Daemon + agent run against the fake server with the normal periods (build
pull every 5 s, as GoAgent). --builds builds are queued one at a time; for
each, the time from queueing to the worker's first request (the stand-in
asks for its steps) and the part of it spent inside the agent (from the
build pull to that request: journal, scripts, fork/exec, login shell, JVM
stand-in start) are printed as median and p95. The daemon's and the agent's
memory after the run is printed too (bench/collector_figures.py measures the
idle agent with and without the collector).

Usage: bench/build_latency.py [--builds 10]
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
from benchlib import percentile, smaps  # noqa: E402

def read_pid(install: str, name: str) -> int:
    try:
        with open(os.path.join(install, "runtime", name + ".pid")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--builds", type=int, default=10)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="build-latency-")
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
              f"median {statistics.median(total):.2f}, p95 {percentile(total, 95):.2f} "
              f"(the pull loop polls every 5 s, as GoAgent)")
        if inside:
            print(f"claimed -> worker running, inside the agent (ms): median "
                  f"{statistics.median(inside) * 1000:.0f}, p95 {percentile(inside, 95) * 1000:.0f}")
        for name, pid in (("devopsAgent", agent), ("devopsDaemon", daemon.pid)):
            m = smaps(pid)
            print(f"{name} after the run (KiB): RSS {m['rss']}, PSS {m['pss']}, "
                  f"USS {m['uss']}")
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
