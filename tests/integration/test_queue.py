"""Tasks from a Redis queue (docs/queue.md).

A real redis-server (Debian's) runs on 127.0.0.1 and a private port for each
test; the real devopsAgent runs against fakeci with devops.queue.redis set.
Tasks are submitted as a script would (RPUSH of the task message) and the
outcome is read back from the log list.
"""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import Agent, wait_until, write_properties
from fakeci.layout import layout_install_dir
from fakeci.server import FakeCI
from conftest import AGENT_ID, PROJECT_ID, SECRET_KEY, cleanup_install_dir
from redisq import RedisServer, redis_available

QUEUE = "queue_job_task"
LOGS = QUEUE + "_logs"
CONTROL = QUEUE + "_control"
DEAD = QUEUE + "_dead"
PASSWORD = "s3cret-redis-pw"

SCRIPTS = {
    "ok.sh": "#!/bin/sh\necho hello \"$@\"\necho oops >&2\nexit 0\n",
    "fail.sh": "#!/bin/sh\necho failing\nexit 3\n",
    "sleep.sh": "#!/bin/sh\necho sleeping\nexec sleep \"$1\"\n",
    # Appends its id to a file (one line per run), then sleeps $3 seconds.
    "count.sh": "#!/bin/sh\necho \"$1\" >> \"$2\"\n[ -n \"$3\" ] && exec sleep \"$3\"\nexit 0\n",
    "lines.sh": "#!/bin/sh\ni=1\nwhile [ $i -le $1 ]; do echo \"line $i\"; "
                "if [ $((i % 500)) -eq 0 ]; then echo \"err $i\" >&2; fi; i=$((i+1)); done\n",
}


@pytest.fixture
def redis(tmp_path):
    why = redis_available()
    if why:
        pytest.skip(f"REDIS TESTS SKIPPED: {why}")
    server = RedisServer(tmp_path / "redis", password=PASSWORD).start()
    try:
        yield server
    finally:
        server.stop()


def setup_cmd_dir(install_dir: Path) -> Path:
    cmd = Path(install_dir) / "queue_cmd"
    cmd.mkdir(exist_ok=True)
    for name, text in SCRIPTS.items():
        p = cmd / name
        p.write_text(text)
        p.chmod(0o755)
    return cmd


def start_agent(install_dir, fakeci, redis, **props):
    setup_cmd_dir(install_dir)
    overrides = {"devops.queue.redis": redis.url, "devops.queue.parallel": "4"}
    overrides.update(props)
    write_properties(install_dir, fakeci, overrides)
    agent = Agent(install_dir, fast=True).start()
    agent.wait_for_log(r"queue: connected to redis", timeout=15)
    return agent


def task(id_, cmdline, args=None, timeout=None, type_="start"):
    t = {"cmdline": cmdline}
    if args is not None:
        t["cmd_args"] = args
    if timeout is not None:
        t["timeout"] = timeout
    return json.dumps({"id": id_, "type": type_, "tube": "task_list", "task": t})


def log_messages(client):
    return [json.loads(m) for m in client.call("LRANGE", LOGS, 0, -1)]


def dones(client):
    return {m["id"]: m for m in log_messages(client) if m["msg_type"] == "done"}


def wait_done(client, ids, agent=None, timeout=30):
    ids = set(ids)
    ok = wait_until(lambda: ids <= set(dones(client)), timeout=timeout)
    if not ok:
        tail = agent.read_log()[-3000:] if agent else ""
        raise AssertionError(f"no done for {sorted(ids - set(dones(client)))}\n{tail}")
    return dones(client)


def processing_lists(client):
    return [k for k in client.call("KEYS", QUEUE + "_processing_*")]


def assert_processing_empty(client, timeout=5):
    """Every processing list empties. The agent drops a task from its list
    only on the reply to its done message, so a test that has just seen the
    done waits a moment for the LREM."""
    def empty():
        return all(client.call("LLEN", k) == 0 for k in processing_lists(client))
    if not wait_until(empty, timeout=timeout):
        left = {k: client.call("LRANGE", k, 0, -1) for k in processing_lists(client)}
        raise AssertionError(f"processing lists not empty after {timeout} s: {left}")


