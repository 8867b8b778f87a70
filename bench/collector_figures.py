#!/usr/bin/python3
"""Print the memory figures of issue 5 (bench, not a test).

idle: devopsAgent runs against the fake server with the normal periods
  (heartbeat 10 s, metrics every 60 s) twice: with the host-metrics
  collector off, then on (devops.agent.collectorOn=true, pipeline loop on
  too). After --idle seconds (at least two metric rounds by default) it
  prints RSS, PSS and USS of the agent and compares the RSS with GoAgent's
  30-50 MB, most of which is its embedded telegraf (agent-behaviour §10).
pipeline: with DEVOPS_AGENT_TEST_FAST=1 a pipeline COMMAND writes --mb MB
  of output (`seq`); the agent's peak RSS (VmHWM) before and after, the
  task's wall time and the throughput of the output path are printed.

Usage: bench/collector_figures.py [--idle 70] [--mb 55]
"""

import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from fakeci.layout import layout_install_dir, write_properties  # noqa: E402
from fakeci.server import FakeCI  # noqa: E402
from benchlib import GOAGENT_RSS_MB, smaps, start_agent, stop_agent  # noqa: E402

def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def idle(ci: FakeCI, root: str, collector: bool, seconds: float) -> dict:
    install = os.path.join(root, "idle-on" if collector else "idle-off")
    layout_install_dir(install, ci)
    write_properties(install, ci, {"devops.agent.collectorOn": str(collector).lower(),
                                   "devops.pipeline.enable": "true"})
    p = start_agent(install, fast=False)
    try:
        time.sleep(seconds)
        if p.poll() is not None:
            raise SystemExit("agent exited during the idle run")
        return smaps(p.pid)
    finally:
        stop_agent(p)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=70.0, help="idle seconds before sampling")
    ap.add_argument("--mb", type=int, default=55, help="MB of pipeline output")
    args = ap.parse_args()

    root = tempfile.mkdtemp(prefix="collector-figures-")
    ci = FakeCI().start()
    try:
        off = idle(ci, root, False, args.idle)
        posts = len(ci.metrix)
        on = idle(ci, root, True, args.idle)
        posts = len(ci.metrix) - posts
        print(f"idle after {args.idle:.0f} s (KiB): RSS / PSS / USS")
        print(f"  collector off  {off['rss']:6d} / {off['pss']:6d} / {off['uss']:6d}")
        print(f"  collector on   {on['rss']:6d} / {on['pss']:6d} / {on['uss']:6d}"
              f"   ({posts} metrics POSTs in the run)")
        lo, hi = GOAGENT_RSS_MB
        print(f"collector cost: {on['rss'] - off['rss']:+d} KiB RSS, "
              f"{on['uss'] - off['uss']:+d} KiB USS; agent RSS with the collector is "
              f"{on['rss'] / 1024 / hi:.2f}-{on['rss'] / 1024 / lo:.2f} of GoAgent's "
              f"{lo}-{hi} MB")

        install = os.path.join(root, "pipeline")
        layout_install_dir(install, ci)
        write_properties(install, ci, {"devops.pipeline.enable": "true"})
        p = start_agent(install, fast=True)
        try:
            ci.queue_pipeline("echo warm", seq_id="warm")
            ci.wait_until(lambda: any(u["seqId"] == "warm" and u["status"] == "SUCCESS"
                                      for u in ci.pipeline_updates), timeout=30)
            before = status_kb(p.pid, "VmHWM")
            lines, size = 0, 0
            while size < args.mb * 1024 * 1024:
                lines += 100000
                size = sum(len(str(i)) + 1 for i in range(1, lines + 1))
            t0 = time.monotonic()
            ci.queue_pipeline(f"seq 1 {lines}", seq_id="big")
            ok = ci.wait_until(lambda: any(u["seqId"] == "big" and u["status"] != "EXECUTING"
                                           for u in ci.pipeline_updates), timeout=300)
            took = time.monotonic() - t0
            after = status_kb(p.pid, "VmHWM")
            if not ok:
                print("the pipeline task did not finish", file=sys.stderr)
                return 1
            print(f"pipeline task with {size / 1048576:.1f} MiB of output: agent peak RSS "
                  f"{before} -> {after} KiB ({after - before:+d}); queued -> reported "
                  f"{took:.2f} s (includes the 0.5 s fast poll), "
                  f"{size / 1048576 / took:.0f} MiB/s through the pipe, log file and tail")
        finally:
            stop_agent(p)
    finally:
        ci.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
