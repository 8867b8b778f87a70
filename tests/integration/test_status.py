"""`devopsAgent status`: the operator's diagnosis, with the real daemon and
agent against the fake BK-CI server. Up (healthy, facts of the running agent
from runtime/status.json), down (last known facts, exit 3), the server
unreachable (exit 5) and TLS failing (gateway tls fails, with what to do;
passes once .cert holds the server's certificate). --json is parsed, and the
secret never appears in either output.
"""

import http.server
import json
import os
import re
import signal
import ssl
import subprocess
import threading
import time

import pytest

from conftest import SECRET_KEY, Agent, Daemon, processes_in, wait_until, write_properties


def status(install_dir, *args):
    """Run `devopsAgent status [args]`; returns (exit code, stdout)."""
    r = subprocess.run(["./devopsAgent", "status", *args], cwd=install_dir,
                       capture_output=True, text=True, timeout=60)
    assert SECRET_KEY not in r.stdout and SECRET_KEY not in r.stderr
    return r.returncode, r.stdout


def checks(doc):
    return {c["name"]: c for c in doc["checks"]}


def state(install_dir):
    try:
        return json.loads((install_dir / "runtime" / "status.json").read_text())
    except (OSError, ValueError):
        return None


def start_daemon(install_dir, fakeci):
    d = Daemon(install_dir, fast=True).start()
    # The agent answered by the server: its state file says so.
    assert wait_until(lambda: (state(install_dir) or {}).get("lastSuccess", {}).get("ask"),
                      timeout=20), Agent(install_dir).read_log()[-2000:]
    return d


def stop_daemon_and_agent(install_dir, daemon):
    """Stop the daemon, then its agent (which outlives the daemon by design)."""
    agent_pid = int((install_dir / "runtime" / "agent.pid").read_text().split()[0])
    daemon.stop()
    if os.path.exists(f"/proc/{agent_pid}"):
        os.kill(agent_pid, signal.SIGTERM)
    assert wait_until(lambda: not os.path.exists(f"/proc/{agent_pid}")
                      or "Z" in open(f"/proc/{agent_pid}/stat").read().split()[2], timeout=15)


def test_status_up_then_down(install_dir, fakeci):
    d = start_daemon(install_dir, fakeci)
    rc, out = status(install_dir, "--json")
    doc = json.loads(out)
    bad = [c for c in doc["checks"] if not c["ok"]]
    assert rc == 0 and doc["exit_code"] == 0 and not bad, bad
    c = checks(doc)
    for name in ("daemon", "agent", "agent state", "server contact", "gateway dns",
                 "gateway tcp", "gateway tls", "gateway http", "agentStatus",
                 "clock skew", "disk", "disk build_tmp", "properties mode", "cgroup"):
        assert name in c, name
    assert "IMPORT_OK" in c["agentStatus"]["detail"]
    agent = doc["agent"]
    assert agent["mode"] == "run" and agent["poll"] == "ask"
    assert agent["pid"] == int((install_dir / "runtime" / "agent.pid").read_text().split()[0])
    assert agent["lastSuccess"]["startup"] and agent["agentStatus"] == "IMPORT_OK"
    assert agent["builds"] == [] and agent["outbox"] == 0 and agent["deadLetters"] == 0

    # One screen for a person: the same facts, no secret.
    rc, text = status(install_dir)
    assert rc == 0 and "Summary: all checks passed" in text
    assert "mode run, poll ask" in text and "last ask: " in text
    assert "agentStatus on the server: IMPORT_OK" in text
    assert len(text.splitlines()) < 70

    # A running build shows with its pid and age.
    go = install_dir.parent / "build-may-end"
    build = fakeci.queue_build(
        script=f"for i in $(seq 600); do [ -e {go} ] && exit 0; sleep 0.1; done")
    assert wait_until(lambda: (state(install_dir) or {}).get("builds"), timeout=20)
    b = state(install_dir)["builds"][0]
    assert b["buildId"] == build["buildId"] and b["pid"] > 0
    rc, text = status(install_dir)
    assert f"build {build['buildId']}_" in text and f"pid {b['pid']}" in text

    stop_daemon_and_agent(install_dir, d)
    rc, out = status(install_dir, "--json")
    doc = json.loads(out)
    assert rc == 3 and doc["exit_code"] == 3
    c = checks(doc)
    assert not c["agent"]["ok"] and "devopsAgent start" in c["agent"]["hint"]
    assert doc["agent"]["mode"] == "stop"        # its last words, still readable
    rc, text = status(install_dir)
    assert rc == 3 and "-> run `devopsAgent start`" in text
    # The build outlives its agent by design; this test lets it end.
    go.touch()
    assert wait_until(lambda: not processes_in(install_dir), timeout=15), processes_in(install_dir)


