#!/usr/bin/python3
"""bench/restart_latency.py - how fast devopsDaemon brings the agent back.

Two install dirs side by side, each with a copy of bin/devopsDaemon: one
runs bin/devopsAgent (or, with --stub or when the real agent is not built,
the stub agent of tests/integration/stub_agent.c), the other a trivial
program compiled here with cc (the baseline: it opens runtime/agent.lock,
takes the flock and sleeps; nothing else, libc only). Both daemons run at
once; the bench kills the two agents in turn, -n times each: SIGKILL the
process holding runtime/agent.lock and time until a new one holds it. So
both sides pay the same daemon (SIGCHLD, reap, lock probe, fork+exec) and
the same noise; the difference is what the agent does before its flock:
mostly the dynamic loader mapping its shared libraries.

The lock holder is found among the daemon's children through
/proc/<pid>/fdinfo, so the bench never takes the lock itself (that would
make a starting agent exit), nor reads /proc/locks (its reader blocks every
flock(2) on the machine for milliseconds, the agent's too). Linux only. The daemons run
with DEVOPS_DAEMON_STABLE_MS=0 so that no kill counts as a crash loop
(which would add a 1 s..60 s backoff on purpose).

    usage: restart_latency.py [-n KILLS] [--bin-dir DIR] [--stub]
Records median and p95 of both, their ratio and every sample (benchlib).
Exit 1 when an agent does not come back (never on a number).
"""
import argparse
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
sys.path.insert(0, str(REPO / "tests" / "integration"))
import stub_agent as sa  # noqa: E402
import benchlib  # noqa: E402
from benchlib import percentile  # noqa: E402

BENCH = "restart_latency"

# The baseline: fork+exec+flock of a program that does nothing else.
TRIVIAL_C = r"""
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
int main(void)
{
	int fd = open("runtime/agent.lock", O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd == -1 || flock(fd, LOCK_EX | LOCK_NB) == -1)
		return 0;
	for (;;)
		pause();
}
"""


def build_trivial(tmp):
    """Compile the trivial lock holder into tmp; returns its path."""
    src = Path(tmp) / "trivial.c"
    out = Path(tmp) / "trivial.bin"
    src.write_text(TRIVIAL_C)
    subprocess.run(["cc", "-O2", "-o", str(out), str(src)], check=True)
    return out


def children(ppid):
    """Pids of the children of ppid's main thread (/proc/<ppid>/task/<ppid>/children)."""
    try:
        with open("/proc/%d/task/%d/children" % (ppid, ppid)) as f:
            return [int(w) for w in f.read().split()]
    except OSError:
        return []


