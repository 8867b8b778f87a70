#!/usr/bin/python3
"""Throughput of the agent's data paths, each beside a baseline of the same run.

output: one task writing --mb MiB of 100-byte lines to stdout
  (`yes <99 x> | head -c N`), run by the agent, against the same producer
  writing to `cat >/dev/null` through a pipe:
  * pipeline: a pipeline COMMAND handed out by the fake BK-CI server; the
    agent streams the output to the task's output.log and keeps a 64 KiB tail.
    Timed by the task's own result.json (durationMs, spawn to end), so the
    0.5 s poll of the test mode is not counted.
  * queue: a Redis queue task (docs/queue.md) on a private redis-server
    (append-only file off, so Redis's fsyncs are not counted); the agent also
    turns the output into JSON log messages in Redis. Timed from the RPUSH to
    the task's done message in the log list.
  The agent's peak RSS (VmHWM) before and after shows memory stays bounded;
  its CPU time (and Redis's) per task shows where the time goes. `cat >file`
  (storing the output, as output.log is) is printed as a second reference.
download: the upgrade download of a --mb MiB devopsAgent file (random bytes)
  with its streamed MD5 check, from the fake server on 127.0.0.1, timed by
  the agent's own log line ("upgrade: downloaded ... (md5 ..., N ms)", curl's
  total time of the transfer), against `curl -o file` + `md5sum file` of the
  same file from the same server. `curl -o /dev/null` alone shows what the
  server gives (it is not the bottleneck when it is well above both).

Every side runs --runs times, interleaved; the medians are reported. A figure
never fails the bench; a task whose output is short, a failed task or a wrong
MD5 does.

Usage: bench/throughput.py [--mb 200] [--runs 5] [--only pipeline,queue,download]
Short try: bench/throughput.py --mb 32 --runs 1
The binaries come from bin/ (or $AGENT_BIN_DIR).
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "bench"))
from fakeci.layout import layout_install_dir, write_properties  # noqa: E402
from fakeci.server import ENV, FakeCI  # noqa: E402
import benchlib  # noqa: E402

BENCH = "throughput"
MIB = 1024 * 1024
QUEUE = "queue_job_task"
LOGS = QUEUE + "_logs"
LINE = "x" * 99     # yes adds the newline: 100-byte lines
DONE_LUA = ("local m = redis.call('LINDEX', KEYS[1], -1) "
            "if m and string.find(m, '\"msg_type\":\"done\"', 1, true) then return m end "
            "return false")


class BenchError(Exception):
    """The work was wrong (not a slow number): the bench fails."""


def producer(nbytes: int) -> str:
    """Shell pipeline writing nbytes of 100-byte lines to its stdout."""
    return f"yes {LINE} | head -c {nbytes}"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds pid has used (itself, not its children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_shell(cmd: str) -> float:
    """Wall seconds of `sh -c cmd`; it must succeed."""
    t0 = time.monotonic()
    subprocess.run(["/bin/sh", "-c", cmd], check=True, timeout=600,
                   stdin=subprocess.DEVNULL)
    return time.monotonic() - t0


def baseline_cat(nbytes: int) -> float:
    """Seconds of the producer writing to `cat >/dev/null` through a pipe."""
    return time_shell(f"{producer(nbytes)} | cat >/dev/null")


def baseline_file(nbytes: int, path: Path) -> float:
    """Seconds of the producer writing to `cat >path` (a file, as output.log is)."""
    try:
        return time_shell(f"{producer(nbytes)} | cat >'{path}'")
    finally:
        path.unlink(missing_ok=True)


def wait_for(pred, timeout: float, what: str):
    """Poll pred every 10 ms until it returns a true value; BenchError at timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise BenchError(f"timed out waiting for {what}")


def mbs(nbytes: int, sec: float) -> float:
    """MB/s (10^6 bytes a second)."""
    return nbytes / 1e6 / sec if sec > 0 else 0.0


def start(install: Path, fast: bool = True):
    """Start the agent; BenchError when it dies at once."""
    p = benchlib.start_agent(str(install), fast=fast)
    time.sleep(0.3)
    if p.poll() is not None:
        raise BenchError(f"the agent in {install} exited at start ({p.returncode})")
    return p


# ------------------------------------------------------------ output: pipeline

def reported(path: Path) -> bool:
    """result.json says the result reached the server."""
    try:
        return json.loads(path.read_text()).get("reported") is True
    except (OSError, ValueError):
        return False


