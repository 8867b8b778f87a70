#!/usr/bin/python3
"""bench/restart_latency.py - how fast devopsDaemon brings the agent back.

Builds a temporary install dir with copies of bin/devopsDaemon and
bin/devopsAgent (or, when the real agent is not built, the stub agent of
tests/integration/stub_agent.c), starts the daemon, then 50 times: SIGKILL
the agent holding runtime/agent.lock and time until a new process holds it.
The lock holder is read from /proc/locks, so the bench never takes the lock
itself (that would make a starting agent exit). Linux only.

The daemon runs with DEVOPS_DAEMON_STABLE_MS=0 so that no kill counts as a
crash loop (which would add a 1 s..60 s backoff on purpose).

    usage: restart_latency.py [-n KILLS] [--bin-dir DIR] [--stub]
Prints the median, p95, min and max in milliseconds. Exit 1 on failure.
"""
import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
import stub_agent as sa  # noqa: E402
from benchlib import percentile  # noqa: E402


def wait_holder(inst, old, timeout):
    """Poll /proc/locks until an agent other than old holds agent.lock.
    The daemon shows up too, for the microseconds of its probe just before
    it forks the agent: only a holder running devopsAgent counts."""
    lock = inst / "runtime" / "agent.lock"
    agent = str(inst / "devopsAgent")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in sa.lock_holders(lock):
            if pid != old and sa.pid_exe(pid) == agent:
                return pid, time.perf_counter_ns()
        time.sleep(0.0002)
    return None, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50, help="number of kills (50)")
    ap.add_argument("--bin-dir", default=os.environ.get("AGENT_BIN_DIR", str(REPO / "bin")))
    ap.add_argument("--stub", action="store_true", help="use the stub agent")
    args = ap.parse_args()
    sa.BIN_DIR = Path(args.bin_dir)
    if not sa.daemon_bin().exists():
        print("restart_latency: %s not built" % sa.daemon_bin(), file=sys.stderr)
        return 1
    kind = "stub" if args.stub or sa.real_agent_bin() is None else "real"

    tmp = Path(tempfile.mkdtemp(prefix="restart_latency."))
    daemon = None
    try:
        inst = sa.make_install(tmp, agent=kind)
        daemon = sa.start_daemon(inst, env={"DEVOPS_DAEMON_STABLE_MS": "0"})
        pid, _ = wait_holder(inst, None, 20)
        if pid is None:
            print("restart_latency: no agent took the lock\n" + sa.daemon_log(inst),
                  file=sys.stderr)
            return 1
        lat = []
        for _ in range(args.n):
            time.sleep(0.05)  # let the agent settle past its start-up
            t0 = time.perf_counter_ns()
            os.kill(pid, signal.SIGKILL)
            new, t1 = wait_holder(inst, pid, 20)
            if new is None:
                print("restart_latency: no new agent after a kill\n" + sa.daemon_log(inst),
                      file=sys.stderr)
                return 1
            lat.append((t1 - t0) / 1e6)
            pid = new
        if daemon.poll() is not None:
            print("restart_latency: the daemon died", file=sys.stderr)
            return 1
        print("restart_latency: %d kills, %s agent (%s)" % (len(lat), kind,
              sa.real_agent_bin() if kind == "real" else "tests/integration/stub_agent.c"))
        print("  SIGKILL -> new agent holding agent.lock:"
              " median %.2f ms, p95 %.2f ms, min %.2f ms, max %.2f ms"
              % (statistics.median(lat), percentile(lat, 95), min(lat), max(lat)))
        return 0
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        sa.kill_all(tmp / "inst")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