def holds_flock(pid, lock):
    """True when pid has an fd on lock (a path) with an exclusive flock on it,
    read from /proc/<pid>/fd and /proc/<pid>/fdinfo. Unlike /proc/locks,
    whose reader takes a system-wide lock that makes every flock(2) of the
    machine wait (and waits itself for an RCU grace period, milliseconds),
    fdinfo only looks at that one file."""
    base = "/proc/%d/" % pid
    try:
        fds = os.listdir(base + "fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(base + "fd/" + fd) != lock:
                continue
            with open(base + "fdinfo/" + fd) as f:
                for line in f:
                    if line.startswith("lock:") and "FLOCK" in line and "WRITE" in line:
                        return True
        except OSError:
            continue
    return False


def wait_holder(inst, daemon, old, timeout):
    """Poll until a child of the daemon other than old, running
    inst/devopsAgent, holds runtime/agent.lock; returns (pid, perf_counter_ns)
    or (None, None). Only the daemon's children are looked at, so the
    daemon's own probe of the lock (just before its fork) never counts."""
    lock = str(inst / "runtime" / "agent.lock")
    agent = str(inst / "devopsAgent")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in children(daemon):
            if pid != old and holds_flock(pid, lock) and sa.pid_exe(pid) == agent:
                return pid, time.perf_counter_ns()
        time.sleep(0.0002)
    return None, None


def mapped_libs(pid):
    """Distinct shared objects mapped by pid (from /proc/<pid>/maps)."""
    libs = set()
    try:
        with open("/proc/%d/maps" % pid) as f:
            for line in f:
                w = line.split()
                if len(w) >= 6 and ".so" in os.path.basename(w[5]):
                    libs.add(w[5])
    except OSError:
        return 0
    return len(libs)


def kill_wait(inst, daemon, pid):
    """SIGKILL pid (the lock holder of inst); returns (new pid, ms) or (None, None)."""
    time.sleep(0.05)  # let the agent settle past its start-up
    t0 = time.perf_counter_ns()
    os.kill(pid, signal.SIGKILL)
    new, t1 = wait_holder(inst, daemon, pid, 20)
    if new is None:
        return None, None
    return new, (t1 - t0) / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50, help="kills of each agent (50)")
    ap.add_argument("--bin-dir", default=os.environ.get("AGENT_BIN_DIR", str(REPO / "bin")))
    ap.add_argument("--stub", action="store_true", help="use the stub agent")
    args = ap.parse_args()
    sa.BIN_DIR = Path(args.bin_dir)
    if not sa.daemon_bin().exists():
        print("restart_latency: %s not built" % sa.daemon_bin(), file=sys.stderr)
        return 1
    kind = "stub" if args.stub or sa.real_agent_bin() is None else "real"
    benchlib.reset(BENCH)

    tmp = Path(tempfile.mkdtemp(prefix="restart_latency."))
    daemons, insts = [], {}
    try:
        trivial = build_trivial(tmp)
        for name in ("agent", "trivial"):
            (tmp / name).mkdir()
            insts[name] = sa.make_install(tmp / name, agent=kind)
        shutil.copy2(trivial, insts["trivial"] / "devopsAgent")
        pids, dpid, lat = {}, {}, {"agent": [], "trivial": []}
        for name, inst in insts.items():
            daemons.append(sa.start_daemon(inst, env={"DEVOPS_DAEMON_STABLE_MS": "0"}))
            dpid[name] = daemons[-1].pid
            pids[name], _ = wait_holder(inst, dpid[name], None, 20)
            if pids[name] is None:
                print("restart_latency: no %s took the lock\n%s" % (name, sa.daemon_log(inst)),
                      file=sys.stderr)
                return 1
        time.sleep(0.5)
        libs = mapped_libs(pids["agent"])
        for _ in range(args.n):
            for name, inst in insts.items():
                new, ms = kill_wait(inst, dpid[name], pids[name])
                if new is None:
                    print("restart_latency: no new %s after a kill\n%s"
                          % (name, sa.daemon_log(inst)), file=sys.stderr)
                    return 1
                lat[name].append(ms)
                pids[name] = new
        if any(d.poll() is not None for d in daemons):
            print("restart_latency: a daemon died", file=sys.stderr)
            return 1
        what = (str(sa.real_agent_bin()) if kind == "real"
                else "tests/integration/stub_agent.c")
        med = {k: statistics.median(v) for k, v in lat.items()}
        p95 = {k: percentile(v, 95) for k, v in lat.items()}
        ratio = med["agent"] / med["trivial"]
        cond = "%d SIGKILLs each, kills alternating with the baseline's" % args.n
        benchlib.figure(BENCH, "agent.median", "Restart: kill -9 to new agent holding "
                        "agent.lock, median", med["agent"], "ms", anchor="2.3 s",
                        goal="<= 3x trivial", met=ratio <= 3.0,
                        note="%s agent (%s); %s; GoAgent's daemon polls every 5 s"
                        % (kind, os.path.basename(what), cond))
        benchlib.figure(BENCH, "agent.p95", "Restart: kill -9 to new agent holding "
                        "agent.lock, p95", p95["agent"], "ms", note=cond)
        benchlib.figure(BENCH, "trivial.median", "Restart baseline: trivial "
                        "fork+exec+flock program, median", med["trivial"], "ms",
                        note="a libc-only C program that takes the flock and sleeps, "
                        "restarted by the same devopsDaemon; " + cond)
        benchlib.figure(BENCH, "trivial.p95", "Restart baseline: trivial "
                        "fork+exec+flock program, p95", p95["trivial"], "ms", note=cond)
        benchlib.figure(BENCH, "ratio.median", "Restart: agent / trivial program "
                        "(medians)", round(ratio, 2), "x", goal="<= 3x", met=ratio <= 3.0,
                        note="the difference is mostly the dynamic loader mapping the "
                        "agent's shared libraries before main")
        benchlib.figure(BENCH, "agent.libs", "Shared objects mapped by the agent",
                        libs, "files", note="from /proc/<pid>/maps of the running "
                        "agent (the trivial program maps 2: libc and ld.so)")
        benchlib.series(BENCH, "samples", {
            "title": "Restart: kill -9 to a new agent holding agent.lock",
            "ylabel": "ms", "samples": {
                "devopsAgent (%d kills)" % len(lat["agent"]): lat["agent"],
                "trivial fork+exec+flock (%d kills)" % len(lat["trivial"]):
                    lat["trivial"]}})
        return 0
    finally:
        for d in daemons:
            if d.poll() is None:
                d.kill()
                d.wait()
        for inst in insts.values():
            sa.kill_all(inst)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