def run_pipeline(root: Path, nbytes: int, runs: int) -> dict:
    """Pipeline tasks of nbytes of output; returns agent/cat seconds and VmHWM."""
    ci = FakeCI().start()
    install = layout_install_dir(root / "pipeline", ci)
    write_properties(install, ci, {"devops.pipeline.enable": "true"})
    p = start(install)
    out = {"agent": [], "cat": [], "file": [], "hwm_before": 0, "hwm_after": 0, "cpu": 0.0}
    try:
        def finished(seq):
            return next((u for u in ci.pipeline_updates
                         if u["seqId"] == seq and u["status"] != "EXECUTING"), None)
        ci.queue_pipeline("echo warm", seq_id="warm")
        wait_for(lambda: finished("warm"), 60, "the warm-up pipeline task")
        out["hwm_before"] = benchlib.status_kb(p.pid, "VmHWM")
        for i in range(runs):
            seq = f"big{i}"
            cpu0 = cpu_s(p.pid)
            ci.queue_pipeline(producer(nbytes), seq_id=seq)
            u = wait_for(lambda: finished(seq), 600, f"pipeline task {seq}")
            out["cpu"] += cpu_s(p.pid) - cpu0
            if u["status"] != "SUCCESS":
                raise BenchError(f"pipeline task {seq} ended {u['status']}")
            task = install / "pipeline_tasks" / seq
            res = json.loads((task / "result.json").read_text())
            if res.get("outputBytes") != nbytes:
                raise BenchError(f"pipeline task {seq}: {res.get('outputBytes')} bytes of "
                                 f"output, want {nbytes}")
            out["agent"].append(res["durationMs"] / 1000.0)
            # 200 MB of output.log: free the disk and the cache once the agent
            # is done with the dir (result.json is rewritten after the report).
            wait_for(lambda: reported(task / "result.json"), 60, f"{seq} marked reported")
            shutil.rmtree(task)
            out["cat"].append(baseline_cat(nbytes))
            out["file"].append(baseline_file(nbytes, install / "cat.out"))
        out["hwm_after"] = benchlib.status_kb(p.pid, "VmHWM")
        if p.poll() is not None:
            raise BenchError("the agent exited during the pipeline runs")
    finally:
        benchlib.stop_agent(p)
        ci.stop()
    return out


# ------------------------------------------------------------ output: queue

def run_queue(root: Path, nbytes: int, runs: int) -> dict:
    """Redis queue tasks of nbytes of output; returns agent/cat seconds and VmHWM."""
    from redisq import RedisServer
    ci = FakeCI().start()
    redis = RedisServer(root / "redis").start()
    c = redis.client()
    c.call("CONFIG", "SET", "appendonly", "no")
    install = layout_install_dir(root / "queue", ci)
    cmd = install / "queue_cmd"
    cmd.mkdir(exist_ok=True)
    (cmd / "spew.sh").write_text(f"#!/bin/sh\n{producer(nbytes)}\n")
    (cmd / "spew.sh").chmod(0o755)
    write_properties(install, ci, {"devops.queue.redis": redis.url,
                                   "devops.queue.parallel": "1"})
    p = start(install)
    out = {"agent": [], "cat": [], "hwm_before": 0, "hwm_after": 0, "cpu": 0.0,
           "redis_cpu": 0.0}
    try:
        log = install / "logs" / "devopsAgent.log"
        wait_for(lambda: log.exists() and "queue: connected to redis" in
                 log.read_text(errors="replace"), 20, "the agent to connect to redis")
        out["hwm_before"] = benchlib.status_kb(p.pid, "VmHWM")
        for i in range(runs):
            tid = f"q{i}"

            def done():
                # Looked at inside Redis: only a done message comes back, so
                # polling does not copy 64 KiB batches out 100 times a second.
                last = c.call("EVAL", DONE_LUA, 1, LOGS)
                return last is not None and f'"id":"{tid}"'.encode() in last
            cpu0, rcpu0 = cpu_s(p.pid), cpu_s(redis.proc.pid)
            t0 = time.monotonic()
            c.call("RPUSH", QUEUE, json.dumps({"id": tid, "type": "start",
                                               "task": {"cmdline": "spew.sh"}}))
            wait_for(done, 600, f"queue task {tid}")
            out["agent"].append(time.monotonic() - t0)
            out["cpu"] += cpu_s(p.pid) - cpu0
            out["redis_cpu"] += cpu_s(redis.proc.pid) - rcpu0
            got, n, k = 0, c.call("LLEN", LOGS), 0
            status = None
            while k < n:
                for m in c.call("LRANGE", LOGS, k, k + 999):
                    msg = json.loads(m)
                    if msg.get("msg_type") == "stdout":
                        got += len(msg["data"].encode())
                    elif msg.get("msg_type") == "done":
                        status = msg["data"]["status"]
                k += 1000
            c.call("DEL", LOGS)
            if status != "success" or got != nbytes:
                raise BenchError(f"queue task {tid}: status {status}, {got} bytes of "
                                 f"stdout messages, want {nbytes}")
            shutil.rmtree(install / "queue_tasks" / tid, ignore_errors=True)
            out["cat"].append(baseline_cat(nbytes))
        out["hwm_after"] = benchlib.status_kb(p.pid, "VmHWM")
        if p.poll() is not None:
            raise BenchError("the agent exited during the queue runs")
    finally:
        benchlib.stop_agent(p)
        c.close()
        redis.stop()
        ci.stop()
    return out


