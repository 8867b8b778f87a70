"""The local Prometheus endpoint (devops.agent.metrics.listen): a real scrape
by Debian's prometheus on 127.0.0.1 (private port and data dir) whose
targets API shows the agent up, `promtool check metrics` on the output, the
series after a build, only GET /metrics served, and a non-loopback address
refused without devops.agent.metrics.remote.
"""

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import Agent, wait_until, write_properties

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), None


@pytest.fixture
def metrics_agent(install_dir, fakeci):
    port = free_port()
    write_properties(install_dir, fakeci, {"devops.agent.metrics.listen": f"127.0.0.1:{port}"})
    agent = Agent(install_dir, fast=True).start()
    agent.wait_for_log("metrics: serving GET /metrics on 127.0.0.1:%d" % port)
    return agent, port


@pytest.fixture
def prometheus(tmp_path):
    if PROMETHEUS is None:
        pytest.skip("LOUD SKIP: Debian's prometheus is not installed "
                    "(scripts/dev/install-deps.sh test installs it)")
    procs = []

    def start(target_port):
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: devops-agent
    static_configs:
      - targets: ["127.0.0.1:{target_port}"]
""")
        p = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}",
                              f"--storage.tsdb.path={tmp_path / 'data'}",
                              f"--web.listen-address=127.0.0.1:{port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        return f"http://127.0.0.1:{port}"
    try:
        yield start
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_real_scrape(metrics_agent, fakeci, prometheus):
    agent, port = metrics_agent
    fakeci.queue_build()
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-3000:]
    base = prometheus(port)

    def target_up():
        try:
            code, body, _ = get(base + "/api/v1/targets")
        except OSError:
            return None
        if code != 200:
            return None
        active = json.loads(body)["data"]["activeTargets"]
        return [t for t in active if t["health"] == "up"
                and t["scrapeUrl"] == f"http://127.0.0.1:{port}/metrics"]
    assert wait_until(target_up, timeout=30), "prometheus never saw the agent up"

    def queried():
        code, body, _ = get(base + "/api/v1/query?query=devops_agent_builds_finished_total")
        res = json.loads(body)["data"]["result"] if code == 200 else []
        return {r["metric"]["outcome"]: r["value"][1] for r in res}
    assert wait_until(lambda: queried().get("success") == "1", timeout=15), queried()


def test_exposition_and_methods(metrics_agent, fakeci):
    agent, port = metrics_agent
    fakeci.queue_build()
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-3000:]
    url = f"http://127.0.0.1:{port}/metrics"
    assert wait_until(lambda: 'endpoint="workerBuildFinish"' in get(url)[1], timeout=10)
    code, text, ctype = get(url)
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
    for series in ('devops_agent_builds_claimed_total 1',
                   'devops_agent_builds_finished_total{outcome="success"} 1',
                   'devops_agent_builds_running 0',
                   'devops_agent_finish_report_dead_letters_total 0',
                   'devops_agent_server_requests_total{endpoint="ask"}',
                   'devops_agent_server_request_seconds_bucket{endpoint="ask",le="+Inf"}',
                   'devops_agent_last_success_timestamp_seconds{call="ask"}',
                   'devops_agent_upgrades_total{outcome="failure"} 0',
                   'devops_agent_resident_memory_bytes ',
                   'devops_agent_open_fds '):
        assert series in text, series
    last_ask = [l for l in text.splitlines()
                if l.startswith('devops_agent_last_success_timestamp_seconds{call="ask"}')][0]
    assert abs(int(last_ask.split()[1]) - time.time()) < 60
    if PROMTOOL is None:
        pytest.skip("LOUD SKIP: promtool is not installed (Debian's prometheus package)")
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr

    # Nothing but GET /metrics.
    assert get(f"http://127.0.0.1:{port}/")[0] == 404
    assert get(f"http://127.0.0.1:{port}/metrics/../etc")[0] == 404
    assert get(url, method="POST")[0] == 405
    assert get(url, method="DELETE")[0] == 405
    # A request that never ends its headers does not hold the loop.
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100000)
    assert get(url)[0] == 200
    s.close()
    assert agent.running


def test_non_loopback_refused(install_dir, fakeci):
    write_properties(install_dir, fakeci, {"devops.agent.metrics.listen": "0.0.0.0:%d" % free_port()})
    agent = Agent(install_dir, fast=True).start()
    agent.wait_for_log("metrics: 0.0.0.0:[0-9]+ is not a loopback address; set "
                       "devops.agent.metrics.remote=true")
    assert agent.running
