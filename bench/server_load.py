#!/usr/bin/python3
"""Requests an idle agent sends the server per minute, in ask and legacy mode.

Two agents run side by side with the normal periods (no test knob), each
against its own fake BK-CI server on 127.0.0.1: one server answers the ask
call (a current BK-CI), the other answers it with 404 (a server before ask),
so that agent falls back to the legacy loops. Both have the host-metrics
collector and the pipeline part on, as a GoAgent HEAD has. After a warm-up
that covers the startup and the mode choice, every request in --minutes
minutes is counted per endpoint.

Anchor: GoAgent HEAD sends 13 asks plus its metrics per idle minute (one ask
every 5 s plus the request time). Goal: at most 13 asks a minute in ask
mode, and in legacy mode no more than GoAgent's legacy loops send (a status
check and a build pull every 5 s, a heartbeat every 10 s, an upgrade check
every 20 s, a pipeline poll every 30 s and its metrics twice a minute: 37
a minute).

Prints one line per figure; never fails on a number.

Usage: bench/server_load.py [--minutes 2] [--warmup 15]
"""

import argparse
import collections
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from fakeci.layout import layout_install_dir, write_properties  # noqa: E402
from fakeci.server import FakeCI  # noqa: E402
import benchlib  # noqa: E402
from benchlib import start_agent, stop_agent  # noqa: E402

GOAGENT_ASKS_PER_MIN = 13
BENCH = "server_load"


def endpoint(path: str) -> str:
    """A short name for a request path."""
    if "buildType=" in path:
        return "startup?buildType (build pull)"
    tail = path.split("?")[0].rstrip("/").split("/")
    return "/".join(tail[-2:]) if tail[-1] in ("metrics", "write") else tail[-1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=15.0)
    args = ap.parse_args()
    if not os.path.exists(os.path.join(REPO, "bin", "devopsAgent")):
        print("server_load: build bin/devopsAgent first (make)", file=sys.stderr)
        return 1
    benchlib.reset(BENCH)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="server-load-") as root:
        for mode in ("ask", "legacy"):
            ci = FakeCI().start()
            ci.set_state(askSupported=(mode == "ask"))
            install = os.path.join(root, mode)
            layout_install_dir(install, ci)
            write_properties(install, ci, {"devops.agent.collectorOn": "true",
                                           "devops.pipeline.enable": "true"})
            runs[mode] = (ci, start_agent(install))
        try:
            time.sleep(args.warmup)
            marks = {m: len(ci.requests()) for m, (ci, _) in runs.items()}
            time.sleep(args.minutes * 60)
            for mode, (ci, p) in runs.items():
                if p.poll() is not None:
                    print(f"server_load: the {mode} agent exited ({p.returncode})")
                    return 1
                reqs = ci.requests()[marks[mode]:]
                per = collections.Counter(endpoint(r["path"]) for r in reqs)
                total = len(reqs) / args.minutes
                parts = ", ".join(f"{name} {n / args.minutes:.1f}"
                                  for name, n in sorted(per.items()))
                if mode == "ask":
                    asks = per.get("ask", 0) / args.minutes
                    benchlib.figure(BENCH, "ask.total", "requests per idle minute, ask mode",
                                    round(total, 1), "req/min",
                                    anchor="16 (13 ask, 2 metrics, 1 startup)",
                                    note=f"per endpoint: {parts}")
                    benchlib.figure(BENCH, "ask.asks", "asks per idle minute", round(asks, 1),
                                    "req/min", anchor=str(GOAGENT_ASKS_PER_MIN), goal="<= 13",
                                    met=asks <= GOAGENT_ASKS_PER_MIN)
                else:
                    benchlib.figure(BENCH, "legacy.total",
                                    "requests per idle minute, legacy mode", round(total, 1),
                                    "req/min", anchor="37 (status 12, build pull 12, heartbeat 6, upgrade 3, "
                                    "pipeline 2, metrics 2)",
                                    goal="<= 37", met=total <= 37,
                                    note=f"per endpoint: {parts}")
        finally:
            for ci, p in runs.values():
                stop_agent(p)
                ci.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
