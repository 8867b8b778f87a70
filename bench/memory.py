#!/usr/bin/python3
"""Memory of the agent and the daemon: idle, and with 16 and 64 running builds.

devopsDaemon starts devopsAgent against the fake BK-CI server with the
normal periods (no test knob), the host-metrics collector and the pipeline
part on, as a GoAgent HEAD has, and devops.parallel.task.count=64. After
--idle seconds alone on the host, the USS (private pages), PSS and VmRSS of
each process and their thread counts are recorded. USS counts every page
of a shared library that no other process maps, so an agent alone on a
host has a larger USS than one beside another user of libcurl and OpenSSL:
the alone figure is the one to set beside GoAgent's (a static Go binary,
measured alone). Then a second agent, with the collector off, runs beside
it against its own server: the first agent's USS then is what each further
agent on a host costs, and the difference between the two is the
collector's cost. The second agent is stopped again before builds
that stay running (the worker stand-in runs `sleep`) are queued until 16
and then 64 run at once, and the agent and daemon are measured again. The
sizes of the three binaries and of the shared libraries each links (ldd)
close the run.

Anchors (GoAgent HEAD measured idle on this kind of machine): agent USS
13.8 MB, daemon USS 4.1 MB, 7 and 4 threads. Goals: agent USS under 1.4 MB,
daemon USS under 256 KiB.

Fails only when a process did not start or exited, or the builds did not
start; never on a number.

Usage: bench/memory.py [--idle 60] [--builds 16,64]
       bench/memory.py --idle 10 --builds 4      (a quick try)
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from fakeci.layout import BIN_DIR, layout_install_dir, write_properties  # noqa: E402
from fakeci.server import FakeCI  # noqa: E402
import benchlib  # noqa: E402

BENCH = "memory"
GO_AGENT_USS_KIB = 13.8 * 1024
GO_DAEMON_USS_KIB = 4.1 * 1024
GO_AGENT_THREADS = 7
GO_DAEMON_THREADS = 4
GOAL_AGENT_USS_KIB = 1.4 * 1024
GOAL_DAEMON_USS_KIB = 256
PROPS = {"devops.agent.collectorOn": "true", "devops.pipeline.enable": "true",
         "devops.parallel.task.count": "64"}


def threads(pid: int) -> int:
    """Threads of pid (/proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def record(tag: str, what: str, pid: int, note: str) -> dict:
    """Record USS, PSS, RSS and threads of pid as figures <what>.<x>.<tag>."""
    m = benchlib.smaps(pid)
    n = threads(pid)
    agent = what == "agent"
    name = "agent" if agent else "daemon"
    goal_kib = GOAL_AGENT_USS_KIB if agent else GOAL_DAEMON_USS_KIB
    benchlib.figure(BENCH, f"{what}.uss.{tag}", f"{name} USS, {tag}", m["uss"], "KiB",
                    anchor=f"{(GO_AGENT_USS_KIB if agent else GO_DAEMON_USS_KIB) / 1024:.1f} MB"
                    if tag == "idle" else "",
                    goal=(f"< {GOAL_AGENT_USS_KIB / 1024:.1f} MB" if agent else "< 256 KiB"),
                    met=m["uss"] < goal_kib, note=note)
    benchlib.figure(BENCH, f"{what}.pss.{tag}", f"{name} PSS, {tag}", m["pss"], "KiB", note=note)
    benchlib.figure(BENCH, f"{what}.rss.{tag}", f"{name} VmRSS, {tag}", m["rss"], "KiB",
                    note=note)
    benchlib.figure(BENCH, f"{what}.threads.{tag}", f"{name} threads, {tag}", n, "",
                    anchor=str(GO_AGENT_THREADS if agent else GO_DAEMON_THREADS)
                    if tag == "idle" else "", note=note)
    return dict(m, threads=n)


def uss_parts(pid: int) -> dict:
    """Private KiB of pid per mapping (heap, stack, anon, each file's basename)."""
    parts, name = {}, "[anon]"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and ":" not in head[0]:
                name = os.path.basename(head[5]) if len(head) > 5 else "[anon]"
                if name.startswith("[stack"):
                    name = "[stack]"
            elif head[0] in ("Private_Clean:", "Private_Dirty:"):
                parts[name] = parts.get(name, 0) + int(head[1])
    return {k: v for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v}


def record_parts(pid: int, exe: str) -> None:
    """Record where the idle agent's private pages are, as figures and a series."""
    parts = uss_parts(pid)
    own = {"[heap]", "[anon]", "[stack]", exe}
    libs = {k: v for k, v in parts.items() if k not in own and not k.startswith("[")}
    top = ", ".join(f"{k} {v}" for k, v in list(libs.items())[:6])
    benchlib.figure(BENCH, "agent.uss.heap", "agent USS: malloc heap", parts.get("[heap]", 0),
                    "KiB", note="much of it is the libraries' own start-up (GnuTLS's tables, "
                    "loaded through librtmp, a dependency of Debian's libcurl; OpenSSL)")
    benchlib.figure(BENCH, "agent.uss.binary", "agent USS: its own binary", parts.get(exe, 0),
                    "KiB", note="text and data pages only this process maps")
    benchlib.figure(BENCH, "agent.uss.anon", "agent USS: stack and anonymous maps",
                    parts.get("[anon]", 0) + parts.get("[stack]", 0), "KiB",
                    note="bss of the binary and the libraries, the main stack")
    benchlib.figure(BENCH, "agent.uss.libs", "agent USS: shared libraries' private pages",
                    sum(libs.values()), "KiB",
                    note=f"{len(libs)} libraries (relocated data, GOT); largest: {top}")
    benchlib.series(BENCH, "agent.uss.by_mapping", {"kib": parts, "unit": "KiB"})


def kill_builds(root: str) -> None:
    """SIGKILL the process groups of every process running under root (the workers)."""
    own = os.getpgid(0)
    groups = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{d}/cwd")
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            if cwd.startswith(root) or root in cmd:
                groups.add(os.getpgid(int(d)))
        except OSError:
            continue
    for g in groups - {own}:
        try:
            os.killpg(g, signal.SIGKILL)
        except OSError:
            pass


def running_workers(ci: FakeCI, ids: set) -> int:
    """How many of the builds ids have a worker that fetched its steps."""
    seen = set()
    for r in ci.requests(path_contains="worker/steps"):
        for b in ids:
            if "buildId=" + b in r["url"]:
                seen.add(b)
    return len(seen)


def lib_sizes() -> None:
    """Record the binaries' sizes and the shared libraries each links (ldd)."""
    for name in ("devopsAgent", "devopsDaemon", "upgrader"):
        path = os.path.join(BIN_DIR, name)
        size = os.path.getsize(path)
        libs, total = [], 0
        out = subprocess.run(["ldd", path], capture_output=True, text=True,
                             timeout=30).stdout
        for line in out.splitlines():
            parts = line.split("=>")
            target = (parts[1] if len(parts) > 1 else parts[0]).split("(")[0].strip()
            if target.startswith("/") and os.path.exists(target):
                libs.append(os.path.basename(target))
                total += os.path.getsize(os.path.realpath(target))
        # text + data + bss as `size` counts them: what is loaded, without debug info
        text, data, bss = (int(x) for x in subprocess.run(
            ["size", path], capture_output=True, text=True,
            timeout=30).stdout.splitlines()[1].split()[:3])
        benchlib.figure(BENCH, f"size.{name}", f"{name} binary size", round(size / 1024),
                        "KiB", note=f"file with debug info; text {text // 1024} KiB, data "
                        f"{data // 1024} KiB, bss {bss // 1024} KiB; links {len(libs)} shared "
                        f"libraries of {total / 1048576:.1f} MiB in all (shared with other "
                        f"programs)")
        benchlib.figure(BENCH, f"size.{name}.loaded", f"{name} text+data+bss",
                        round((text + data + bss) / 1024), "KiB", note="`size` of the binary")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=60.0, help="idle seconds before sampling")
    ap.add_argument("--builds", default="16,64", help="running-build counts to measure")
    ap.add_argument("--no-off", action="store_true", help="skip the collector-off agent")
    args = ap.parse_args()
    counts = [int(x) for x in args.builds.split(",") if x.strip()]
    if not os.path.exists(os.path.join(BIN_DIR, "devopsAgent")):
        print("memory: build bin/ first (make)", file=sys.stderr)
        return 1
    benchlib.reset(BENCH)
    root = tempfile.mkdtemp(prefix="bench-memory-")
    ci = FakeCI().start()
    ci.set_state(parallelTaskCount=None)   # the agent's 64 stands
    ci_off = None if args.no_off else FakeCI().start()
    install = os.path.join(root, "agent")
    layout_install_dir(install, ci)
    write_properties(install, ci, PROPS)
    daemon, agent = benchlib.start_daemon(install)
    off = None
    try:
        if not agent:
            print("memory: the daemon did not start the agent", file=sys.stderr)
            return 1
        time.sleep(args.idle)
        if not benchlib.alive(agent) or daemon.poll() is not None:
            print("memory: a process exited during the idle run", file=sys.stderr)
            return 1
        idle_note = (f"alone on the host after {args.idle:.0f} s idle, normal periods, "
                     f"collector and pipeline part on")
        record("idle", "agent", agent, idle_note)
        dirty = benchlib.smaps(agent)["dirty"]
        benchlib.figure(BENCH, "agent.dirty.idle", "agent private dirty pages, idle", dirty,
                        "KiB", note="heap, stacks, relocated library data: what no other "
                        "process can share and the kernel cannot drop")
        record_parts(agent, "devopsAgent")
        record("idle", "daemon", daemon.pid, idle_note)
        if ci_off is not None:
            off_dir = os.path.join(root, "collector-off")
            layout_install_dir(off_dir, ci_off)
            write_properties(off_dir, ci_off,
                             dict(PROPS, **{"devops.agent.collectorOn": "false"}))
            off = benchlib.start_agent(off_dir)
            time.sleep(min(args.idle, 30.0))
            if off.poll() is not None or not benchlib.alive(agent):
                print("memory: an agent exited during the side-by-side run", file=sys.stderr)
                return 1
            beside = benchlib.smaps(agent)["uss"]
            benchlib.figure(BENCH, "agent.uss.beside", "agent USS, idle, beside a second "
                            "agent", beside, "KiB", goal=f"< {GOAL_AGENT_USS_KIB / 1024:.1f} MB",
                            met=beside < GOAL_AGENT_USS_KIB,
                            note="the library pages both map count for neither: what one "
                            "more agent on a host costs")
            # Both agents side by side, five samples a second apart: the median
            # difference (one sample moves by tens of KiB with a request in flight).
            diffs = []
            for _ in range(5):
                diffs.append(benchlib.smaps(agent)["uss"] - benchlib.smaps(off.pid)["uss"])
                time.sleep(1)
            benchlib.figure(BENCH, "agent.collector.uss", "agent USS cost of the collector",
                            sorted(diffs)[2], "KiB",
                            note=f"median of {len(diffs)} differences against an agent with "
                            f"the collector off ({min(diffs)} to {max(diffs)} KiB); GoAgent "
                            f"embeds telegraf for this")
            benchlib.stop_agent(off)
            off = None
            ci_off.stop()
            ci_off = None

        ids = set()
        for n in counts:
            while len(ids) < n:
                ids.add(ci.queue_build(script="sleep 900")["buildId"])
            # One claim per ask answer, the next ask within the 3 s window.
            limit = time.monotonic() + 30 + 5 * n
            while running_workers(ci, ids) < n and time.monotonic() < limit:
                time.sleep(0.5)
            got = running_workers(ci, ids)
            if got < n:
                print(f"memory: only {got} of {n} builds started", file=sys.stderr)
                return 1
            time.sleep(2)
            if not benchlib.alive(agent):
                print("memory: the agent exited with builds running", file=sys.stderr)
                return 1
            note = f"{n} builds running (worker stand-ins sleeping), alone on the host"
            record(f"{n} builds", "agent", agent, note)
            record(f"{n} builds", "daemon", daemon.pid, note)
        lib_sizes()
    finally:
        if off is not None:
            benchlib.stop_agent(off)
        benchlib.stop_daemon(daemon, install)
        kill_builds(root)
        ci.stop()
        if ci_off is not None:
            ci_off.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
