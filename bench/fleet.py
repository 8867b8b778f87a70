#!/usr/bin/python3
"""Fleet: many agents against one fake BK-CI server, and a 60 s server outage.

For each N in --sizes, N devopsAgent processes (each in its own install
directory with its own agent id and secret key, all registered in one
tests/fakeci server on 127.0.0.1, normal periods, ask mode) are started
directly, spread over --spread seconds as a real fleet's agents start at
unrelated times. After every agent has asked once and --warmup seconds more,
the bench counts the requests of --idle seconds: per second, per agent per
minute and per endpoint, with the bytes on the wire, and the CPU the server
(this Python process) and the agents spent.

Then the server stops listening for --outage seconds (its socket closed, so
connections are refused, as when the gateway is down); N/4 builds are queued
meanwhile. It comes back on the same port. Recorded: requests per second from
30 s before the outage to --after seconds after the return (a series for the
plot), the peak second of the first 10 s after the return against the idle
rate (goal: under 2x), the time until every agent has asked again and until
every queued build is claimed. Every queued build must be claimed and
finished exactly once: that is the only failure.

With --hang, a second outage follows in which the server accepts and reads
requests but answers none (each waits until the agent's request timeout).

--legacy-size M (0: none) runs M agents against a server without ask (the
legacy loops) for the idle count only. From the per-agent idle figures of
both modes the bench works out what 10,000 and 100,000 agents cost a server
in requests and bytes per second.

Never fails on a number. Every agent is stopped at the end.

Usage: bench/fleet.py [--sizes 100,200,400] [--outage 60] [--idle 60]
                      [--after 60] [--warmup 30] [--spread 10]
                      [--legacy-size 100] [--hang]
Short:  bench/fleet.py --sizes 20 --outage 10 --idle 20 --after 20 \\
                       --warmup 5 --legacy-size 10 --spread 3
"""

import argparse
import collections
import math
import os
import resource
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fakeci.layout import (layout_install_dir, remove_build_cgroups,  # noqa: E402
                           write_properties)
from fakeci.server import FakeCI  # noqa: E402
import benchlib  # noqa: E402

BENCH = "fleet"
GOAGENT_PER_MIN = 16          # GoAgent HEAD idle: 1 startup, 13 ask, 2 metrics a minute
# GoAgent's legacy loops (no ask) with the pipeline part and the collector
# off, as the fleet's agents run: status and build pull every 5 s, heartbeat
# every 10 s, upgrade every 20 s.
GOAGENT_LEGACY_PER_MIN = 33
LEGACY_EPS = ("newHeartbeat", "status", "startup?buildType", "upgradeNew", "pipelines")
PAPER_FLEETS = (10_000, 100_000)
CLK = os.sysconf("SC_CLK_TCK")


def endpoint(r: dict) -> str:
    """A short name for a recorded request."""
    if "buildType=" in r["url"]:
        return "startup?buildType"
    tail = r["path"].rstrip("/").split("/")
    return "/".join(tail[-2:]) if tail[-1] in ("metrix", "write", "end", "steps") else tail[-1]


def is_poll(r: dict) -> bool:
    """A request of the server poll (ask or a legacy loop), not of a build."""
    return endpoint(r) in ("ask",) + LEGACY_EPS


def cpu_ticks(pid: int) -> int:
    """utime + stime of pid in clock ticks (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def server_port() -> int:
    """A free port below the kernel's ephemeral range.

    While the server is away, hundreds of agents connect to its port; were
    it an ephemeral port, one of those connects could be given that very
    port as its source and connect to itself (TCP simultaneous open), and
    the server could not bind it again."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for port in range(max(1025, low - 2000), low):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return 0