def report_output(name: str, nbytes: int, r: dict) -> None:
    """Figures of one output path."""
    agent, cat = statistics.median(r["agent"]), statistics.median(r["cat"])
    a, b = mbs(nbytes, agent), mbs(nbytes, cat)
    ratio = a / b if b else 0.0
    mb = nbytes // MIB
    how = {"pipeline": "pipeline task (output.log + 64 KiB tail)",
           "queue": "Redis queue task (log messages to Redis + output.log)"}[name]
    benchlib.figure(BENCH, f"{name}.agent_mbs", f"{how}, {mb} MiB of stdout", a, "MB/s",
                    note=f"median of {len(r['agent'])} runs")
    benchlib.figure(BENCH, f"{name}.cat_mbs", f"same producer | cat >/dev/null ({name} run)",
                    b, "MB/s", note="baseline, same run")
    if r.get("file"):
        f = mbs(nbytes, statistics.median(r["file"]))
        benchlib.figure(BENCH, f"{name}.file_mbs", f"same producer | cat >file ({name} run)",
                        f, "MB/s", note="reference: storing the output in a file "
                                        "on the same file system, as output.log is")
    benchlib.figure(BENCH, f"{name}.ratio", f"{name} task output / cat to a pipe", ratio, "x",
                    goal=">= 0.8", met=ratio >= 0.8,
                    note=f"{a:.0f} against {b:.0f} MB/s, {mb} MiB of 100-byte lines")
    benchlib.figure(BENCH, f"{name}.agent_hwm_kib", f"agent peak RSS (VmHWM) after the {name} "
                    f"runs", r["hwm_after"], "KiB",
                    note=f"{r['hwm_before']} KiB before the first big task; "
                         f"{r['hwm_after'] - r['hwm_before']:+d} KiB for {mb} MiB of output")
    runs = len(r["agent"])
    cpu = f"; Redis {r['redis_cpu'] / runs:.2f} s more" if "redis_cpu" in r else ""
    benchlib.figure(BENCH, f"{name}.agent_cpu_s", f"agent CPU per {name} task of {mb} MiB",
                    r["cpu"] / runs, "s", note=f"user + system, mean of {runs} runs{cpu}")
    benchlib.series(BENCH, f"{name}.runs", {"agent_s": r["agent"], "cat_s": r["cat"],
                                            "file_s": r.get("file", []), "bytes": nbytes})


# ------------------------------------------------------------ download

def big_file(path: Path, nbytes: int) -> bytes:
    """nbytes of random data, also written to path."""
    data = bytearray()
    while len(data) < nbytes:
        data += os.urandom(min(MIB, nbytes - len(data)))
    path.write_bytes(data)
    return bytes(data)