def test_success_failure_timeout(install_dir, fakeci, redis):
    agent = start_agent(install_dir, fakeci, redis)
    c = redis.client()
    c.call("RPUSH", QUEUE, task("t-ok", "ok.sh", ["a b", "$HOME"], timeout=0))
    c.call("RPUSH", QUEUE, task("t-fail", "fail.sh"))
    c.call("RPUSH", QUEUE, task("t-slow", "sleep.sh", ["30"], timeout=1))
    d = wait_done(c, ["t-ok", "t-fail", "t-slow"], agent)
    assert d["t-ok"]["data"]["status"] == "success"
    assert d["t-ok"]["data"]["exit_code"] == 0
    assert d["t-ok"]["type"] == "start"
    assert d["t-fail"]["data"]["status"] == "failed"
    assert d["t-fail"]["data"]["exit_code"] == 3
    assert d["t-slow"]["data"]["status"] == "timeout"
    msgs = [m for m in log_messages(c) if m["id"] == "t-ok"]
    out = "".join(m["data"] for m in msgs if m["msg_type"] == "stdout")
    err = "".join(m["data"] for m in msgs if m["msg_type"] == "stderr")
    # cmd_args are argv words: no shell joined or expanded them.
    assert out == "hello a b $HOME\n"
    assert err == "oops\n"
    assert msgs[-1]["msg_type"] == "done"
    assert_processing_empty(c)
    # The outcome persists on disk (done flag) and the password stays secret.
    res = json.loads((Path(install_dir) / "queue_tasks" / "t-fail" / "result.json").read_text())
    assert res["status"] == "FAILURE"
    assert PASSWORD not in agent.read_log()
    with open(f"/proc/{agent.pid}/cmdline", "rb") as fh:
        assert PASSWORD.encode() not in fh.read()
    agent.stop()


def test_kill(install_dir, fakeci, redis):
    agent = start_agent(install_dir, fakeci, redis)
    c = redis.client()
    c.call("RPUSH", QUEUE, task("k1", "sleep.sh", ["60"]))
    agent.wait_for_log(r"queue: task k1 started", timeout=15)
    c.call("RPUSH", CONTROL, json.dumps({"id": "nobody", "type": "kill"}))
    agent.wait_for_log(r"kill of task nobody: not running here", timeout=15)
    c.call("RPUSH", CONTROL, json.dumps({"id": "k1", "type": "kill"}))
    d = wait_done(c, ["k1"], agent, timeout=20)
    assert d["k1"]["data"]["status"] == "killed"
    assert c.call("LLEN", CONTROL) == 0
    assert_processing_empty(c)
    agent.stop()


def second_agent(tmp_path, redis, name, **props):
    """Another agent with its own install dir, agent id and fake server."""
    server = FakeCI(project_id=PROJECT_ID, agent_id=AGENT_ID, secret_key=SECRET_KEY).start()
    path = layout_install_dir(tmp_path / name, server)
    return server, path


def test_two_agents_share_200_tasks(install_dir, fakeci, redis, tmp_path):
    marks = tmp_path / "runs.txt"
    server2, dir2 = second_agent(tmp_path, redis, "install2")
    try:
        a1 = start_agent(install_dir, fakeci, redis)
        a2 = start_agent(dir2, server2, redis, **{"devops.agent.id": "second-agent"})
        c = redis.client()
        ids = [f"n{i}" for i in range(200)]
        c.pipeline([("RPUSH", QUEUE, task(i, "count.sh", [i, str(marks)])) for i in ids])
        d = wait_done(c, ids, a1, timeout=90)
        assert all(d[i]["data"]["status"] == "success" for i in ids)
        runs = marks.read_text().split()
        assert sorted(runs) == sorted(ids), "every task ran exactly once"
        done_count = sum(1 for m in log_messages(c) if m["msg_type"] == "done")
        assert done_count == 200
        assert_processing_empty(c)
        took1 = len(list((Path(install_dir) / "queue_tasks").iterdir()))
        took2 = len(list((Path(dir2) / "queue_tasks").iterdir()))
        assert took1 + took2 == 200
        print(f"agent 1 ran {took1}, agent 2 ran {took2}")
        a2.stop()
        a1.stop()
    finally:
        cleanup_install_dir(dir2)
        server2.stop()