class Fleet:
    """N agents against one lean FakeCI; stop() ends every one of them."""

    def __init__(self, root: str, n: int, ask: bool):
        self.ci = FakeCI(lean=True, port=server_port()).start()
        self.ci.set_state(askSupported=ask)
        self.root, self.n, self.procs, self.installs = root, n, [], []

    def start(self, spread: float) -> None:
        """Lay out n install dirs, then start the agents spread over spread s."""
        for i in range(self.n):
            aid, key = f"fleet-{i:04d}", secrets.token_hex(12)
            self.ci.add_agent(aid, key)
            d = os.path.join(self.root, f"a{i:04d}")
            layout_install_dir(d, self.ci)
            write_properties(d, self.ci, {"devops.agent.id": aid,
                                          "devops.agent.secret.key": key,
                                          "devops.agent.batch.install": aid})
            self.installs.append(d)
        t0 = time.monotonic()
        for i, d in enumerate(self.installs):
            delay = t0 + spread * i / self.n - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.procs.append(benchlib.start_agent(d))

    def dead(self) -> list:
        return [p for p in self.procs if p.poll() is not None]

    def cpu(self) -> int:
        return sum(cpu_ticks(p.pid) for p in self.procs)

    def stop(self) -> None:
        """SIGTERM every agent, SIGKILL the sessions of those left after 10 s."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
                pass
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)    # also a worker left behind
            except OSError:
                pass
            if p.poll() is None:
                p.wait(5)
        for d in self.installs:
            remove_build_cgroups(d)
        self.ci.stop()


def wait_all_asked(fleet: Fleet, since: float, timeout: float) -> float | None:
    """Seconds from since until every agent sent a request after it, or None."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        first = {}
        for r in fleet.ci.requests():
            if r["t"] >= since and r["agent"] and r["agent"] not in first:
                first[r["agent"]] = r["t"]
        if len(first) >= fleet.n:
            return max(first.values()) - since
        if fleet.dead():
            return None
        time.sleep(0.5)
    return None


def idle_window(fleet: Fleet, seconds: float) -> dict:
    """Count the requests and CPU of seconds of idle time."""
    t0, cpu0, srv0, a0 = time.time(), os.times(), None, fleet.cpu()
    srv0 = cpu0.user + cpu0.system
    time.sleep(seconds)
    t1, cpu1, a1 = time.time(), os.times(), fleet.cpu()
    reqs = [r for r in fleet.ci.requests() if t0 <= r["t"] < t1]
    per = collections.Counter(endpoint(r) for r in reqs)
    byts = collections.Counter()
    for r in reqs:
        byts[endpoint(r)] += r["rx"] + r["tx"]
    return {"t0": t0, "t1": t1, "secs": t1 - t0, "n": len(reqs), "per": per, "bytes": byts,
            "reqs": reqs,
            "server_cpu": cpu1.user + cpu1.system - srv0, "agent_cpu": (a1 - a0) / CLK}


def report_idle(n: int, mode: str, w: dict) -> dict:
    """Figures of one idle window; returns per-agent rates for the paper figures."""
    mins = w["secs"] / 60.0
    rps = w["n"] / w["secs"]
    per_agent = w["n"] / n / mins
    tag = f"{mode}.n{n}"
    goal = "<= 13 asks" if mode == "ask" else ""
    benchlib.figure(BENCH, f"{tag}.rps", f"{mode} mode, {n} agents idle: server requests/s",
                    rps, "req/s", note=f"{w['secs']:.0f} s window")
    asks = w["per"].get("ask", 0) / n / mins
    benchlib.figure(BENCH, f"{tag}.per_agent", f"{mode} mode, {n} agents idle: requests "
                    "per agent per minute", per_agent, "req/min",
                    anchor=(f"{GOAGENT_PER_MIN} req/min (13 ask)" if mode == "ask" else
                            f"{GOAGENT_LEGACY_PER_MIN} req/min (legacy loops)"), goal=goal,
                    met=(asks <= 13.0) if mode == "ask" else None,
                    note="; ".join(f"{k} {v / n / mins:.2f}/min"
                                   for k, v in sorted(w["per"].items())))
    secs = per_second(w["reqs"], w["t0"], w["t1"])
    if secs:
        benchlib.figure(BENCH, f"{tag}.idle_peak_ratio", f"{mode} mode, {n} agents idle: "
                        "busiest second / mean", max(secs) / (sum(secs) / len(secs)), "x",
                        note="how unevenly the agents' polls fall on the seconds")
    bpr = sum(w["bytes"].values()) / max(1, w["n"])
    benchlib.figure(BENCH, f"{tag}.bytes_per_req", f"{mode} mode: bytes per request "
                    "(request + response, HTTP headers included)", bpr, "B",
                    note="plain HTTP/1.1 to fakeci; no TLS, TCP or the real gateway's headers")
    cpu_ms = w["server_cpu"] * 1000 / max(1, w["n"])
    benchlib.figure(BENCH, f"{tag}.server_cpu_per_req", f"{mode} mode, {n} agents: fake "
                    "server CPU per request", cpu_ms, "ms",
                    note=f"the Python server (one process, GIL) was busy "
                         f"{100 * w['server_cpu'] / w['secs']:.0f}% of one core")
    benchlib.figure(BENCH, f"{tag}.agent_cpu", f"{mode} mode, {n} agents idle: CPU per "
                    "agent per minute", w["agent_cpu"] * 1000 / n / mins, "ms",
                    note=f"all {n} agents together: {100 * w['agent_cpu'] / w['secs']:.1f}% "
                         f"of one core ({os.cpu_count()} cores)")
    return {"per_min": per_agent, "bytes_per_min": sum(w["bytes"].values()) / n / mins,
            "per": {k: v / n / mins for k, v in w["per"].items()}}


