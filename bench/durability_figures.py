#!/usr/bin/python3
"""Print the durability figures of devopsAgent (bench, not a test; issue 6).

shutdown: the agent runs two long builds and has one finish report stuck on
  a hanging server (every agent endpoint stalls); the time from SIGTERM to
  its exit is printed (the contract is < 5 s; the flush budget is 3 s).
cleanup: a build leaves N `sleep` children behind, all ending on SIGTERM;
  the time from the worker's end report (the stand-in's last request) to the
  agent's finish report is printed, for the cgroup v2 mechanism (when this
  machine has one) and for the process group/session fallback
  (DEVOPS_AGENT_CGROUP=off). It is dominated by the 200 ms poll of tree.c.
adopt: the agent is killed with SIGKILL during a build and restarted; the
  worker is then killed; the time from that kill to the finish report shows
  how fast an adopted worker's end is seen (pidfd, else a 1 s /proc poll).

The agent runs with DEVOPS_AGENT_TEST_FAST=1 (no 8 s delay before a
successful report, 2 s kill grace). Usage:
bench/durability_figures.py [--runs 5] [--children 20]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fakeci.layout import layout_install_dir, remove_build_cgroups  # noqa: E402
from fakeci.server import FakeCI  # noqa: E402


def wait(pred, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError("condition not met in %.0f s" % timeout)


def start_agent(install, **env):
    full = dict(os.environ, DEVOPS_AGENT_TEST_FAST="1", **env)
    for k in list(full):
        if k.lower().endswith("_proxy"):
            del full[k]
    return subprocess.Popen(["./devopsAgent"], cwd=install, env=full,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def journal(install, build_id):
    for p in Path(install, "runtime", "builds").glob("*.json"):
        try:
            j = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if j["build"]["buildId"] == build_id:
            return j
    return None


def state_is(install, build, state):
    j = journal(install, build["buildId"])
    return j if j and j["state"] == state else None


def finished_at(ci, build):
    for f in ci.finished:
        if f["buildId"] == build["buildId"]:
            return f["t"]
    return None


def kill_tree(install):
    """SIGKILL everything whose cwd or command line is inside install."""
    root = os.path.realpath(install)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(root) or root in cmd:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def fresh(tmp, ci, name):
    install = os.path.join(tmp, name)
    layout_install_dir(Path(install), ci)
    return install


def shutdown_run(tmp, ci, i):
    install = fresh(tmp, ci, f"shutdown{i}")
    ci.clear_faults()
    longs = [ci.queue_build(script="sleep 120") for _ in range(2)]
    short = ci.queue_build(script="sleep 1")
    agent = start_agent(install)
    try:
        for b in longs + [short]:
            wait(lambda b=b: state_is(install, b, "running"))
        ci.add_fault("thirdPartyAgent", "stall", count=-1, seconds=600)
        wait(lambda: state_is(install, short, "finished"))
        time.sleep(0.2)
        t0 = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        return time.monotonic() - t0
    finally:
        ci.clear_faults()
        kill_tree(install)
        remove_build_cgroups(install)


def cleanup_run(tmp, ci, i, children, **env):
    install = fresh(tmp, ci, f"cleanup{i}{'off' if env else ''}")
    script = "".join("sleep 300 >/dev/null 2>&1 &\n" for _ in range(children))
    build = ci.queue_build(script=script)
    agent = start_agent(install, **env)
    try:
        t = wait(lambda: finished_at(ci, build), 60)
        end = [e["t"] for e in ci.worker_ends if e["buildId"] == build["buildId"]]
        return t - end[0]
    finally:
        agent.kill()
        agent.wait(10)
        kill_tree(install)
        remove_build_cgroups(install)


def adopt_run(tmp, ci, i):
    install = fresh(tmp, ci, f"adopt{i}")
    build = ci.queue_build(script="sleep 120")
    first = start_agent(install)
    second = None
    try:
        pid = wait(lambda: state_is(install, build, "running"))["pid"]
        first.kill()
        first.wait(10)
        second = start_agent(install)
        log = Path(install, "logs", "devopsAgent.log")
        how = wait(lambda: ("pidfd" if "(pidfd)" in log.read_text() else
                            "poll" if "/proc poll)" in log.read_text() else None))
        t0 = time.time()
        os.killpg(pid, signal.SIGKILL)
        t = wait(lambda: finished_at(ci, build), 60)
        return t - t0, how
    finally:
        if second is not None:
            second.kill()
            second.wait(10)
        kill_tree(install)
        remove_build_cgroups(install)


def show(name, values, unit="s"):
    print(f"{name}: median {statistics.median(values):.3f} {unit}, "
          f"max {max(values):.3f} {unit} over {len(values)} runs")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--children", type=int, default=20)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="durability-figures-")
    ci = FakeCI().start()
    try:
        show("shutdown: SIGTERM -> exit, 2 builds running, server hanging",
             [shutdown_run(tmp, ci, i) for i in range(args.runs)])
        cg = [cleanup_run(tmp, ci, i, args.children) for i in range(args.runs)]
        show(f"cleanup: worker end -> finish report, {args.children} leftovers "
             "(cgroup v2 if available)", cg)
        pg = [cleanup_run(tmp, ci, i, args.children, DEVOPS_AGENT_CGROUP="off")
              for i in range(args.runs)]
        show(f"cleanup: worker end -> finish report, {args.children} leftovers "
             "(process group/session)", pg)
        ad = [adopt_run(tmp, ci, i) for i in range(args.runs)]
        show(f"adopt: adopted worker killed -> finish report ({ad[0][1]})",
             [v for v, _ in ad])
    finally:
        ci.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
