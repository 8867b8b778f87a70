#!/usr/bin/python3
"""make demo: the main job, end to end.

1. starts a BK-CI compatible dispatch server (tests/fakeci) on 127.0.0.1;
2. lays out an install directory (build/demo/agent) with a real
   .agent.properties, the three binaries and the worker stand-in as jdk/bin/java;
3. starts devopsDaemon, which starts devopsAgent;
4. queues a build whose steps unpack a copy of this project's sources in the
   job workspace, compile them and run the unit tests;
5. tells the story as it happens: server up, agent registered, build
   claimed, worker running, the whole build log, the finish report, the
   figures, and where to look next (`devopsAgent status` on the demo
   install);
6. stops everything it started and exits 0 when the build succeeded, 1
   otherwise. build/demo stays for the reader unless --clean is given.

Usage: tests/demo.py [--timeout SECONDS] [--clean]
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


STEPS = 8


def step(n: int, title: str, detail: str = "") -> None:
    """One chapter of the story: '[n/8] title: detail'."""
    print(f"\n[{n}/{STEPS}] {title}" + (f": {detail}" if detail else ""), flush=True)


def log_text(install: str) -> str:
    try:
        with open(os.path.join(install, "logs", "devopsAgent.log"), errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=600, help="build timeout, s")
    ap.add_argument("--clean", action="store_true",
                    help="delete build/demo afterwards (kept by default)")
    ap.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    root = os.path.join(REPO, "build", "demo")
    install = os.path.join(root, "agent")
    rel = os.path.relpath(install, REPO)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)

    ci = FakeCI(project_id="demo-proj", agent_id="demoagent01",
                secret_key="demo-secret-0123456789").start()
    step(1, "server up", f"a BK-CI compatible dispatch server (tests/fakeci) on {ci.url}")
    layout_install_dir(install, ci)
    tarball = os.path.join(root, "project-src.tar.gz")
    make_tarball(tarball)
    print(f"      install dir {rel} (the three binaries, .agent.properties, "
          "the worker stand-in as jdk/bin/java)")

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
        mode = "unknown"
        if wait(lambda: "poll mode: " in log_text(install), 15):
            mode = log_text(install).rsplit("poll mode: ", 1)[1].split("\n", 1)[0]
        step(2, "agent registered", f"devopsDaemon (pid {daemon.pid}) started devopsAgent "
             f"(pid {agent_pid}); the server acknowledged its startup; poll mode {mode}")
        idle_rss = rss_kib(agent_pid)

        queued_at = time.time()
        build = ci.queue_build(script=BUILD_STEPS.format(tarball=tarball))
        key = f"{build['buildId']}_{build['vmSeqId']}"
        print(f"      queued build {build['buildId']} on the server "
              "(compile this project and run its unit tests)")
        if not wait(lambda: f"build {key} claimed" in log_text(install), 30):
            say("the agent did not claim the build; agent log:")
            print(tail(os.path.join(install, "logs", "devopsAgent.log"), 30))
            return 1
        step(3, "build claimed", f"the agent took build {key} in its answer to the server "
             f"{time.time() - queued_at:.1f} s after it was queued")
        if not wait(lambda: f"build {key}: worker started" in log_text(install), 30):
            say("the worker did not start; agent log:")
            print(tail(os.path.join(install, "logs", "devopsAgent.log"), 30))
            return 1
        worker = log_text(install).split(f"build {key}: worker started, ", 1)[1]
        worker = worker.split("\n", 1)[0].replace(" (own cgroup)", ", in a cgroup of its own")
        step(4, "worker running", f"{worker}, in a session of its own; the agent "
             "journals it in runtime/builds/")

        step(5, "log lines", "the worker's build log as the server receives it, whole")
        shown = 0
        end = time.monotonic() + args.timeout
        while time.monotonic() < end:
            lines = ci.log_messages(build["buildId"])
            for line in lines[shown:]:
                print("      | " + line.rstrip(), flush=True)
            shown = len(lines)
            if ci.finished:
                break
            time.sleep(0.5)
        for line in ci.log_messages(build["buildId"])[shown:]:
            print("      | " + line.rstrip())
        if not ci.finished:
            say("no finish report in time; agent log:")
            print(tail(os.path.join(install, "logs", "devopsAgent.log"), 30))
            return 1
        steps = [r for r in ci.requests(path_contains="/ms/fakeci/worker/steps")]
        started_at = steps[0]["t"] if steps else None

        report = ci.finished[0]
        report.pop("t", None)
        step(6, "finish reported", "the agent's workerBuildFinish call")
        for line in json.dumps(report, indent=2, ensure_ascii=False).splitlines():
            print("      " + line)

        step(7, "figures")
        if started_at is not None:
            print(f"      queued -> worker running: {started_at - queued_at:.2f} s "
                  f"(the agent asks the server every 5 s)")
        print(f"      agent idle RSS: {idle_rss} KiB")
        print(f"      protocol violations seen by the server: {len(ci.violations)}")
        for v in ci.violations:
            print("        violation:", v)
        ok = report.get("success") is True and not ci.violations
        rc = 0 if ok else 1

        step(8, "where to look next", f"`devopsAgent status` on the demo install, "
             "while everything still runs")
        st = subprocess.run([os.path.join(install, "devopsAgent"), "status"], cwd=install,
                            capture_output=True, text=True, timeout=60)
        for line in st.stdout.splitlines():
            print("      " + line)
        print(f"      (exit code {st.returncode})")
    finally:
        stop(daemon.pid)
        stop(read_pid(install, "agent"))
        ci.stop()
    print()
    print(f"Everything the demo started is stopped. The install dir stays in {rel}:")
    print(f"  {rel}/logs/devopsAgent.log      the agent's log (devopsDaemon.log: the daemon's)")
    print(f"  {rel}/runtime/status.json       the agent's last state, read by `status`")
    print(f"  {rel}/workspace/                 the build's workspace")
    print(f"  cd {rel} && ./devopsAgent status   (now says the agent is stopped, exit 3)")
    print("Remove it with `rm -rf build/demo`, or run the demo with --clean.")
    if args.clean:
        shutil.rmtree(root, ignore_errors=True)
    say("build SUCCEEDED" if rc == 0 else "build FAILED")
    return rc


if __name__ == "__main__":
    sys.exit(main())
