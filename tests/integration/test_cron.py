"""The cron task source (docs/cron.md) against a real etcd.

A private etcd (Debian's etcd-server) listens on 127.0.0.1 with free ports
and a temporary data dir; it is started and stopped by the `etcd` fixture.
Jobs are written with etcdctl (Debian's etcd-client) exactly as an operator
would. Agents run with DEVOPS_AGENT_TEST_FAST=1 against fakeci; the job log
is read from logs/cron-jobs.jsonl of each install dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (Agent, cleanup_install_dir, kill_leftovers, layout_install_dir,
                      missing_binaries, wait_until, write_properties)
from redisq import RedisServer, redis_available

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Etcd:
    """One etcd member on 127.0.0.1 with a private data dir."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.client_port}"
        self.proc = None

    def start(self) -> "Etcd":
        log = open(self.data_dir.parent / "etcd.log", "ab")
        self.proc = subprocess.Popen(
            [ETCD, "--name", "t", "--data-dir", str(self.data_dir),
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
             "--initial-cluster", f"t=http://127.0.0.1:{self.peer_port}",
             "--log-level", "warn"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        if not wait_until(lambda: self.ctl("endpoint", "health", check=False).returncode == 0,
                          timeout=20, interval=0.2):
            self.stop()
            pytest.fail("etcd did not become healthy: " +
                        (self.data_dir.parent / "etcd.log").read_text()[-2000:])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def ctl(self, *args, check=True, input=None) -> subprocess.CompletedProcess:
        env = dict(os.environ, ETCDCTL_API="3")
        return subprocess.run([ETCDCTL, "--endpoints", self.endpoint, "--dial-timeout=2s",
                               "--command-timeout=5s", *args],
                              env=env, capture_output=True, text=True, timeout=20,
                              check=check, input=input)

    def put_job(self, name, command, expr, key=None):
        value = json.dumps({"name": name, "command": command, "cronExpr": expr})
        self.ctl("put", key or f"/cron/jobs/{name}", "--", value)

    def get(self, key) -> str | None:
        out = self.ctl("get", key, "--print-value-only").stdout
        return out[:-1] if out.endswith("\n") else (out or None)


@pytest.fixture
def etcd(tmp_path):
    if ETCD is None or ETCDCTL is None:
        pytest.skip("LOUD: etcd-server / etcd-client not installed "
                    "(scripts/dev/install-deps.sh test)")
    server = Etcd(tmp_path / "etcd-data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def agents(tmp_path, fakeci, etcd):
    """Factory: agents(n, **props) -> list of started Agents, each its own install dir."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"C binaries not built: {missing}")
    made = []

    def make(n=1, **props):
        out = []
        for _ in range(n):
            root = layout_install_dir(tmp_path / f"install{len(made)}", fakeci)
            overrides = {"devops.cron.etcd": etcd.endpoint, "devops.cron.utc": "true"}
            overrides.update({k.replace("_", "."): v for k, v in props.items()})
            write_properties(root, fakeci, overrides)
            agent = Agent(root, fast=True).start()
            made.append((root, agent))
            out.append(agent)
        return out

    try:
        yield make
    finally:
        for root, agent in made:
            agent.stop()
            cleanup_install_dir(root)


def records(agent) -> list[dict]:
    path = Path(agent.install_dir) / "logs" / "cron-jobs.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def runs_of(agent, name):
    return [r for r in records(agent) if r["jobName"] == name]


def wait_on(agent, regex, timeout=15):
    return agent.wait_for_log(regex, timeout=timeout)


# ---------------------------------------------------------------- tests

def test_every_second_fires_on_plan_time(etcd, agents):
    (agent,) = agents(1)
    wait_on(agent, r"cron: on:")
    etcd.put_job("tick", "echo plan=$CRON_PLAN_TIME_MS", "* * * * * * *")
    assert wait_until(lambda: len(runs_of(agent, "tick")) >= 4, timeout=20), agent.read_log()[-3000:]
    recs = runs_of(agent, "tick")
    plans = [r["planTime"] for r in recs]
    for r in recs:
        assert r["planTime"] % 1000 == 0
        assert r["err"] == ""
        assert r["output"].strip().endswith(f"plan={r['planTime']}")
        assert r["planTime"] <= r["scheduleTime"] <= r["startTime"] <= r["endTime"]
        assert r["command"] == "echo plan=$CRON_PLAN_TIME_MS"
    # one record per plan time, never two
    assert len(set(plans)) == len(plans)
    # the fired key holds the last plan time, zero-padded
    assert wait_until(lambda: (etcd.get("/cron/fired/tick") or "0").isdigit())
    assert len(etcd.get("/cron/fired/tick")) == 16


def test_overlap_is_skipped_and_the_lease_outlives_its_ttl(etcd, agents):
    (agent,) = agents(1)
    wait_on(agent, r"cron: on:")
    # 6 s of work under a 5 s lease: only the keep-alives keep the lock.
    etcd.put_job("slow", "sleep 6; echo done", "* * * * * * *")
    wait_on(agent, r"cron slow: fire \d+ skipped: the previous run \(\d+\) is still running",
            timeout=20)
    assert wait_until(lambda: runs_of(agent, "slow"), timeout=20)
    etcd.ctl("del", "/cron/jobs/slow")
    rec = runs_of(agent, "slow")[0]
    assert rec["err"] == "" and rec["output"].strip().endswith("done")
    assert rec["endTime"] - rec["startTime"] >= 6000
    assert "lock lost" not in agent.read_log()


def test_job_added_changed_deleted_live(etcd, agents):
    (agent,) = agents(1)
    wait_on(agent, r"cron: on:")
    etcd.put_job("live", "echo one", "* * * * * * *")
    assert wait_until(lambda: any(r["output"].strip().endswith("one")
                                  for r in runs_of(agent, "live")), timeout=15)
    etcd.put_job("live", "echo two", "* * * * * * *")
    wait_on(agent, r"cron live: changed")
    assert wait_until(lambda: any(r["output"].strip().endswith("two")
                                  for r in runs_of(agent, "live")), timeout=15)
    etcd.ctl("del", "/cron/jobs/live")
    wait_on(agent, r"cron live: removed \(key deleted\)")
    time.sleep(1.5)                                   # let a run in flight end and be logged
    count = len(runs_of(agent, "live"))
    time.sleep(2.5)
    assert len(runs_of(agent, "live")) == count


def test_kill_by_killer_key(etcd, agents):
    (agent,) = agents(1)
    wait_on(agent, r"cron: on:")
    etcd.put_job("long", "echo started; sleep 60", "* * * * * * *")
    wait_on(agent, r"cron long: running fire", timeout=15)
    etcd.ctl("del", "/cron/jobs/long")               # no new fire after this run
    etcd.ctl("put", "/cron/killer/long", "")
    assert wait_until(lambda: runs_of(agent, "long"), timeout=15), agent.read_log()[-3000:]
    rec = runs_of(agent, "long")[0]
    assert rec["err"] == "killed on request (killer key)"
    assert "started" in rec["output"]
    assert rec["endTime"] - rec["startTime"] < 30000
    # the lock was released at the end of the run
    assert wait_until(lambda: etcd.get("/cron/lock/long") is None, timeout=10)


def test_hostile_job_values(etcd, agents):
    (agent,) = agents(1)
    wait_on(agent, r"cron: on:")
    etcd.ctl("put", "/cron/jobs/bad1", "{not json")
    etcd.put_job("bad2", "echo x", "61 * * * *")
    etcd.put_job("bad3", "   ", "* * * * * * *")
    etcd.put_job("other", "echo x", "* * * * * * *", key="/cron/jobs/bad4")
    etcd.put_job("../x", "echo x", "* * * * * * *", key="/cron/jobs/../x")
    etcd.ctl("put", "/cron/jobs/bad5", json.dumps({"name": "bad5", "command": "x" * 70000,
                                                   "cronExpr": "* * * * *"}))
    etcd.put_job("bad6", "echo x", "0 0 L * *")
    etcd.put_job("good", "echo fine", "* * * * * * *")
    for key, why in [("bad1", "not a JSON object"), ("bad2", "out of range"),
                     ("bad3", "command"), ("bad4", "differs from the key"),
                     ("\\.\\./x", "name"), ("bad5", "larger than"), ("bad6", "not supported")]:
        wait_on(agent, rf"cron: job key /cron/jobs/{key} refused: .*{why}")
    assert wait_until(lambda: runs_of(agent, "good"), timeout=15)
    names = {r["jobName"] for r in records(agent)}
    assert names == {"good"}
    assert agent.running


def test_log_batching_by_count(etcd, agents):
    (agent,) = agents(1, devops_cron_log_batch="3", devops_cron_log_commit_ms="600000")
    wait_on(agent, r"cron: on:")
    etcd.put_job("b", "true", "* * * * * * *")
    wait_on(agent, r"cron log: wrote 3 record\(s\)", timeout=20)
    # records only ever arrive three at a time
    for _ in range(10):
        assert len(records(agent)) % 3 == 0
        time.sleep(0.2)


def test_log_batching_by_time(etcd, agents):
    (agent,) = agents(1, devops_cron_log_batch="1000", devops_cron_log_commit_ms="1500")
    wait_on(agent, r"cron: on:")
    etcd.put_job("t", "true", "* * * * * * *")
    m = wait_on(agent, r"cron log: wrote (\d+) record\(s\)", timeout=20)
    assert 1 <= int(m.group(1)) < 1000
    assert records(agent)


def test_three_agents_each_fire_once(etcd, agents):
    """60 fires (four every-second jobs, so about 15 s) raced by three agents:
    each runs on exactly one agent."""
    trio = agents(3)
    for a in trio:
        wait_on(a, r"cron: on:")
    names = [f"once{i}" for i in range(4)]
    for name in names:
        etcd.put_job(name, "echo $CRON_JOB_NAME $CRON_PLAN_TIME_MS", "* * * * * * *")

    def fires():
        return [(r["jobName"], r["planTime"]) for a in trio for r in records(a)]

    assert wait_until(lambda: len(fires()) >= 60, timeout=60, interval=0.5), \
        [a.read_log()[-2000:] for a in trio]
    for name in names:
        etcd.ctl("del", f"/cron/jobs/{name}")
    time.sleep(2.5)                                   # runs in flight end and are logged
    done = fires()
    assert len(done) >= 60
    assert len(done) == len(set(done)), "a fire ran on two agents"
    assert all(r["err"] == "" and r["output"].split() == [r["jobName"], str(r["planTime"])]
               for a in trio for r in records(a))
    # every agent saw the others win: the race was real
    assert sum("locked or already run by another agent" in a.read_log() for a in trio) >= 2


def lock_lease(etcd, name):
    """Lease id holding /cron/lock/<name>, or None when the key is absent."""
    out = json.loads(etcd.ctl("get", f"/cron/lock/{name}", "-w", "json").stdout)
    kvs = out.get("kvs") or []
    return kvs[0].get("lease") if kvs else None


def test_kill9_of_lock_holder_keeps_the_lock_until_the_lease_expires(etcd, agents):
    pair = agents(2, devops_cron_lock_ttl_sec="3")
    for a in pair:
        wait_on(a, r"cron: on:")
    etcd.put_job("hold", "sleep 30", "* * * * * * *")
    pattern = re.compile(r"cron hold: running fire \d+ \(lock held, lease (\d+)\)")
    holder = wait_until(lambda: next((a for a in pair if pattern.search(a.read_log())), None),
                        timeout=15)
    assert holder
    lease = int(pattern.search(holder.read_log()).group(1))
    other = pair[1] if holder is pair[0] else pair[0]
    assert lock_lease(etcd, "hold") == lease
    os.kill(holder.pid, signal.SIGKILL)
    # Until etcd drops the dead agent's lease, its lock stands and the other
    # agent, which tries every second, never runs the job.
    while True:
        ran = pattern.search(other.read_log())
        held = lock_lease(etcd, "hold")
        if held != lease:
            break
        assert ran is None, "ran while the killed agent's lease still held the lock"
        time.sleep(0.1)
    assert wait_until(lambda: pattern.search(other.read_log()), timeout=15)
    assert int(pattern.search(other.read_log()).group(1)) != lease
    kill_leftovers(holder.install_dir)               # the killed agent's own sleep


def test_etcd_restarted(etcd, agents):
    (agent,) = agents(1)
    wait_on(agent, r"cron: on:")
    etcd.put_job("r", "true", "* * * * * * *")
    assert wait_until(lambda: runs_of(agent, "r"), timeout=15)
    etcd.stop()
    wait_on(agent, r"cron r: fire \d+ skipped: (no lease|no lock|etcd unreachable)", timeout=15)
    n = len(runs_of(agent, "r"))
    time.sleep(1.5)                                   # no lock, no run
    before = len(runs_of(agent, "r"))
    assert before <= n + 1
    etcd.start()
    assert wait_until(lambda: len(runs_of(agent, "r")) > before + 1, timeout=40), \
        agent.read_log()[-3000:]
    assert agent.running


def test_compacted_watch_lists_again_without_double_fires(etcd, agents):
    (agent,) = agents(1)
    wait_on(agent, r"cron: on:")
    etcd.put_job("c", "echo v1", "* * * * * * *")
    assert wait_until(lambda: runs_of(agent, "c"), timeout=15)
    # Freeze the agent, break its watch (etcd restart), change the job and
    # compact the history the agent would resume from.
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        etcd.stop()
        etcd.start()
        etcd.put_job("c", "echo v2", "* * * * * * *")
        rev = json.loads(etcd.ctl("get", "/cron/jobs/c", "-w", "json").stdout)["header"]["revision"]
        etcd.ctl("compact", str(rev))
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    wait_on(agent, r"cron: watch from revision \d+ was compacted; listing again", timeout=30)
    assert wait_until(lambda: any(r["output"].strip().endswith("v2") for r in runs_of(agent, "c")),
                      timeout=20), agent.read_log()[-3000:]
    plans = [r["planTime"] for r in runs_of(agent, "c")]
    assert len(plans) == len(set(plans))


def test_restart_never_runs_a_fire_twice(etcd, agents):
    (agent,) = agents(1)
    wait_on(agent, r"cron: on:")
    etcd.put_job("again", "sleep 1.5; echo $CRON_PLAN_TIME_MS", "* * * * * * *")
    wait_on(agent, r"cron again: running fire", timeout=15)
    os.kill(agent.pid, signal.SIGKILL)                 # mid-run, nothing logged yet
    agent.wait(10)
    kill_leftovers(agent.install_dir)
    state = json.loads((Path(agent.install_dir) / "cron_tasks" / "cron-state.json").read_text())
    last = state["again"]
    second = Agent(agent.install_dir, fast=True).start()
    try:
        wait_on(second, r"cron cron-again-\d+: logging the result left by the previous agent")
        assert wait_until(lambda: len(runs_of(second, "again")) >= 3, timeout=20)
        recs = runs_of(second, "again")
        assert recs[0]["planTime"] == last and "interrupted" in recs[0]["err"]
        plans = [r["planTime"] for r in recs]
        assert len(plans) == len(set(plans))
        assert all(p > last for p in plans[1:])
    finally:
        second.stop()


def test_silent_etcd_never_blocks_the_bk_ci_loops(tmp_path, fakeci):
    """An etcd endpoint that accepts connections and never answers: the
    server poll goes on at its pace while every cron call times out."""
    if missing_binaries():
        pytest.skip("C binaries not built")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)                                  # accepted by the kernel, never read
    root = layout_install_dir(tmp_path / "install", fakeci)
    write_properties(root, fakeci, {"devops.cron.etcd": f"127.0.0.1:{silent.getsockname()[1]}"})
    agent = Agent(root, fast=True).start()
    try:
        agent.wait_for_log(r"cron: on:", timeout=10)
        before = fakeci.count("requests", "/ask")
        assert fakeci.wait_for("requests", before + 3, timeout=20, path_contains="/ask")
        agent.wait_for_log(r"cron: etcd http://127\.0\.0\.1:\d+: .*; listing the jobs again in \d+ ms",
                           timeout=20)
        assert agent.running
    finally:
        agent.stop()
        silent.close()
        cleanup_install_dir(root)


def test_list_in_pages_survives_huge_values(etcd, tmp_path, agents):
    """Twenty quiet jobs, three values of 1.4 MB (near etcd's request limit)
    and one every-second job, all there before the agent starts: the list
    reads them in pages, refuses the huge ones by name and runs the rest."""
    for i in range(20):
        etcd.put_job(f"quiet{i:02d}", "true", "@yearly")
    huge = json.dumps({"name": "x", "command": "y" * 1_400_000, "cronExpr": "* * * * *"})
    for i in range(3):
        etcd.ctl("put", f"/cron/jobs/huge{i}", input=huge)
    etcd.put_job("zz-good", "echo ok", "* * * * * * *")
    (agent,) = agents(1)
    wait_on(agent, r"cron: 24 job key\(s\) at revision \d+")
    for i in range(3):
        wait_on(agent, rf"cron: job key /cron/jobs/huge{i} refused: value of \d+ bytes is larger")
    assert len(re.findall(r"cron quiet\d\d: added", agent.read_log())) == 20
    assert wait_until(lambda: runs_of(agent, "zz-good"), timeout=15)


# ---------------------------------------------------------------- Redis stream sink

STREAM = "devops:cron:log"
FIELDS = ["jobName", "command", "err", "output", "planTime", "scheduleTime",
          "startTime", "endTime"]


@pytest.fixture
def redis(tmp_path):
    why = redis_available()
    if why:
        pytest.skip(f"LOUD: REDIS STREAM TESTS SKIPPED: {why}")
    server = RedisServer(tmp_path / "redis", password="cron-stream-pw").start()
    try:
        yield server
    finally:
        server.stop()


def stream_records(redis, key=STREAM) -> list[dict]:
    """Every entry of the stream as a dict of its fields (decoded text)."""
    c = redis.client()
    try:
        entries = c.call("XRANGE", key, "-", "+") or []
    finally:
        c.close()
    out = []
    for _id, flat in entries:
        pairs = [x.decode() for x in flat]
        out.append(dict(zip(pairs[0::2], pairs[1::2])))
    return out


def as_stream(rec: dict) -> dict:
    """A JSONL record as the stream holds it: every member as text."""
    return {k: v if isinstance(v, str) else str(int(v)) for k, v in rec.items()}


def test_job_log_reaches_the_redis_stream(etcd, agents, redis):
    (agent,) = agents(1, devops_queue_redis=redis.url, devops_cron_log_commit_ms="300")
    wait_on(agent, r"cron: on: .*job log to jsonl logs/cron-jobs\.jsonl and redis stream "
            r"devops:cron:log on 127\.0\.0\.1:\d+ db 0")
    wait_on(agent, r"cron log: redis stream devops:cron:log on 127\.0\.0\.1:\d+ db 0: connected")
    etcd.put_job("s", "echo out-$CRON_PLAN_TIME_MS; exit 3", "* * * * * * *")
    assert wait_until(lambda: len(stream_records(redis)) >= 3, timeout=20), agent.read_log()[-3000:]
    etcd.ctl("del", "/cron/jobs/s")
    time.sleep(1.5)                                   # the last run ends and is committed
    assert wait_until(lambda: len(stream_records(redis)) == len(runs_of(agent, "s")), timeout=10)
    got = stream_records(redis)
    for entry in got:
        assert list(entry) == FIELDS                  # the note's fields, in its order
        assert entry["err"] == "exit status 3"
        assert entry["output"].strip() == f"out-{entry['planTime']}"
    assert got == [as_stream(r) for r in runs_of(agent, "s")]
    assert "cron-stream-pw" not in agent.read_log()


def test_redis_down_jsonl_keeps_every_record_and_the_stream_catches_up(etcd, agents, redis):
    (agent,) = agents(1, devops_queue_redis=redis.url, devops_cron_log_commit_ms="200")
    wait_on(agent, r"cron log: redis stream devops:cron:log .*: connected")
    etcd.put_job("d", "echo $CRON_PLAN_TIME_MS", "* * * * * * *")
    assert wait_until(lambda: stream_records(redis), timeout=20), agent.read_log()[-3000:]
    redis.stop()
    wait_on(agent, r"cron log: redis stream devops:cron:log on 127\.0\.0\.1:\d+: .*; "
            r"\d+ record\(s\) wait, connecting again in \d+ ms")
    down = len(runs_of(agent, "d"))
    # the JSONL file goes on while Redis is away
    assert wait_until(lambda: len(runs_of(agent, "d")) >= down + 3, timeout=15)
    redis.start()
    wait_on(agent, r"cron log: redis stream devops:cron:log .*: connected again")
    etcd.ctl("del", "/cron/jobs/d")
    time.sleep(1.5)                                   # the last run ends and is committed
    want = {(r["jobName"], r["planTime"]) for r in runs_of(agent, "d")}
    plans = [r["planTime"] for r in runs_of(agent, "d")]
    assert len(plans) == len(set(plans))              # the JSONL file has each run once

    def in_stream():
        return {(e["jobName"], int(e["planTime"])) for e in stream_records(redis)}

    assert wait_until(lambda: in_stream() == want, timeout=15), (sorted(want - in_stream()),
                                                                agent.read_log()[-3000:])
    assert len(want) >= down + 3
    assert agent.running


def test_silent_redis_never_blocks_the_job_log_or_the_bk_ci_loops(etcd, agents, fakeci):
    """A Redis address that accepts connections and never answers: the XADD
    batch is given up after 5 s and the connection dropped, while the JSONL
    file and the server poll go on."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)                                  # accepted by the kernel, never read
    try:
        (agent,) = agents(1, devops_queue_redis=f"redis://127.0.0.1:{silent.getsockname()[1]}",
                          devops_cron_log_commit_ms="200")
        wait_on(agent, r"cron log: redis stream devops:cron:log .*: connected")
        etcd.put_job("q", "true", "* * * * * * *")
        assert wait_until(lambda: runs_of(agent, "q"), timeout=15)
        before = fakeci.count("requests", "/ask")
        wait_on(agent, r"cron log: redis stream devops:cron:log on 127\.0\.0\.1:\d+: no answer "
                r"within 5000 ms; \d+ record\(s\) wait", timeout=20)
        assert fakeci.wait_for("requests", before + 3, timeout=20, path_contains="/ask")
        n = len(runs_of(agent, "q"))
        assert wait_until(lambda: len(runs_of(agent, "q")) >= n + 2, timeout=10)
        assert agent.running
    finally:
        silent.close()
