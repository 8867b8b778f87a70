#!/usr/bin/python3
"""Print how fast a claimed container build has its worker running (bench, not a test).

A private dockerd (tests/integration/dockerenv.py: own data root and socket,
the small test image) and the agent against the fake server. --builds
container builds are queued one at a time; for each, the time from the
build being handed out (the ask or pull that carried it) to the worker
inside the container asking the server for its build is measured. The same
run times a bare `docker run --rm --network host <image>` that starts the
same python3 the worker stand-in runs on, --builds times, for comparison:
the difference is what the agent adds (journal, image inspect, create,
start as separate commands, mounts, the init script). Figures are printed
(median and p95) and recorded (bench/benchlib.py, bench "docker"), never
asserted. Needs root and Debian's docker.io.

Usage: bench/docker_pickup.py [--builds 5]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from fakeci.layout import layout_install_dir  # noqa: E402
from fakeci.server import FakeCI  # noqa: E402
import benchlib  # noqa: E402
from benchlib import percentile  # noqa: E402
from dockerenv import INIT_SCRIPT, Dockerd  # noqa: E402

BENCH = "docker"


def docker_build_request_time(ci, agent_id):
    """Time the worker in the container asked for its build (docker_build), or None."""
    for r in ci.requests(path_contains="worker/docker_build"):
        if r["headers"].get("x-devops-agent-id") == agent_id:
            return r["t"]
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--builds", type=int, default=5)
    args = ap.parse_args()
    benchlib.reset(BENCH)

    engine = Dockerd()
    if not engine.start():
        print(f"dockerd cannot run here: {engine.why}", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="docker-pickup-")
    ci = FakeCI().start()
    agent = None
    try:
        image = engine.load_image()
        install = os.path.join(tmp, "agent")
        layout_install_dir(install, ci)
        with open(os.path.join(install, "agent_docker_init.sh"), "w") as f:
            f.write(INIT_SCRIPT)
        os.chmod(os.path.join(install, "agent_docker_init.sh"), 0o755)
        env = dict(engine.env())
        env.pop("DOCKER_CONFIG", None)
        agent = subprocess.Popen(["./devopsAgent"], cwd=install, env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        # Wait until the agent asks for container builds (engine probed).
        end = time.monotonic() + 60
        while time.monotonic() < end and not any(
                a and a["askEnable"]["build"] in ("ALL", "DOCKER") for a in ci.asks()):
            time.sleep(0.1)
        pickup = []
        for i in range(args.builds):
            build = ci.queue_build(script="true", dockerBuildInfo={
                "image": image, "options": {"network": ["host"]}})
            agent_id = build["dockerBuildInfo"]["agentId"]
            end = time.monotonic() + 120
            pulled = None
            while time.monotonic() < end and pulled is None:
                if any(p.get("buildId") == build["buildId"] for p in ci.pulled):
                    pulled = time.time()      # within 10 ms of the hand-out
                time.sleep(0.01)
            while time.monotonic() < end and len(ci.finished) <= i:
                time.sleep(0.05)
            asked = docker_build_request_time(ci, agent_id)
            if pulled is None or asked is None or len(ci.finished) <= i:
                print(f"build {i}: did not run (finished: {ci.finished[-1:]})", file=sys.stderr)
                return 1
            pickup.append(asked - pulled)
        bare = []
        for _ in range(args.builds):
            t0 = time.monotonic()
            subprocess.run(["docker", "run", "--rm", "--network", "host", image,
                            "/usr/bin/python3", "-c", "import urllib.request"],
                           env=engine.env(), check=True, capture_output=True, timeout=120)
            bare.append(time.monotonic() - t0)
        cond = f"{len(pickup)} builds, private dockerd, the small test image"
        for key, name, vals, note in (
                ("claim_to_worker", "claim to worker running in the container", pickup,
                 "the build handed out -> the worker in the container asks for it; " + cond),
                ("bare_run", "bare docker run of the same image", bare,
                 "docker run --rm --network host starting the same python3; the baseline")):
            benchlib.figure(BENCH, f"{key}.median", f"Container: {name}, median",
                            round(statistics.median(vals) * 1000), "ms", note=note)
            benchlib.figure(BENCH, f"{key}.p95", f"Container: {name}, p95",
                            round(percentile(vals, 95) * 1000), "ms")
        benchlib.figure(BENCH, "claim_to_worker.ratio",
                        "Container: pickup against a bare docker run (medians)",
                        round(statistics.median(pickup) / statistics.median(bare), 2), "x",
                        note="what the agent adds: journal, image inspect, create and "
                        "start as separate calls, mounts, the init script")
        return 0
    finally:
        if agent is not None:
            agent.terminate()
            try:
                agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                agent.kill()
        ci.stop()
        engine.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