def run_download(root: Path, nbytes: int, runs: int) -> dict:
    """Upgrade downloads of an nbytes agent file against curl + md5sum."""
    sfx = "_linux_arm64" if os.uname().machine in ("aarch64", "arm64") else "_linux"
    name = "upgrade/devopsAgent" + sfx
    data = big_file(root / "served.bin", nbytes)
    want = hashlib.md5(data).hexdigest()
    (root / "served.bin").unlink()
    ci = FakeCI().start()
    ci.add_file(name, data)
    del data
    out = {"agent": [], "curl_md5": [], "curl_null": []}
    url = f"{ci.url}{ENV}/upgrade/files/download?file={name}"
    curl = "curl -sSf " + " ".join(f"-H '{k}: {v}'" for k, v in ci.auth_headers().items())
    dest = root / "curl.bin"
    pat = re.compile(r"upgrade: downloaded " + re.escape(name) +
                     r" -> \S+ \(md5 ([0-9a-f]{32}), (\d+) ms\)")
    try:
        for i in range(runs):
            install = layout_install_dir(root / f"upg{i}", ci)
            write_properties(install, ci)
            ci.add_file("upgrade/upgrader" + sfx, (install / "tmp/upgrader").read_bytes())
            ci.add_file("upgrade/devopsDaemon" + sfx, (install / "devopsDaemon").read_bytes())
            ci.set_upgrade(agentVersion="v9.9.9")
            log = install / "logs" / "devopsAgent.log"
            finished = len(ci.upgrade_finishes)
            p = start(install)
            try:
                m = wait_for(lambda: log.exists() and pat.search(
                    log.read_text(errors="replace")), 600, "the agent's upgrade download")
                # The random "agent" is refused; let the attempt's last call
                # (FinishUpgrade) end before the stop, so no request is cut.
                try:
                    wait_for(lambda: len(ci.upgrade_finishes) > finished, 30, "FinishUpgrade")
                    time.sleep(0.2)
                except BenchError:
                    pass
            finally:
                benchlib.stop_agent(p)
                ci.set_upgrade()
            if m.group(1) != want:
                raise BenchError(f"the agent's download has md5 {m.group(1)}, want {want}")
            out["agent"].append(int(m.group(2)) / 1000.0)
            shutil.rmtree(install)
            t = time_shell(f"{curl} -o '{dest}' '{url}' && md5sum '{dest}' >'{dest}.md5'")
            got = (root / "curl.bin.md5").read_text().split()[0]
            if got != want:
                raise BenchError(f"curl + md5sum got md5 {got}, want {want}")
            out["curl_md5"].append(t)
            dest.unlink()
            out["curl_null"].append(time_shell(f"{curl} -o /dev/null '{url}'"))
    finally:
        ci.stop()
    return out


def report_download(nbytes: int, r: dict) -> None:
    """Figures of the download."""
    agent, base = statistics.median(r["agent"]), statistics.median(r["curl_md5"])
    null = statistics.median(r["curl_null"])
    a, b, s = mbs(nbytes, agent), mbs(nbytes, base), mbs(nbytes, null)
    ratio = a / b if b else 0.0
    mb = nbytes // MIB
    benchlib.figure(BENCH, "download.agent_mbs", f"upgrade download + streamed MD5, {mb} MiB",
                    a, "MB/s", note=f"agent's own timing (curl total time), median of "
                                    f"{len(r['agent'])} runs")
    benchlib.figure(BENCH, "download.curl_md5_mbs", "curl -o file + md5sum file", b, "MB/s",
                    note="baseline, same server, same run")
    benchlib.figure(BENCH, "download.server_mbs", "curl -o /dev/null (what the server gives)",
                    s, "MB/s", note="the fake server on 127.0.0.1; above both sides = "
                                    "not the bottleneck")
    benchlib.figure(BENCH, "download.ratio", "upgrade download / curl + md5sum", ratio, "x",
                    goal=">= 0.9", met=ratio >= 0.9,
                    note=f"{a:.0f} against {b:.0f} MB/s, {mb} MiB file")
    benchlib.series(BENCH, "download.runs", {"agent_s": r["agent"], "curl_md5_s": r["curl_md5"],
                                             "curl_null_s": r["curl_null"], "bytes": nbytes})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200, help="MiB of output and of the file (200)")
    ap.add_argument("--runs", type=int, default=5, help="runs of each side (5)")
    ap.add_argument("--only", default="pipeline,queue,download",
                    help="comma list of pipeline, queue, download")
    a = ap.parse_args()
    parts = set(a.only.split(","))
    if a.mb > 255:
        ap.error("--mb above 255: the agent's download cap is 256 MiB")
    if not shutil.which("curl") or not shutil.which("md5sum"):
        print("throughput: needs curl and md5sum", file=sys.stderr)
        return 1
    nbytes = a.mb * MIB
    benchlib.reset(BENCH)
    try:
        with tempfile.TemporaryDirectory(prefix="throughput-bench-") as tmp:
            root = Path(tmp)
            if "pipeline" in parts:
                report_output("pipeline", nbytes, run_pipeline(root, nbytes, a.runs))
            if "queue" in parts:
                if shutil.which("redis-server"):
                    report_output("queue", nbytes, run_queue(root, nbytes, a.runs))
                else:
                    print("throughput: no redis-server: the queue part is SKIPPED",
                          file=sys.stderr)
            if "download" in parts:
                report_download(nbytes, run_download(root, nbytes, a.runs))
    except BenchError as e:
        print(f"throughput: FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