def test_status_server_unreachable(install_dir, fakeci):
    d = start_daemon(install_dir, fakeci)
    fakeci.stop()
    rc, out = status(install_dir, "--json")
    doc = json.loads(out)
    c = checks(doc)
    assert rc == 5, doc
    assert not c["gateway tcp"]["ok"] and c["gateway tcp"]["class"] == 5
    assert "firewall" in c["gateway tcp"]["hint"]
    rc, text = status(install_dir)
    assert rc == 5 and "the server is unreachable" in text
    stop_daemon_and_agent(install_dir, d)


def test_state_file_is_not_rewritten_per_ask(install_dir, fakeci):
    """An idle agent's answers repeat themselves (IMPORT_OK every time): the
    state file is then rewritten only by its periodic refresh, not on every
    ask (each rewrite is disk work on an idle machine)."""
    d = start_daemon(install_dir, fakeci)
    path = install_dir / "runtime" / "status.json"
    assert wait_until(lambda: (state(install_dir) or {}).get("agentStatus") == "IMPORT_OK",
                      timeout=20)
    time.sleep(1.5)                  # the first successes of each call are written
    inodes, n0 = {path.stat().st_ino}, len(fakeci.asks())
    end = time.monotonic() + 4
    while time.monotonic() < end:
        try:
            inodes.add(path.stat().st_ino)
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    asks = len(fakeci.asks()) - n0
    assert asks >= 4, asks
    # The refresh (every 10 s) may fall once into these 4 s.
    assert len(inodes) <= 2, f"{len(inodes) - 1} rewrites during {asks} asks"
    stop_daemon_and_agent(install_dir, d)


@pytest.fixture
def tls_server(tmp_path):
    """A TLS server on 127.0.0.1 with a self-signed certificate, answering the
    status call with IMPORT_OK."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "30",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"status":0,"data":"IMPORT_OK"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1], cert
    finally:
        srv.shutdown()
        srv.server_close()


def test_status_tls_failing_then_cert(install_dir, fakeci, tls_server):
    port, cert = tls_server
    write_properties(install_dir, fakeci, {"landun.gateway": f"https://127.0.0.1:{port}"})
    rc, out = status(install_dir, "--json")     # the agent is down: exit 3 wins
    c = checks(json.loads(out))
    assert rc == 3
    assert c["gateway tcp"]["ok"], c
    assert not c["gateway tls"]["ok"] and c["gateway tls"]["class"] == 5
    assert ".cert" in c["gateway tls"]["hint"]
    assert "gateway http" not in c

    # The private CA in .cert: verified, the expiry said, the call goes on.
    (install_dir / ".cert").write_bytes(cert.read_bytes())
    rc, out = status(install_dir, "--json")
    c = checks(json.loads(out))
    assert c["gateway tls"]["ok"], c["gateway tls"]
    assert "with .cert" in c["gateway tls"]["detail"]
    assert re.search(r"expires in (29|30) day", c["gateway tls"]["detail"])
    assert c["gateway http"]["ok"] and c["agentStatus"]["ok"]
    assert "dead letters" not in c

    # A finish report the server refused, set aside: shown, with what to do.
    (install_dir / "runtime" / "deadletter").mkdir(parents=True)
    (install_dir / "runtime" / "deadletter" / "b-1_1.json").write_text("{}")
    rc, out = status(install_dir, "--json")
    c = checks(json.loads(out))
    assert not c["dead letters"]["ok"] and c["dead letters"]["class"] == 2
    assert "runtime/deadletter/" in c["dead letters"]["hint"]
