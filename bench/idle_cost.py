#!/usr/bin/python3
"""CPU time and wakeups per idle minute of the agent and the daemon.

devopsDaemon starts devopsAgent against the fake BK-CI server with the
normal periods (no test knob), in ask mode, with the host-metrics
collector and the pipeline part on, as a GoAgent HEAD has. After a warm-up
that covers the startup, the process counters are read at the start and
the end of --minutes minutes:

  CPU       time on a CPU of all threads (/proc/<pid>/task/*/schedstat,
            first field, ns), in ms; utime + stime of /proc/<pid>/stat
            counts whole clock ticks (10 ms), too coarse for one idle
            minute, and is kept as a note; the CPU of reaped children
            (cutime + cstime: probes the agent runs) is recorded beside it;
  wakeups   voluntary context switches (/proc/<pid>/task/*/status), each
            one a sleep that something ended, and the run counts of
            /proc/<pid>/task/*/schedstat (third field: times on a CPU).

Anchors: GoAgent HEAD 55-140 ms of CPU and 574 wakeups per idle minute,
measured on this kind of machine. Goals: under 10 ms and under 30 wakeups.

The install directory is made under $TMPDIR (default /tmp); the mount it
lives on is noted with the wakeups: on ext4 mounted with `discard`, every
replaced file (runtime/status.json) also waits for the disk.

Fails only when a process did not start or exited; never on a number.

Usage: bench/idle_cost.py [--minutes 5] [--warmup 20]
       bench/idle_cost.py --minutes 0.5 --warmup 10     (a quick try)
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from fakeci.layout import BIN_DIR, layout_install_dir, write_properties  # noqa: E402
from fakeci.server import FakeCI  # noqa: E402
import benchlib  # noqa: E402

BENCH = "idle_cost"
TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")
GOAL_CPU_MS = 10
GOAL_WAKEUPS = 30


def counters(pid: int) -> dict:
    """CPU (ms, own and reaped children), voluntary and involuntary switches and
    run counts of pid, summed over its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    out = {"tick_ms": (int(fields[11]) + int(fields[12])) * TICK_MS,
           "child_ms": (int(fields[13]) + int(fields[14])) * TICK_MS,
           "cpu_ms": 0.0, "vol": 0, "invol": 0, "runs": 0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        out["vol"] += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        out["invol"] += int(line.split()[1])
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns, _, runs = f.read().split()[:3]
                out["cpu_ms"] += int(ns) / 1e6
                out["runs"] += int(runs)
        except OSError:
            continue        # a thread that ended in between
    return out


def mount_of(path: str) -> str:
    """File system type and options of the mount holding path (findmnt)."""
    try:
        out = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,OPTIONS", "-T", path],
                             capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown file system"
    if not out:
        return "unknown file system"
    opts = out[1].split(",") if len(out) > 1 else []
    return out[0] + (" with discard" if "discard" in opts else "")


def report(name: str, a: dict, b: dict, minutes: float, anchors: bool,
           mount: str = "") -> None:
    """Record the per-minute figures of one process from counters a and b."""
    per = {k: (b[k] - a[k]) / minutes for k in a}
    note = (f"over {minutes:g} idle min, normal periods, ask mode, collector and "
            f"pipeline part on")
    benchlib.figure(BENCH, f"{name}.cpu", f"{name} CPU per idle minute", per["cpu_ms"], "ms",
                    anchor="55-140 ms" if anchors else "", goal=f"< {GOAL_CPU_MS} ms",
                    met=per["cpu_ms"] < GOAL_CPU_MS,
                    note=note + f"; schedstat; utime+stime say {per['tick_ms']:.0f} ms "
                    f"in {TICK_MS:g} ms ticks")
    benchlib.figure(BENCH, f"{name}.child_cpu", f"{name} children's CPU per idle minute",
                    per["child_ms"], "ms", note="probes and helpers it ran and reaped")
    benchlib.figure(BENCH, f"{name}.wakeups", f"{name} wakeups per idle minute", per["vol"],
                    "/min", anchor="574" if anchors else "", goal=f"< {GOAL_WAKEUPS}",
                    met=per["vol"] < GOAL_WAKEUPS,
                    note="voluntary context switches, all threads; " + note
                    + (f"; install dir on {mount}" if mount else ""))
    benchlib.figure(BENCH, f"{name}.runs", f"{name} runs on a CPU per idle minute",
                    per["runs"], "/min",
                    note=f"schedstat run count; {per['invol']:.1f} involuntary switches/min")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=20.0)
    args = ap.parse_args()
    if not os.path.exists(os.path.join(BIN_DIR, "devopsAgent")):
        print("idle_cost: build bin/ first (make)", file=sys.stderr)
        return 1
    benchlib.reset(BENCH)
    root = tempfile.mkdtemp(prefix="bench-idle-")
    ci = FakeCI().start()
    install = os.path.join(root, "agent")
    layout_install_dir(install, ci)
    write_properties(install, ci, {"devops.agent.collectorOn": "true",
                                   "devops.pipeline.enable": "true"})
    daemon, agent = benchlib.start_daemon(install)
    try:
        if not agent:
            print("idle_cost: the daemon did not start the agent", file=sys.stderr)
            return 1
        time.sleep(args.warmup)
        a0, d0 = counters(agent), counters(daemon.pid)
        n0 = len(ci.requests())
        time.sleep(args.minutes * 60)
        if not benchlib.alive(agent) or daemon.poll() is not None:
            print("idle_cost: a process exited during the idle run", file=sys.stderr)
            return 1
        a1, d1 = counters(agent), counters(daemon.pid)
        report("agent", a0, a1, args.minutes, True, mount_of(install))
        report("daemon", d0, d1, args.minutes, False)
        benchlib.figure(BENCH, "agent.requests", "agent requests per idle minute",
                        (len(ci.requests()) - n0) / args.minutes, "/min",
                        anchor="16", note="every call to the server in the same minutes")
    finally:
        benchlib.stop_daemon(daemon, install)
        ci.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
