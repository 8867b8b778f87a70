""".agent.properties: the HEAD keys, the .bak backup and restore, proxy keys.

Every test runs the real devopsAgent against fakeci on 127.0.0.1; the proxy
test puts a small forwarding HTTP proxy (this file) in between.
"""
from __future__ import annotations

import http.client
import http.server
import stat
import threading
from urllib.parse import urlsplit

from conftest import (Agent, assert_no_violations, heartbeats, read_properties,
                      wait_heartbeats, wait_until)
from fakeci.layout import write_properties


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    """Forward one absolute-URI request to its origin; record its path."""

    def _forward(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("proxy-connection", "connection", "host")}
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        try:
            conn.request(self.command, url.path + ("?" + url.query if url.query else ""),
                         body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.server.seen.append(url.path)
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _forward

    def log_message(self, format, *args):  # noqa: A002 - inherited signature
        pass


def start_proxy():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
    server.seen = []
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def heartbeat_count(fakeci) -> int:
    return len(heartbeats(fakeci))


def test_proxy_key_applies_and_heartbeat_envs_clear_it(fakeci, install_dir):
    proxy = start_proxy()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        write_properties(install_dir, fakeci, {"HTTP_PROXY": "  " + url + "  ",
                                               "NO_PROXY": ""})
        fakeci.set_state(envs=None)                  # answers without envs
        agent = Agent(install_dir, fast=True).start()
        assert wait_heartbeats(fakeci, 2, timeout=30)
        assert any(p.endswith("/startup") for p in proxy.seen), proxy.seen
        assert any(p.endswith("/ask") for p in proxy.seen)
        props = read_properties(install_dir / ".agent.properties")
        assert props["HTTP_PROXY"] == url            # kept, trimmed on load

        # The server's envs lack the key: it is cleared (as HEAD does) and
        # requests go directly again.
        fakeci.set_state(envs={"SOME_VAR": "1"})
        assert wait_until(lambda: read_properties(
            install_dir / ".agent.properties").get("HTTP_PROXY") == "", timeout=30)
        assert wait_heartbeats(fakeci, heartbeat_count(fakeci) + 2, timeout=30)
        seen = len(proxy.seen)
        assert wait_heartbeats(fakeci, heartbeat_count(fakeci) + 3, timeout=30)
        assert len(proxy.seen) == seen, proxy.seen[seen:]

        # The server sends a proxy: used and persisted.
        fakeci.set_state(envs={"HTTP_PROXY": url})
        assert wait_until(lambda: read_properties(
            install_dir / ".agent.properties").get("HTTP_PROXY") == url, timeout=30)
        assert wait_until(lambda: len(proxy.seen) > seen + 1, timeout=30)
        assert agent.running
        assert "heartbeat envs: HTTP_PROXY cleared" in agent.read_log()
        assert url not in agent.read_log()           # values are never logged
        assert_no_violations(fakeci)
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_head_keys_survive_and_backup_is_private(fakeci, install_dir):
    write_properties(install_dir, fakeci, {"devops.mcp.server.port": "8123",
                                           "HTTPS_PROXY": "http://example.invalid:3128",
                                           "devops.agent.jdk17.dir.path": "jdk17"})
    path = install_dir / ".agent.properties"
    before = path.read_text()
    fakeci.set_state(envs=None, parallelTaskCount=6)   # a change that is written back
    agent = Agent(install_dir, fast=True).start()
    assert wait_until(lambda: read_properties(path).get("devops.parallel.task.count") == "6",
                      timeout=30), agent.read_log()[-2000:]
    props = read_properties(path)
    assert props["devops.mcp.server.port"] == "8123"
    assert props["HTTPS_PROXY"] == "http://example.invalid:3128"
    assert props["devops.agent.jdk17.dir.path"] == "jdk17"
    bak = install_dir / ".agent.properties.bak"
    # The backup holds a previous text and is readable by the owner only.
    assert bak.exists()
    assert stat.S_IMODE(bak.stat().st_mode) == 0o600
    assert read_properties(bak)["devops.agent.secret.key"] == props["devops.agent.secret.key"]
    assert bak.read_text() != path.read_text()
    assert "#\n# BK-CI third-party build agent configuration." in bak.read_text()
    assert before.splitlines()[0] == path.read_text().splitlines()[0]   # comments kept
    assert agent.running
    agent.stop()


def test_corrupt_properties_restored_from_backup(fakeci, install_dir):
    path = install_dir / ".agent.properties"
    good = path.read_text()
    (install_dir / ".agent.properties.bak").write_text(good)
    path.write_bytes(b"devops.project.id=x\n\x00\x00 torn write\n")
    agent = Agent(install_dir, fast=True).start()
    assert wait_heartbeats(fakeci, 1, timeout=30)
    agent.wait_for_log(r"restored it from \.agent\.properties\.bak", timeout=10)
    assert read_properties(path)["devops.agent.id"] == fakeci.agent_id
    assert b"\x00" not in path.read_bytes()
    assert agent.running
    assert_no_violations(fakeci)


def test_both_broken_exits_1_naming_the_problems(fakeci, install_dir):
    path = install_dir / ".agent.properties"
    path.write_text("devops.project.id=x\njust words\n")
    (install_dir / ".agent.properties.bak").write_text("devops.project.id=x\n")
    agent = Agent(install_dir, fast=True).start()
    assert agent.wait(30) == 1
    out = agent.output()
    assert "line 2: not a key=value line" in out
    assert ".agent.properties.bak" in out and "missing or blank" in out
    assert path.read_text() == "devops.project.id=x\njust words\n"
    assert not heartbeats(fakeci)
