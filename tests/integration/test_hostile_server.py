"""A hostile or broken server: download limits and verification, no redirects,
validated server values (docs/security.md, docs/upgrader.md).

Each test starts the real binaries in a temporary install dir against fakeci
(and, for redirects, a second listener on another port that records what
reaches it). Short settings come from environment knobs:
DEVOPS_AGENT_TEST_FAST (1 s upgrade period), DEVOPS_AGENT_DOWNLOAD_MAX_SEC
(the total time of a download), DEVOPS_UPGRADER_* (the upgrader's health
check). No test asserts how long anything takes.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import (Agent, agent_env, assert_no_violations, heartbeats, kill_leftovers,
                      read_properties, wait_heartbeats, wait_until)
from test_faults import enospc_env, enospc_shim  # noqa: F401 - enospc_shim is a fixture

SECRET_HEADER = "x-devops-agent-secret-key"
UPGRADER_ENV = {
    "DEVOPS_UPGRADER_HEALTH_SEC": "2",
    "DEVOPS_UPGRADER_START_SEC": "8",
    "DEVOPS_DAEMON_STABLE_MS": "300",
}


def suffix() -> str:
    """Server file-name suffix of this machine's binaries."""
    arm = platform.machine() in ("aarch64", "arm64")
    return "_linux_arm64" if arm else "_linux"


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def serve_installed(fakeci, install_dir: Path, **agent_opts) -> None:
    """Serve the installed upgrader, daemon and agent; agent_opts for the agent."""
    fakeci.add_file("upgrade/upgrader" + suffix(), (install_dir / "tmp/upgrader").read_bytes())
    fakeci.add_file("upgrade/devopsDaemon" + suffix(),
                    (install_dir / "devopsDaemon").read_bytes())
    fakeci.add_file("upgrade/devopsAgent" + suffix(),
                    (install_dir / "devopsAgent").read_bytes(), **agent_opts)


def first_finish(fakeci, agent, timeout: float = 60.0) -> dict:
    """The first FinishUpgrade call; fails with the log tail when none comes."""
    if not fakeci.wait_for("upgrade_finishes", 1, timeout=timeout):
        pytest.fail(f"no FinishUpgrade within {timeout}s; log tail:\n"
                    + "\n".join(agent.read_log().splitlines()[-40:]))
    return fakeci.upgrade_finishes[0]


def parts(install_dir: Path) -> list:
    return sorted(p.name for p in (install_dir / "tmp").glob("*.part.*"))


def no_parts(install_dir: Path) -> bool:
    """No download temp file, once any download still in flight (a later
    attempt of the fast upgrade period) has ended."""
    return bool(wait_until(lambda: parts(install_dir) == [], timeout=15))


# ------------------------------------------------------- rule: download limits

def test_endless_download_is_abandoned_at_its_cap(fakeci, install_dir):
    """A body without Content-Length that never ends is cut at the file
    type's cap (1 MiB for the docker init script) and its partial file goes."""
    fakeci.add_file("script/linux/agent_docker_init.sh", b"#!/bin/sh\necho init\n",
                    endless=True)
    fakeci.set_upgrade(dockerInitFile=True)
    agent = Agent(install_dir, fast=True).start()

    first = first_finish(fakeci, agent)
    fakeci.set_upgrade()
    assert first["success"] is False
    agent.wait_for_log(r"download script/linux/agent_docker_init\.sh failed: body larger "
                       r"than the 1048576-byte cap", timeout=5)
    assert no_parts(install_dir), "the partial file was kept"
    assert not (install_dir / "tmp/agent_docker_init.sh").exists()
    assert agent.running
    assert_no_violations(fakeci)


def test_trickled_download_is_abandoned_after_its_total_time(fakeci, install_dir):
    """4 bytes a second never trips the low-speed window; the total time
    limit (here shortened to 3 s) ends the download."""
    fakeci.add_file("upgrade/upgrader" + suffix(), b"\x7fELF" + b"t" * 8192, trickle=4)
    fakeci.set_upgrade(agent=True)
    agent = Agent(install_dir, fast=True,
                  env_extra={"DEVOPS_AGENT_DOWNLOAD_MAX_SEC": "3"}).start()

    first = first_finish(fakeci, agent)
    fakeci.set_upgrade()
    assert first["success"] is False
    agent.wait_for_log(r"download upgrade/upgrader\S* failed: Operation timed out after",
                       timeout=5)
    assert no_parts(install_dir), parts(install_dir)
    assert agent.running
    assert_no_violations(fakeci)


