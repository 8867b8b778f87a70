"""Secret hygiene (issue #7, W17; docs/security.md).

The agent secret key, build credentials (dockerBuildInfo secretKey and
registry password) and the base64 build info must not be in any log, in any
command line visible in ps, or in any file others can read.

Residual exposure by contract: the real worker jar reads the base64 build
info from args[0] only (bk-ci WorkRunner.getBuildInfo), so the java
process's own command line carries it; it must hold identifiers only, never
credentials, and no other process may show it.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

from conftest import SECRET_KEY, Agent, assert_no_violations, wait_until

# Markers for the credentials of a docker build (which this agent reports as
# unsupported, so they only ever pass through its memory, journal and report).
DOCKER_SECRET = "dockersecret-5e1f0c9a77"
REGISTRY_PASSWORD = "registrypass-0b7d3e41c2"


def own_processes() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == os.getuid():
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def read_proc(pid: int, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def install_files(root: Path) -> list[Path]:
    """Every regular file under the install dir, minus what the test put there
    (the properties file is checked on its own, the stand-ins are not the
    agent's)."""
    skip = {root / ".agent.properties", root / ".agent.properties.bak",
            root / "worker-agent.jar", root / "uninstall.sh"}
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path in skip or (root / "jdk") in path.parents or path.is_symlink():
                continue
            if path.is_file():
                out.append(path)
    return out


def holders(files: list[Path], needle: bytes) -> list[str]:
    found = []
    for path in files:
        try:
            if needle in path.read_bytes():
                found.append(str(path))
        except OSError:
            pass
    return found


def build_info_b64(build: dict) -> bytes:
    """What the agent hands the worker (protocol Appendix B), as sent."""
    keys = ["projectId", "buildId", "vmSeqId", "workspace", "pipelineId",
            "dockerBuildInfo", "executeCount", "containerHashId"]
    info = {k: build.get(k) for k in keys}
    info["dockerBuildInfo"] = None
    return base64.b64encode(json.dumps(info, separators=(",", ":"),
                                       ensure_ascii=False).encode())


def test_no_secret_in_files_logs_or_command_lines(install_dir, fakeci):
    agent = Agent(install_dir, fast=True).start()
    # Served raw so that the BINARY pull hands it out: the agent has to
    # handle (and refuse) a docker build with credentials in it.
    docker = {"projectId": fakeci.project_id, "buildId": "b-" + "d0" * 16, "vmSeqId": "1",
              "workspace": "", "pipelineId": "p-" + "e1" * 16, "executeCount": 1,
              "containerHashId": "c-" + "f2" * 16,
              "dockerBuildInfo": {
                  "agentId": fakeci.agent_id, "secretKey": DOCKER_SECRET,
                  "image": "mirrors.example.com/ci/build-env:1.4",
                  "credential": {"user": "robot", "password": REGISTRY_PASSWORD},
                  "options": None, "imagePullPolicy": "if-not-present"}}
    fakeci.queue_build(raw=docker)
    build = fakeci.queue_build(script="sleep 3; echo built")
    b64 = build_info_b64(build)
    secrets = [SECRET_KEY.encode(), DOCKER_SECRET.encode(), REGISTRY_PASSWORD.encode()]

    # While the worker runs: command lines, environments, files on disk.
    def worker_running():
        return [pid for pid in own_processes() if b64 in read_proc(pid, "cmdline")]
    workers = wait_until(worker_running, timeout=60)
    assert workers, "the worker never started with its build info argument"
    for pid in own_processes():
        cmdline, environ = read_proc(pid, "cmdline"), read_proc(pid, "environ")
        for secret in secrets:
            assert secret not in cmdline, f"secret in the command line of {pid}"
            assert secret not in environ, f"secret in the environment of {pid}"
        if b64 in cmdline:
            # Only the JVM itself, by contract (WorkRunner reads args[0]).
            argv = cmdline.split(b"\0")
            assert b"-jar" in argv and argv[argv.index(b"-jar") + 2] == b64, argv
    # The argument carries identifiers only.
    sent = json.loads(base64.b64decode(b64))
    assert sent["dockerBuildInfo"] is None
    for path in install_files(install_dir):
        mode = path.stat().st_mode
        data = path.read_bytes()
        if b64 in data or any(s in data for s in secrets):
            assert mode & (stat.S_IRWXG | stat.S_IRWXO) == 0, \
                f"{path} ({oct(mode)}) holds build info or a secret and others can read it"

    # After both builds are reported: nothing left anywhere.
    assert fakeci.wait_until(lambda: len(fakeci.finished) == 2, timeout=60)
    assert wait_until(lambda: not list((install_dir / "runtime" / "builds").glob("*.json")), 30)
    assert agent.stop() == 0
    files = install_files(install_dir)
    assert any(p.name == "devopsAgent.log" for p in files)
    for secret in secrets:
        assert holders(files, secret) == [], f"{secret!r} left on disk"
    assert holders(files, b64) == [], "the base64 build info left on disk"
    assert holders(files, build["buildId"].encode()) != []      # the grep works

    # .agent.properties must hold the key, but only for the agent's user.
    props = install_dir / ".agent.properties"
    assert SECRET_KEY.encode() in props.read_bytes()
    assert props.stat().st_mode & stat.S_IRWXO == 0
    assert props.stat().st_mode & stat.S_IRWXG == 0        # no build user switch here
    bak = install_dir / ".agent.properties.bak"              # its copy before each write
    assert not bak.exists() or stat.S_IMODE(bak.stat().st_mode) == 0o600
    docker_report = [f for f in fakeci.finished if f["buildId"] == docker["buildId"]]
    assert docker_report and not docker_report[0]["success"]
    assert_no_violations(fakeci)
