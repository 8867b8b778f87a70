#!/usr/bin/python3
"""bench/queue_throughput.py - the Redis task queue through one agent.

Starts a private redis-server on 127.0.0.1, a fake BK-CI server and one real
devopsAgent with devops.queue.redis set (docs/queue.md), then measures no-op
tasks per second: N tasks (a script that exits 0) pushed at once, timed from
the first RPUSH to the last done message, for devops.queue.parallel 1 and 4.
The log throughput of a queue task (its output against `cat` through a pipe)
is measured by bench/throughput.py.

Figures are printed and recorded (bench/benchlib.py, bench "queue"), never
asserted.

    usage: queue_throughput.py [-n TASKS]
The binaries come from bin/ (or $AGENT_BIN_DIR).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "integration"))
from fakeci.layout import layout_install_dir, write_properties  # noqa: E402
from fakeci.server import FakeCI  # noqa: E402
from redisq import RedisServer  # noqa: E402
import benchlib  # noqa: E402

BENCH = "queue"

QUEUE = "queue_job_task"
LOGS = QUEUE + "_logs"


def start_agent(install, server, redis, parallel):
    cmd = install / "queue_cmd"
    cmd.mkdir(exist_ok=True)
    (cmd / "noop.sh").write_text("#!/bin/sh\nexit 0\n")
    for p in cmd.iterdir():
        p.chmod(0o755)
    write_properties(install, server, {"devops.queue.redis": redis.url,
                                       "devops.queue.parallel": str(parallel)})
    env = dict(os.environ, DEVOPS_AGENT_TEST_FAST="1")
    proc = subprocess.Popen(["./devopsAgent"], cwd=install, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    log = install / "logs" / "devopsAgent.log"
    deadline = time.time() + 20
    while time.time() < deadline:
        if log.exists() and "queue: connected to redis" in log.read_text(errors="replace"):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the agent did not connect to redis")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def wait_dones(client, want, timeout=600):
    deadline = time.time() + timeout
    seen = 0
    while time.time() < deadline:
        n = client.call("LLEN", LOGS)
        if n > seen:
            for m in client.call("LRANGE", LOGS, seen, n - 1):
                if b'"msg_type":"done"' in m:
                    want -= 1
            seen = n
        if want <= 0:
            return True
        time.sleep(0.01)
    return False


def bench_noop(root, n, parallel):
    server = FakeCI().start()
    redis = RedisServer(root / f"redis-noop-{parallel}").start()
    install = layout_install_dir(root / f"noop-{parallel}", server)
    proc = start_agent(install, server, redis, parallel)
    try:
        c = redis.client()
        msgs = [("RPUSH", QUEUE, json.dumps({"id": f"n{i}", "type": "start",
                                             "task": {"cmdline": "noop.sh"}}))
                for i in range(n)]
        t0 = time.monotonic()
        c.pipeline(msgs)
        ok = wait_dones(c, n)
        dt = time.monotonic() - t0
        if not ok:
            raise SystemExit(f"no-op tasks, parallel {parallel}: not every task "
                             f"reported done within 600 s")
        benchlib.figure(BENCH, f"noop.parallel{parallel}",
                        f"Queue: no-op tasks per second, devops.queue.parallel {parallel}",
                        round(n / dt), "tasks/s",
                        note=f"{n} tasks (a script that exits 0) pushed at once; first "
                        "RPUSH to last done message; private redis-server on loopback")
    finally:
        stop(proc)
        redis.stop()
        server.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=500, help="no-op tasks (500)")
    a = ap.parse_args()
    benchlib.reset(BENCH)
    with tempfile.TemporaryDirectory(prefix="queue-bench-") as tmp:
        root = Path(tmp)
        for parallel in (1, 4):
            bench_noop(root, a.n, parallel)


if __name__ == "__main__":
    main()