def per_second(reqs: list, start: float, end: float, pick=None) -> list:
    """Requests per whole second in [start, end), optionally only those pick() keeps."""
    out = [0] * max(0, int(end - start))
    for r in reqs:
        i = math.floor(r["t"] - start)
        if 0 <= i < len(out) and (pick is None or pick(r)):
            out[i] += 1
    return out


def outage(fleet: Fleet, n: int, w: dict, args, variant: str) -> bool:
    """Take the server away, queue builds, bring it back; False when work was lost."""
    ci = fleet.ci
    idle_rps = w["n"] / w["secs"]
    idle_poll_rps = sum(v for k, v in w["per"].items() if k in ("ask",) + LEGACY_EPS) / w["secs"]
    nbuilds = max(1, n // 4)
    t_down = time.time()
    if variant == "refused":
        ci.stop()                           # socket closed: connections refused
    else:
        ci.set_hang(True)                   # accepted and read, never answered
    builds = [ci.queue_build(script="true")["buildId"] for _ in range(nbuilds)]
    time.sleep(args.outage)
    t_up = time.time()
    if variant == "refused":
        ci.start()                          # the same port again
    else:
        ci.set_hang(False)
    back = wait_all_asked(fleet, t_up, max(120.0, args.after * 2))
    end = time.monotonic() + max(180.0, args.after * 3)
    while time.monotonic() < end and len(ci.finished) < nbuilds:
        time.sleep(0.5)
    rest = t_up + args.after - time.time()
    if rest > 0:
        time.sleep(rest)
    reqs = ci.requests()
    pre = 30.0
    tag = f"{variant}.n{n}"
    if variant == "refused":
        start = t_down - pre
    else:                               # hung requests arrive, but are not answered
        start = t_down - pre
    total = per_second(reqs, start, t_up + args.after)
    poll = per_second(reqs, start, t_up + args.after, is_poll)
    x0 = -(t_up - start)
    benchlib.series(BENCH, f"reconnect.{tag}", {
        "x": [round(x0 + i, 3) for i in range(len(total))], "y": total, "y_poll": poll,
        "xlabel": "s since the server came back", "ylabel": "requests/s",
        "outage": [round(t_down - t_up, 3), 0.0], "idle_rps": idle_rps,
        "title": f"{n} agents, {args.outage:.0f} s outage ({variant})"})
    k = int(t_up - start)
    first10, first10_poll = total[k:k + 10], poll[k:k + 10]
    peak = max(first10) if first10 else 0
    peak_poll = max(first10_poll) if first10_poll else 0
    how = "connections refused" if variant == "refused" else "requests hang"
    benchlib.figure(BENCH, f"{tag}.peak_ratio", f"{n} agents after a {args.outage:.0f} s "
                    f"outage ({how}): peak requests/s in the first 10 s / idle",
                    peak / idle_rps if idle_rps else 0.0, "x", goal="< 2x",
                    met=peak < 2 * idle_rps,
                    note=(f"peak {peak}/s against {idle_rps:.1f}/s idle; all requests, "
                          f"with the {nbuilds} queued builds' own calls") if peak else
                    "no request at all in the first 10 s: every agent was in its backoff")
    benchlib.figure(BENCH, f"{tag}.peak_ratio_poll", f"{n} agents after the outage "
                    f"({how}): poll calls only, peak/s in the first 10 s / idle",
                    peak_poll / idle_poll_rps if idle_poll_rps else 0.0, "x",
                    goal="< 2x", met=peak_poll < 2 * idle_poll_rps,
                    note=f"peak {peak_poll}/s against {idle_poll_rps:.1f}/s idle")
    after = total[k:]
    benchlib.figure(BENCH, f"{tag}.peak_ratio_after", f"{n} agents after the outage "
                    f"({how}): peak requests/s in the {len(after)} s after the return / idle",
                    max(after) / idle_rps if after and idle_rps else 0.0, "x", goal="< 2x",
                    met=bool(after) and max(after) < 2 * idle_rps,
                    note="with backoff most agents come back after the first 10 s")
    if back is None:
        print(f"fleet: not every agent asked again within the wait ({n} agents)")
    else:
        benchlib.figure(BENCH, f"{tag}.all_back", f"{n} agents: from the server's return "
                        "to every agent having asked again", back, "s",
                        note="the ask period is 5 s")
    pulled = collections.Counter(p.get("buildId") for p in ci.pulled)
    finished = collections.Counter(f.get("buildId") for f in ci.finished)
    pulled_at = [p["pulledAt"] for p in ci.pulled if p.get("buildId") in set(builds)]
    if len(pulled_at) == nbuilds:
        benchlib.figure(BENCH, f"{tag}.all_claimed", f"{n} agents: from the server's "
                        f"return to all {nbuilds} builds queued during the outage claimed",
                        max(pulled_at) - t_up, "s")
    ok = True
    for b in builds:
        if pulled[b] != 1 or finished[b] != 1:
            print(f"fleet: FAILED: build {b} claimed {pulled[b]} times, finished "
                  f"{finished[b]} times (want 1 and 1)")
            ok = False
    print(f"fleet: {nbuilds} builds queued during the outage: "
          f"{'each claimed and finished exactly once' if ok else 'NOT all exactly once'}")
    return ok


def paper(rates: dict) -> None:
    """What 10,000 and 100,000 idle agents cost a server, from per-agent rates."""
    for mode, r in rates.items():
        for fleet in PAPER_FLEETS:
            benchlib.figure(BENCH, f"paper.{mode}.{fleet}.rps", f"on paper: {fleet:,} idle "
                            f"agents in {mode} mode: server requests/s",
                            r["per_min"] * fleet / 60.0, "req/s",
                            note=f"{r['per_min']:.2f} requests per agent per minute")
            benchlib.figure(BENCH, f"paper.{mode}.{fleet}.bytes", f"on paper: {fleet:,} idle "
                            f"agents in {mode} mode: bytes/s on the wire",
                            r["bytes_per_min"] * fleet / 60.0 / 1e6, "MB/s",
                            note="HTTP request + response incl. headers, no TLS or TCP")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,200,400")
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--outage", type=float, default=60.0)
    ap.add_argument("--after", type=float, default=60.0)
    ap.add_argument("--spread", type=float, default=10.0)
    ap.add_argument("--legacy-size", type=int, default=100)
    ap.add_argument("--hang", action="store_true",
                    help="also an outage in which the server answers nothing")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(REPO, "bin", "devopsAgent")):
        print("fleet: build bin/devopsAgent first (make)", file=sys.stderr)
        return 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    benchlib.reset(BENCH)
    t_start = time.monotonic()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    rates, ok, largest = {}, True, 0
    runs = [("ask", n) for n in sizes]
    if args.legacy_size > 0:
        runs.append(("legacy", args.legacy_size))
    for mode, n in runs:
        root = tempfile.mkdtemp(prefix=f"fleet-{mode}-{n}-")
        fleet = Fleet(root, n, ask=(mode == "ask"))
        try:
            fleet.start(args.spread)
            t0 = time.time()
            if wait_all_asked(fleet, t0 - args.spread - 60, 120.0 + n / 10) is None or \
                    fleet.dead():
                print(f"fleet: {len(fleet.dead())} of {n} agents exited or some never "
                      f"asked; {n} agents did not run")
                ok = False
                break
            time.sleep(args.warmup)
            w = idle_window(fleet, args.idle)
            r = report_idle(n, mode, w)
            if mode == "legacy" or "ask" not in rates or n > largest:
                rates[mode] = r
            if mode == "ask":
                ok = outage(fleet, n, w, args, "refused") and ok
                if args.hang:
                    time.sleep(args.warmup)
                    w = idle_window(fleet, args.idle)
                    ok = outage(fleet, n, w, args, "hang") and ok
                if fleet.dead():
                    print(f"fleet: {len(fleet.dead())} agents exited during the run")
                    ok = False
                largest = max(largest, n)
        finally:
            fleet.stop()
            shutil.rmtree(root, ignore_errors=True)
    if largest:
        benchlib.figure(BENCH, "largest", "largest fleet run on this machine", largest,
                        "agents", note=f"{os.cpu_count()} cores, one Python fake server")
    paper(rates)
    print(f"fleet: the run took {time.monotonic() - t_start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