def test_download_without_checksum_is_refused(fakeci, install_dir):
    """No X-Checksum-Md5: the file is not kept and the attempt fails (GoAgent
    would accept it unverified)."""
    before = md5(install_dir / "devopsAgent")
    serve_installed(fakeci, install_dir, md5="")
    fakeci.set_upgrade(agent=True)
    agent = Agent(install_dir, fast=True).start()

    first = first_finish(fakeci, agent)
    fakeci.set_upgrade()
    assert first["success"] is False
    agent.wait_for_log(r"download upgrade/devopsAgent\S* failed: no X-Checksum-Md5", timeout=5)
    assert not (install_dir / "tmp/devopsAgent").exists()
    assert md5(install_dir / "devopsAgent") == before
    assert no_parts(install_dir), parts(install_dir)
    assert agent.running
    assert_no_violations(fakeci)


@pytest.mark.parametrize("record", ["missing", "other-md5"])
def test_upgrader_refuses_an_unverified_binary(fakeci, install_dir, record):
    """tmp/devopsAgent that no verified download produced (no record, or a
    record of another content) is never installed: FinishUpgrade false."""
    before = md5(install_dir / "devopsAgent")
    new = install_dir / "tmp/devopsAgent"
    new.write_bytes((install_dir / "devopsAgent").read_bytes() + b"\n# not verified\n")
    new.chmod(0o755)
    if record == "other-md5":
        (install_dir / "tmp/devopsAgent.md5").write_text("0" * 32)
    try:
        subprocess.run([str(install_dir / "tmp/upgrader"), "-action=upgrade"],
                       cwd=install_dir, env=agent_env(UPGRADER_ENV), timeout=90,
                       capture_output=True)
        assert fakeci.wait_for("upgrade_finishes", 1, timeout=10)
        assert [f["success"] for f in fakeci.upgrade_finishes] == [False]
        assert md5(install_dir / "devopsAgent") == before
        assert not (install_dir / "devopsAgent.bak").exists()
        log = (install_dir / "logs/devopsUpgrader.log").read_text(errors="replace")
        assert ("was never verified" in log if record == "missing"
                else "differs from the verified download" in log), log[-2000:]
    finally:
        kill_leftovers(install_dir)


@pytest.fixture
def full_tmp(install_dir, request):
    """tmp/ of the install dir on a small tmpfs (as root), else the ENOSPC
    shim on the download's temp files. Yields the agent's extra env."""
    tmp = install_dir / "tmp"
    saved = install_dir / "tmp.saved"
    size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()) + 256 * 1024
    mounted = False
    if os.geteuid() == 0:
        shutil.move(str(tmp), str(saved))
        tmp.mkdir()
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(tmp)],
                             capture_output=True, text=True, timeout=30)
        mounted = out.returncode == 0
        for p in saved.iterdir():
            shutil.copy2(p, tmp / p.name) if p.is_file() else shutil.copytree(p, tmp / p.name)
        shutil.rmtree(saved)
    try:
        if mounted:
            yield {}
        else:
            flag = install_dir / "enospc.on"
            flag.write_text("1")
            yield enospc_env(request.getfixturevalue("enospc_shim"), flag, ".part.")
    finally:
        if mounted:
            kill_leftovers(install_dir)
            subprocess.run(["umount", "-l", str(tmp)], capture_output=True, timeout=30)


