#!/usr/bin/python3
"""Scale on one machine: --builds builds queued at once, parallel cap --cap.

One agent against the fake server on loopback. --builds builds (300) are
queued at once, each running `sleep 1` or `sleep 2` in the worker stand-in
(tests/fakeci/java), with a parallel cap of --cap (64). While they run, the
agent's fds (/proc/<pid>/fd) and running workers (its children running a
build script) are sampled every 50 ms. Figures: the agent's CPU per build (utime+stime over the run /
builds), its peak memory (VmHWM, and sampled USS) and peak fds, the peak number of running
workers, the wall time from queueing to the last finish report.

Periods: the fake server hands out one build per ask answer, as BK-CI does,
and with the normal periods the agent asks at most once per 3.3 s window, so
1..2 s builds would never overlap (and 300 of them would take 17 minutes).
So by default the agent runs with its test periods (DEVOPS_AGENT_TEST_FAST:
an ask every 0.3 s, no 3 s window, no 8 s delay before a finish report);
--normal-periods runs it with the real ones (then give long builds with
--sleep, e.g. --builds 20 --cap 8 --sleep 60).

The work is checked: every build must be handed out exactly once, run by
exactly one worker (the stand-in's end report) and reported finished
exactly once. Anything else exits 1; a number never does.

Usage: bench/scale.py [--builds 300] [--cap 64] [--sleep 1,2] [--normal-periods]
"""

import argparse
import collections
import os
import shutil
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from fakeci.layout import (layout_install_dir, remove_build_cgroups,  # noqa: E402
                           write_properties)
from fakeci.server import FakeCI  # noqa: E402
import benchlib  # noqa: E402
from benchlib import smaps, start_agent, stop_agent  # noqa: E402

BENCH = "scale"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of pid itself (not its children), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        w = f.read().rsplit(")", 1)[1].split()
    return (int(w[11]) + int(w[12])) / TICK


