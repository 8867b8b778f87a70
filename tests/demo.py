#!/usr/bin/python3
"""make demo: the main job, end to end.

1. starts a BK-CI compatible dispatch server (tests/fakeci) on 127.0.0.1;
2. lays out an install directory (build/demo/agent) with a real
   .agent.properties, the three binaries and the worker stand-in as jdk/bin/java;
3. starts devopsDaemon, which starts devopsAgent;
4. queues a build whose steps unpack a copy of this project's sources in the
   job workspace, compile them and run the unit tests;
5. waits for the agent's workerBuildFinish report, prints it with the build
   log and the measured figures, stops daemon and agent, and exits 0 when the
   build succeeded, 1 otherwise.

Usage: tests/demo.py [--timeout SECONDS] [--keep]
"""

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from fakeci.layout import layout_install_dir  # noqa: E402
from fakeci.server import FakeCI  # noqa: E402

SOURCES = ["Makefile", "common", "agent", "daemon", "upgrader", "tests/unit",
           "scripts/dev"]

BUILD_STEPS = """set -e
echo "== workspace: $(pwd)"
echo "== unpacking this project's sources"
tar xzf '{tarball}'
echo "== compiling (make all) and running the unit tests (make unit)"
make -j2 VERSION=demo-build all unit 2>&1
echo "== built: $(ls bin)"
"""


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def make_tarball(path: str) -> None:
    """Pack the project's sources (the working tree) for the build to compile."""
    with tarfile.open(path, "w:gz") as tar:
        for item in SOURCES:
            tar.add(os.path.join(REPO, item), arcname=item,
                    filter=lambda ti: None if "__pycache__" in ti.name else ti)


def read_pid(install: str, name: str) -> int:
    try:
        with open(os.path.join(install, "runtime", f"{name}.pid")) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def wait(predicate, timeout: float, step: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def stop(pid: int, grace: float = 8.0) -> None:
    if pid <= 0 or not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    if not wait(lambda: not alive(pid), grace):
        os.kill(pid, signal.SIGKILL)


def tail(path: str, n: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no file)\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=600, help="build timeout, s")
    ap.add_argument("--keep", action="store_true", help="keep build/demo afterwards")
    args = ap.parse_args()

    root = os.path.join(REPO, "build", "demo")
    install = os.path.join(root, "agent")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)

    ci = FakeCI(project_id="demo-proj", agent_id="demoagent01",
                secret_key="demo-secret-0123456789").start()
    say(f"dispatch server on {ci.url}")
    layout_install_dir(install, ci)
    tarball = os.path.join(root, "project-src.tar.gz")
    make_tarball(tarball)
    say(f"install dir {os.path.relpath(install, REPO)}; sources packed")

    daemon = subprocess.Popen([os.path.join(install, "devopsDaemon")], cwd=install,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    agent_pid = 0
    rc = 1
    try:
        if not wait(lambda: alive(read_pid(install, "agent")) and
                    ci.get_state()["lastStartup"] is not None, 20):
            say("the agent did not start; daemon log:")
            print(tail(os.path.join(install, "logs", "devopsDaemon.log")))
            print(tail(os.path.join(install, "logs", "devopsAgent.log")))
            return 1
        agent_pid = read_pid(install, "agent")
        say(f"daemon {daemon.pid} started agent {agent_pid}; startup acknowledged")
        ci.wait_for("requests", 1, timeout=15, path_contains="thirdPartyAgent/ask")
        mode = "unknown"
        log_path = os.path.join(install, "logs", "devopsAgent.log")
        if wait(lambda: "poll mode: " in open(log_path, errors="replace").read(), 15):
            mode = open(log_path, errors="replace").read().rsplit(
                "poll mode: ", 1)[1].split("\n", 1)[0]
        say(f"poll mode: {mode}")
        idle_rss = rss_kib(agent_pid)

        queued_at = time.time()
        build = ci.queue_build(script=BUILD_STEPS.format(tarball=tarball))
        say(f"queued build {build['buildId']} (compile + unit tests of this project)")
        if not ci.wait_for("finished", 1, timeout=args.timeout):
            say("no finish report in time; agent log:")
            print(tail(os.path.join(install, "logs", "devopsAgent.log"), 30))
            return 1
        steps = [r for r in ci.requests(path_contains="/ms/fakeci/worker/steps")]
        started_at = steps[0]["t"] if steps else None

        report = ci.finished[0]
        report.pop("t", None)
        print("\n---- build log (from the worker) ----")
        for line in ci.log_messages(build["buildId"])[-25:]:
            print("  " + line.rstrip())
        print("---- workerBuildFinish report ----")
        print(json.dumps(report, indent=2, ensure_ascii=False))
        print("---- figures ----")
        if started_at is not None:
            print(f"queued -> worker running: {started_at - queued_at:.2f} s "
                  f"(the agent asks the server every 5 s)")
        print(f"agent idle RSS: {idle_rss} KiB")
        print(f"protocol violations seen by the server: {len(ci.violations)}")
        for v in ci.violations:
            print("  violation:", v)
        print(f"poll mode: {mode}")
        ok = report.get("success") is True and not ci.violations
        say("build SUCCEEDED" if ok else "build FAILED")
        rc = 0 if ok else 1
    finally:
        stop(daemon.pid)
        stop(read_pid(install, "agent"))
        ci.stop()
        if not args.keep and rc == 0:
            shutil.rmtree(root, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