def test_kill9_mid_task_never_runs_twice(install_dir, fakeci, redis, tmp_path):
    marks = tmp_path / "runs.txt"
    agent = start_agent(install_dir, fakeci, redis)
    c = redis.client()
    c.call("RPUSH", QUEUE, task("crash1", "count.sh", ["crash1", str(marks), "60"]))
    assert wait_until(lambda: marks.exists() and marks.read_text().strip(), timeout=15)
    os.kill(agent.pid, signal.SIGKILL)
    agent.proc.wait(5)
    assert c.call("LLEN", processing_lists(c)[0]) == 1
    agent = Agent(install_dir, fast=True).start()
    d = wait_done(c, ["crash1"], agent, timeout=30)
    assert d["crash1"]["data"]["status"] == "failed"
    assert "interrupted" in d["crash1"]["data"]["error"]
    time.sleep(1.5)     # a second run or a second report would show now
    assert marks.read_text().split() == ["crash1"]
    assert sum(1 for m in log_messages(c) if m["msg_type"] == "done") == 1
    assert_processing_empty(c)
    agent.stop()


def test_redis_restart_mid_run(install_dir, fakeci, redis):
    agent = start_agent(install_dir, fakeci, redis)
    c = redis.client()
    c.call("RPUSH", QUEUE, task("r1", "sleep.sh", ["2"]))
    agent.wait_for_log(r"queue: task r1 started", timeout=15)
    c.close()
    redis.stop()
    agent.wait_for_log(r"queue: redis connection lost", timeout=15)
    time.sleep(2.5)     # r1 ends while redis is away
    redis.start()
    c = redis.client()
    c.call("RPUSH", QUEUE, task("r2", "ok.sh"))
    d = wait_done(c, ["r1", "r2"], agent, timeout=40)
    assert d["r1"]["data"]["status"] == "success"
    assert d["r2"]["data"]["status"] == "success"
    assert sum(1 for m in log_messages(c) if m["msg_type"] == "done") == 2
    assert_processing_empty(c)
    assert agent.running
    agent.stop()


def test_hostile_messages(install_dir, fakeci, redis):
    agent = start_agent(install_dir, fakeci, redis)
    c = redis.client()
    outside = Path(install_dir) / "outside.sh"
    outside.write_text("#!/bin/sh\necho escaped\n")
    outside.chmod(0o755)
    (Path(install_dir) / "queue_cmd" / "link.sh").symlink_to(outside)
    bad_with_id = {
        "h-notask": json.dumps({"id": "h-notask", "type": "start"}),
        "h-escape": task("h-escape", "../outside.sh"),
        "h-abs": task("h-abs", "/bin/sh", ["-c", "echo pwned"]),
        "h-link": task("h-link", "link.sh"),
        "h-args": json.dumps({"id": "h-args", "task": {"cmdline": "ok.sh", "cmd_args": [1]}}),
        "h-timeout": json.dumps({"id": "h-timeout", "task": {"cmdline": "ok.sh",
                                                             "timeout": "soon"}}),
        "h-blank": task("h-blank", "   "),
        "h-huge": json.dumps({"id": "h-huge", "task": {"cmdline": "ok.sh",
                                                       "cmd_args": ["x" * 300000]}}),
        "h-missing": task("h-missing", "nosuch.sh"),
    }
    dead = ["not json", "[1,2]", json.dumps({"id": "../etc", "task": {}}),
            "\x00\xff\xfe garbage", json.dumps({"task": {"cmdline": "ok.sh"}})]
    c.pipeline([("RPUSH", QUEUE, m) for m in list(bad_with_id.values()) + dead])
    c.call("RPUSH", QUEUE, task("h-good", "ok.sh"))
    d = wait_done(c, list(bad_with_id) + ["h-good"], agent)
    for id_ in bad_with_id:
        assert d[id_]["data"]["status"] == "failed", (id_, d[id_])
        assert d[id_]["data"]["error"], id_
    assert "leaves" in d["h-escape"]["data"]["error"]
    assert d["h-good"]["data"]["status"] == "success"
    assert wait_until(lambda: c.call("LLEN", DEAD) == len(dead), timeout=10)
    assert not any("escaped" in m.get("data", "") or "pwned" in m.get("data", "")
                   for m in log_messages(c) if m["msg_type"] != "done")
    c.call("RPUSH", CONTROL, "not json either")
    c.call("RPUSH", QUEUE, task("h-after", "ok.sh"))
    wait_done(c, ["h-after"], agent)
    assert agent.running
    assert_processing_empty(c)
    agent.stop()