def is_worker(pid: str) -> bool:
    """True when child pid runs a build's prepare or start script (not a
    probe or a hook the agent runs now and then)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"devops_agent_" in f.read()
    except OSError:
        return False


class Sampler:
    """Peak fd count and peak running workers of pid, every 50 ms, in a thread."""

    def __init__(self, pid: int):
        self.pid = pid
        self.fds = self.children = self.uss = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                self.fds = max(self.fds, len(os.listdir(f"/proc/{self.pid}/fd")))
                self.uss = max(self.uss, smaps(self.pid)["uss"])
                with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                    kids = f.read().split()
                self.children = max(self.children, sum(1 for c in kids if is_worker(c)))
            except OSError:
                pass
            time.sleep(0.05)

    def close(self):
        self.stop = True
        self.thread.join(2)


def check(ci: FakeCI, ids: list) -> list:
    """Every build of ids handed out, run and reported exactly once: [] or the faults."""
    pulled = collections.Counter(p["buildId"] for p in ci.pulled)
    ran = collections.Counter(e.get("buildId") for e in ci.worker_ends)
    done = collections.Counter(f.get("buildId") for f in ci.finished)
    bad = []
    for b in ids:
        if (pulled[b], ran[b], done[b]) != (1, 1, 1):
            bad.append(f"build {b}: handed out {pulled[b]}x, run {ran[b]}x, "
                       f"reported {done[b]}x")
    extra = set(pulled) | set(done)
    extra.difference_update(ids)
    bad += [f"unknown build {b} handed out or reported" for b in sorted(extra)]
    return bad


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--builds", type=int, default=300)
    ap.add_argument("--cap", type=int, default=64)
    ap.add_argument("--sleep", default="1,2", help="seconds each build sleeps, cycled")
    ap.add_argument("--normal-periods", action="store_true")
    ap.add_argument("--timeout", type=float, default=0,
                    help="give up after this many s (default: from the builds)")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(REPO, "bin", "devopsAgent")):
        print("scale: build bin/devopsAgent first (make)", file=sys.stderr)
        return 1
    sleeps = [float(s) for s in args.sleep.split(",")]
    benchlib.reset(BENCH)

    tmp = tempfile.mkdtemp(prefix="scale-")
    ci = FakeCI().start()
    install = os.path.join(tmp, "agent")
    layout_install_dir(install, ci)
    write_properties(install, ci, {"devops.parallel.task.count": str(args.cap)})
    ci.set_state(parallelTaskCount=args.cap)   # the server's value wins, as in BK-CI
    agent = start_agent(install, fast=not args.normal_periods)
    sampler = None
    try:
        if not ci.wait_for("requests", 1, timeout=15, path_contains="/ask"):
            print("scale: the agent never asked", file=sys.stderr)
            return 1
        time.sleep(1)
        cpu0 = cpu_s(agent.pid)
        idle = smaps(agent.pid)
        sampler = Sampler(agent.pid)
        t0 = time.monotonic()
        ids = [ci.queue_build(script=f"sleep {sleeps[i % len(sleeps)]:g}")["buildId"]
               for i in range(args.builds)]
        limit = args.timeout or (120 + args.builds * (4 if args.normal_periods else 1)
                                 + max(sleeps) * args.builds / args.cap * 3)
        ok = ci.wait_for("finished", len(ids), timeout=limit)
        wall = time.monotonic() - t0
        time.sleep(1)   # a duplicate report would come now
        if agent.poll() is not None:
            print(f"scale: the agent exited ({agent.returncode})", file=sys.stderr)
            return 1
        cpu = cpu_s(agent.pid) - cpu0
        hwm = benchlib.status_kb(agent.pid, "VmHWM")
        sampler.close()
        bad = check(ci, ids)
        if not ok:
            bad.insert(0, f"only {len(ci.finished)} of {len(ids)} finish reports "
                       f"in {limit:.0f} s")
        if bad:
            print("scale: the work was wrong:", file=sys.stderr)
            for line in bad[:20]:
                print("  " + line, file=sys.stderr)
            return 1
    finally:
        if sampler is not None:
            sampler.close()
        stop_agent(agent)
        ci.stop()
        remove_build_cgroups(install)
        shutil.rmtree(tmp, ignore_errors=True)

    periods = "normal periods" if args.normal_periods else \
        "test periods (ask every 0.3 s, no 3 s window)"
    cond = (f"{args.builds} builds queued at once (sleep {args.sleep} s each), "
            f"cap {args.cap}, {periods}, fake server and workers on this machine")
    benchlib.figure(BENCH, "cpu_per_build", "Scale: agent CPU per build",
                    round(cpu / args.builds * 1000, 2), "ms",
                    note="agent utime+stime (not its workers) over the run / builds; "
                    + cond)
    benchlib.figure(BENCH, "agent.hwm", "Scale: agent peak memory (VmHWM)",
                    round(hwm / 1024, 2), "MB",
                    note=f"peak RSS, shared libraries included; idle before the run: "
                    f"RSS {idle['rss'] / 1024:.2f} MB; " + cond)
    benchlib.figure(BENCH, "agent.uss", "Scale: agent peak private memory (USS)",
                    round(sampler.uss / 1024, 2), "MB",
                    note=f"smaps_rollup sampled every 50 ms; idle before the run: "
                    f"USS {idle['uss'] / 1024:.2f} MB; " + cond)
    benchlib.figure(BENCH, "agent.fds", "Scale: agent peak open fds", sampler.fds, "fds",
                    note="/proc/<pid>/fd sampled every 50 ms; " + cond)
    benchlib.figure(BENCH, "parallel", "Scale: peak running workers",
                    sampler.children, "builds", goal=f"{args.cap}",
                    met=sampler.children >= args.cap,
                    note="children of the agent running a build script, sampled every "
                    "50 ms; " + cond)
    benchlib.figure(BENCH, "wall", "Scale: queued to last finish report", round(wall, 1),
                    "s", note=cond)
    benchlib.figure(BENCH, "exactly_once", "Scale: builds claimed, run and reported "
                    "exactly once", f"{args.builds}/{args.builds}", "builds",
                    goal="all", met=True, note=cond)
    return 0


if __name__ == "__main__":
    sys.exit(main())