def test_full_disk_during_a_download_is_not_fatal(fakeci, install_dir, full_tmp):
    """The download fills the disk: it is dropped and reported, the agent
    keeps running (no "left device" exit) and tries again at the next offer."""
    fakeci.add_file("upgrade/upgrader" + suffix(), os.urandom(8 * 1024 * 1024))
    fakeci.set_upgrade(agent=True)
    agent = Agent(install_dir, fast=True, env_extra=full_tmp).start()

    first = first_finish(fakeci, agent)
    assert first["success"] is False
    agent.wait_for_log(r"writing tmp/upgrader failed \(No space left on device\); "
                       r"download dropped", timeout=5)
    # Tried again at a later offer, still running.
    assert wait_until(lambda: len(fakeci.requests("upgrade/upgrader")) >= 2, timeout=30), \
        agent.read_log()[-3000:]
    fakeci.set_upgrade()
    n = len(heartbeats(fakeci))
    assert wait_heartbeats(fakeci, n + 2, timeout=30), "heartbeats stopped"
    assert agent.running, agent.read_log()[-3000:]
    assert not any((hb.get("errorExitData") or {}).get("errorEnum")
                   == "THIRD_AGENT_EXIT_LEFT_DEVICE" for hb in heartbeats(fakeci))
    assert no_parts(install_dir), parts(install_dir)
    agent.stop()


def test_leftover_temp_files_are_removed_at_start(fakeci, install_dir):
    """A crash mid-download or mid-swap leaves temp files: the first cleanup
    round removes them and nothing else."""
    tmp = install_dir / "tmp"
    stale = [tmp / "devopsAgent.part.a1B2c3", tmp / "jdk17.zip.part.Zz9yX8"]
    old = [install_dir / "devopsAgent.bak.new", install_dir / ".devopsAgent.tmp.Q1w2E3",
           tmp / ".upgrader.md5.tmp.abcdef"]
    keep = [tmp / "devopsAgent.md5", tmp / "notes.txt", tmp / "upgrader"]
    for p in stale + old + keep[:2]:
        p.write_bytes(b"left over")
    hour_ago = time.time() - 3600
    for p in old:
        os.utime(p, (hour_ago, hour_ago))
    agent = Agent(install_dir, fast=True).start()

    assert wait_until(lambda: not any(p.exists() for p in stale + old), timeout=20), \
        [p.name for p in stale + old if p.exists()]
    assert all(p.exists() for p in keep)
    agent.wait_for_log(r"cleanup: removed 5 temp file", timeout=5)
    assert agent.running


# --------------------------------------------------------------- rule: redirects