def test_log_order_within_a_task(install_dir, fakeci, redis):
    agent = start_agent(install_dir, fakeci, redis)
    c = redis.client()
    c.call("RPUSH", QUEUE, task("lines", "lines.sh", ["20000"]))
    wait_done(c, ["lines"], agent)
    msgs = [m for m in log_messages(c) if m["id"] == "lines"]
    assert msgs[-1]["msg_type"] == "done"
    assert [m["msg_type"] for m in msgs].count("done") == 1
    out = "".join(m["data"] for m in msgs if m["msg_type"] == "stdout").splitlines()
    assert out == [f"line {i}" for i in range(1, 20001)]
    err = "".join(m["data"] for m in msgs if m["msg_type"] == "stderr").splitlines()
    assert err == [f"err {i}" for i in range(500, 20001, 500)]
    # Batched: far fewer messages than lines, none above 64 KiB.
    assert len(msgs) < 2000
    assert all(len(m["data"].encode()) <= 64 * 1024 for m in msgs if m["msg_type"] != "done")
    agent.stop()


def test_log_data_is_clean_utf8(install_dir, fakeci, redis):
    """Output bytes reach the log messages as valid UTF-8: ASCII runs, 2- to
    4-byte characters, a character split across the 64 KiB batch boundary
    (never split between messages), control bytes; an invalid byte and a NUL
    become U+FFFD."""
    agent = start_agent(install_dir, fakeci, redis)
    script = Path(install_dir) / "queue_cmd" / "bytes.sh"
    script.write_text("#!/bin/sh\n"
                      "printf 'abcdefghijklmnop\\303\\251\\342\\202\\254\\360\\237\\230\\200"
                      "\\377\\000q\\001\\tz\\n'\n"
                      "head -c 65503 /dev/zero | tr '\\000' a\n"
                      "printf '\\303\\251end\\n'\n")
    script.chmod(0o755)
    c = redis.client()
    c.call("RPUSH", QUEUE, task("utf", "bytes.sh"))
    d = wait_done(c, ["utf"], agent)
    assert d["utf"]["data"]["status"] == "success"
    msgs = [m for m in log_messages(c) if m["id"] == "utf" and m["msg_type"] == "stdout"]
    out = "".join(m["data"] for m in msgs)
    # 32 bytes, then 65503: the 2-byte character starts at byte 65535.
    first = "abcdefghijklmnop\u00e9\u20ac\U0001f600\ufffd\ufffdq\x01\tz\n"
    assert out == first + "a" * 65503 + "\u00e9end\n"
    assert len(msgs) >= 2, "the output fits one batch: the boundary was not crossed"
    agent.stop()


def test_logs_http_copy_without_agent_secrets(install_dir, fakeci, redis):
    import http.server
    import threading

    got = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            got.append((dict(self.headers), json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/logs"
        agent = start_agent(install_dir, fakeci, redis, **{"devops.queue.logs.http": url})
        c = redis.client()
        c.call("RPUSH", QUEUE, task("web1", "ok.sh", ["x"]))
        wait_done(c, ["web1"], agent)
        assert wait_until(lambda: any(b["msg_type"] == "done" for _, b in got), 10)
        kinds = {b["msg_type"] for _, b in got if b["id"] == "web1"}
        assert kinds == {"stdout", "stderr", "done"}
        for headers, _ in got:
            assert not any(k.lower().startswith("x-devops") for k in headers), headers
            assert SECRET_KEY not in json.dumps(headers)
        agent.stop()
    finally:
        srv.shutdown()