class _Recorder(ThreadingHTTPServer):
    """A second origin: records every request (method, path, headers)."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.requests: list = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.server.requests.append({"method": self.command, "path": self.path,
                                             "headers": {k.lower(): v for k, v
                                                         in self.headers.items()}})
                body = json.dumps({"status": 0, "data": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_DELETE = do_GET

            def log_message(self, format, *args):  # noqa: A002 - inherited signature
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def other_origin():
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def secrets_seen(origin: _Recorder) -> list:
    return [r["path"] for r in origin.requests if SECRET_HEADER in r["headers"]]


def test_307_on_a_post_is_not_followed(fakeci, install_dir, other_origin):
    """A 307 on the ask POST to another port: not followed, so neither the
    body nor the auth headers reach it; the log says why."""
    fakeci.add_fault("/ask", "redirect", count=3, method="POST", code=307,
                     location=other_origin.url + "/ms/dispatch/api/buildAgent/agent/"
                                                 "thirdPartyAgent/ask")
    agent = Agent(install_dir, fast=True).start()

    assert wait_until(lambda: len([r for r in fakeci.requests("/ask")
                                   if r["fault"] == "redirect"]) >= 3, timeout=30)
    # Either the agent has said it refused, or the second origin was reached.
    wait_until(lambda: other_origin.requests or "redirect to" in agent.read_log(), timeout=10)
    assert secrets_seen(other_origin) == [], "the secret left the gateway's origin"
    agent.wait_for_log(r"answered HTTP 307, a redirect to http://127\.0\.0\.1:\d+/\S*; "
                       r"refused", timeout=10)
    assert other_origin.requests == [], other_origin.requests
    # The agent goes on with the gateway itself.
    n = len(heartbeats(fakeci))
    assert wait_heartbeats(fakeci, n + 2, timeout=30)
    assert agent.running


def test_download_redirect_to_another_origin_is_refused(fakeci, install_dir, other_origin):
    """A 302 on a download to another port: the auth headers never reach it
    and nothing is installed."""
    serve_installed(fakeci, install_dir)
    fakeci.add_file("upgrade/upgrader" + suffix(), b"x", redirect=other_origin.url + "/evil",
                    redirect_code=302)
    fakeci.set_upgrade(agent=True)
    agent = Agent(install_dir, fast=True).start()

    first = first_finish(fakeci, agent)
    fakeci.set_upgrade()
    assert first["success"] is False
    assert secrets_seen(other_origin) == [], "the secret left the gateway's origin"
    assert other_origin.requests == [], other_origin.requests
    agent.wait_for_log(r"download upgrade/upgrader\S* failed: redirect refused: HTTP 302",
                       timeout=5)
    assert agent.running


# ------------------------------------------------------- rule: server values

PROPS_KEYS = ("landun.gateway", "landun.fileGateway", "devops.language",
              "devops.parallel.task.count", "devops.docker.parallel.task.count",
              "devops.agent.logs.keep.hours")


def test_bad_values_in_heartbeat_answers_are_refused(fakeci, install_dir, poll_mode):
    """Every bad value of the heartbeat (legacy) or the ask's heartbeat part
    is refused with a log line; memory and .agent.properties keep theirs."""
    props = install_dir / ".agent.properties"
    before = read_properties(props)
    fakeci.set_state(gateway="127.0.0.1:1\r\nX-Injected: 1",
                     fileGateway="ftp://files.example.com",
                     language="../../etc", parallelTaskCount=100000,
                     dockerParallelTaskCount=1000000,
                     envs={"BAD NAME": "x", "GOOD": "1"},
                     props={"keepLogsHours": 10 ** 7,
                            "ignoreLocalIps": "127.0.0.1,$(reboot)"})
    agent = Agent(install_dir, fast=True).start()

    for what in (r"refusing gateway", r"refusing fileGateway", r"refusing language",
                 r"refusing props\.ignoreLocalIps", r"refusing envs",
                 r"ignoring parallelTaskCount 100000", r"ignoring dockerParallelTaskCount",
                 r"ignoring props\.keepLogsHours"):
        agent.wait_for_log(r"heartbeat: " + what, timeout=20)
    n = len(heartbeats(fakeci))
    assert wait_heartbeats(fakeci, n + 2, timeout=30), "the agent lost the gateway"
    after = read_properties(props)
    assert {k: after.get(k) for k in PROPS_KEYS} == {k: before.get(k) for k in PROPS_KEYS}
    # Written with its default at start-up, never with the server's value.
    assert after.get("devops.agent.ignoreLocalIps") in (None, "127.0.0.1")
    text = props.read_text(errors="replace")
    assert "reboot" not in text and "X-Injected" not in text and "BAD NAME" not in text
    assert agent.running
    assert_no_violations(fakeci)


def test_bad_gateway_in_a_corrupt_ask_answer_is_refused(fakeci, install_dir):
    """An ask answer whose heartbeat part names another scheme or carries
    user info: refused, the agent keeps talking to the gateway it has."""
    props = install_dir / ".agent.properties"
    before = read_properties(props)
    fakeci.corrupt_ask("heartbeat", {"agentStatus": "IMPORT_OK", "parallelTaskCount": 4,
                                     "gateway": "file:///etc/passwd",
                                     "fileGateway": "http://user@evil.example.com"},
                       count=3)
    agent = Agent(install_dir, fast=True).start()

    agent.wait_for_log(r"heartbeat: refusing gateway from the server \(scheme other", timeout=20)
    agent.wait_for_log(r"heartbeat: refusing fileGateway from the server \(user info",
                       timeout=20)
    assert wait_until(lambda: not fakeci.ask_corruptions(), timeout=30)
    n = len(fakeci.asks())
    assert wait_until(lambda: len(fakeci.asks()) >= n + 2, timeout=30), "the agent lost the gateway"
    after = read_properties(props)
    assert after.get("landun.gateway") == before.get("landun.gateway")
    assert after.get("landun.fileGateway") == before.get("landun.fileGateway")
    assert agent.running
