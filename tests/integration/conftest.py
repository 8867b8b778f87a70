"""Shared fixtures for the integration tests.

* `fakeci`: an in-process fake BK-CI server (tests/fakeci/server.py).
* `install_dir`: a GoAgent install directory built from bin/ (skips when the
  C binaries are not built); `bare_install_dir` is the same layout without
  the binaries, for tests of the stand-ins alone.
* `Agent` / `Daemon`: start and stop devopsAgent / devopsDaemon there.

Every process a test starts is killed at teardown: the registered agents and
daemons first, then anything whose cwd, executable or command line is inside
the install directory (workers run in sessions of their own).
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS_DIR = REPO_ROOT / "tests"
sys.path.insert(0, str(TESTS_DIR))
from fakeci.server import FakeCI  # noqa: E402
from fakeci.layout import (AGENT_ID, BIN_DIR, BINARIES, JAVA_STANDIN, PROJECT_ID,  # noqa: E402,F401
                           SECRET_KEY, WORKER_VERSION, layout_install_dir,
                           missing_binaries, properties_for, read_properties,
                           remove_build_cgroups,
                           write_properties)

PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "no_proxy"}


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll predicate() until it returns something truthy; return it, or False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def agent_env(env_extra: dict | None = None, home: Path | None = None) -> dict:
    """Environment for agent processes: no proxies, HOME/USER/LOGNAME/SHELL set.

    home: a private HOME (created), so that the login shells of workers do
    not run the machine user's profile (which may hold locks of its own).
    """
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    user = pwd.getpwuid(os.getuid())
    if home is not None:
        Path(home).mkdir(exist_ok=True)
    env.update(HOME=str(home or user.pw_dir), USER=user.pw_name, LOGNAME=user.pw_name,
               SHELL="/bin/bash")
    env.update(env_extra or {})
    return env


# ------------------------------------------------------------------ processes

def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def processes_in(install_dir: Path) -> list[int]:
    """Live pids whose cwd, executable or command line is inside install_dir."""
    root = os.path.realpath(install_dir)
    marker = (root + "/").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except (OSError, IndexError):
            continue
        links = []
        for name in ("cwd", "exe"):
            try:
                links.append(os.readlink(f"/proc/{pid}/{name}"))
            except OSError:
                pass
        if (any(_inside(link, root) for link in links)
                or any(marker in arg or arg == root.encode() for arg in argv)):
            found.append(pid)
    return found


def kill_leftovers(install_dir: Path, timeout: float = 5.0) -> list[int]:
    """SIGKILL every process inside install_dir until none is left; return them."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        pids = processes_in(install_dir)
        if not pids or time.monotonic() >= deadline:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                if pid not in killed:
                    killed.append(pid)
            except OSError:
                pass
        time.sleep(0.05)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


class Agent:
    """A devopsAgent process started in an install directory.

    stop() sends SIGTERM to the agent itself (so its own shutdown logic is
    what stops its workers), then SIGKILLs its process group after `timeout`.
    """

    binary = "devopsAgent"
    log_name = "devopsAgent.log"
    _live: list["Agent"] = []

    def __init__(self, install_dir: Path, env_extra: dict | None = None, fast: bool = False):
        self.install_dir = Path(install_dir)
        self.env_extra = dict(env_extra or {})
        if fast:
            self.env_extra.setdefault("DEVOPS_AGENT_TEST_FAST", "1")
        self.proc: subprocess.Popen | None = None
        self.output_path: Path | None = None
        self._log_offset = 0

    @property
    def log_path(self) -> Path:
        return self.install_dir / "logs" / self.log_name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, args=()) -> "Agent":
        if self.running:
            raise RuntimeError(f"{self.binary} already running (pid {self.pid})")
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.output_path = self.install_dir.parent / f"{self.binary}.{time.time_ns()}.out"
        with open(self.output_path, "wb") as out:
            self.proc = subprocess.Popen(["./" + self.binary, *args], cwd=self.install_dir,
                                         env=agent_env(self.env_extra,
                                                       self.install_dir.parent / "home"),
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        Agent._live.append(self)
        return self

    def send_signal(self, sig: int) -> None:
        """Signal the process itself (not its group)."""
        if self.running:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit; raises subprocess.TimeoutExpired."""
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL the process group after `timeout`; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        _killpg(self.proc.pid, signal.SIGKILL)   # stragglers left in its group
        return self.proc.returncode

    def read_log(self, since_start: bool = False) -> str:
        """The process log file (logs/<binary>.log), optionally only this run's part."""
        try:
            with open(self.log_path, "rb") as fh:
                if since_start:
                    fh.seek(self._log_offset)
                return fh.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        """What the process wrote to stdout/stderr."""
        if self.output_path is None or not self.output_path.exists():
            return ""
        return self.output_path.read_text(errors="replace")

    def wait_for_log(self, regex: str, timeout: float = 10.0, since_start: bool = True) -> re.Match:
        """Wait until the log matches regex; AssertionError (with the log tail) on timeout."""
        pattern = re.compile(regex)
        match = wait_until(lambda: pattern.search(self.read_log(since_start)), timeout)
        if not match:
            tail = "\n".join(self.read_log(since_start).splitlines()[-30:])
            state = "running" if self.running else f"exited with {self.returncode}"
            raise AssertionError(f"{regex!r} not in {self.log_path} after {timeout}s "
                                 f"({self.binary} {state}); log tail:\n{tail}\n"
                                 f"output:\n{self.output()[-2000:]}")
        return match

    wait_until = staticmethod(wait_until)


class Daemon(Agent):
    """A devopsDaemon process (it starts and supervises devopsAgent itself)."""

    binary = "devopsDaemon"
    log_name = "devopsDaemon.log"


def cleanup_install_dir(install_dir: Path) -> list[int]:
    """Stop the Agents/Daemons of install_dir, then kill whatever is left inside it."""
    mine = [a for a in Agent._live if a.install_dir == Path(install_dir)]
    # Daemons first, or they would restart the agents we stop.
    for proc in sorted(mine, key=lambda a: not isinstance(a, Daemon)):
        proc.stop(timeout=2.0)
    Agent._live[:] = [a for a in Agent._live if a not in mine]
    leftovers = kill_leftovers(install_dir)
    if leftovers:
        warnings.warn(f"killed {len(leftovers)} leftover process(es) in {install_dir}: {leftovers}")
    remove_build_cgroups(install_dir)
    return leftovers


def assert_no_violations(fakeci: FakeCI) -> None:
    """Fail with a readable list if fakeci recorded any protocol violation."""
    violations = fakeci.violations
    assert not violations, "protocol violations:\n" + "\n".join(
        f"  {v['kind']}: {v['method']} {v['path']}: {v['message']}" for v in violations)


# ------------------------------------------------------------------- poll modes

ASK_PATH = "thirdPartyAgent/ask"
HEARTBEAT_PATH = "agents/newHeartbeat"


def heartbeats(fakeci: FakeCI) -> list[dict]:
    """Every heartbeat body the agent sent, in order, whatever carried it:
    a legacy newHeartbeat call or the heartbeat part of an ask."""
    out = []
    for r in fakeci.requests():
        body = r.get("json")
        if r["path"].endswith(HEARTBEAT_PATH) and isinstance(body, dict):
            out.append(body)
        elif (r["path"].endswith(ASK_PATH) and isinstance(body, dict)
              and isinstance(body.get("heartbeat"), dict)):
            out.append(body["heartbeat"])
    return out


def upgrade_checks(fakeci: FakeCI) -> list[dict]:
    """Every upgrade check body the agent sent, in order: a legacy upgradeNew
    call or the non-null upgrade part of an ask (each with its time "t")."""
    out = []
    for r in fakeci.requests():
        body = r.get("json")
        if r["path"].endswith("/upgradeNew") and isinstance(body, dict):
            out.append(dict(body, t=r["t"]))
        elif (r["path"].endswith(ASK_PATH) and isinstance(body, dict)
              and isinstance(body.get("upgrade"), dict)):
            out.append(dict(body["upgrade"], t=r["t"]))
    return out


def pipeline_polls(fakeci: FakeCI) -> int:
    """How often the agent asked for a pipeline item: GET agents/pipelines
    calls plus asks with askEnable.pipeline true."""
    n = 0
    for r in fakeci.requests():
        body = r.get("json")
        if r["method"] == "GET" and r["path"].endswith("/agents/pipelines"):
            n += 1
        elif (r["path"].endswith(ASK_PATH) and isinstance(body, dict)
              and (body.get("askEnable") or {}).get("pipeline") is True):
            n += 1
    return n


def wait_heartbeats(fakeci: FakeCI, count: int, timeout: float = 10.0) -> list[dict]:
    """Wait until the agent sent at least count heartbeats; returns them (or [])."""
    ok = fakeci.wait_until(lambda: len(heartbeats(fakeci)) >= count, timeout=timeout)
    return heartbeats(fakeci) if ok else []


@pytest.fixture(params=["ask", "legacy"])
def poll_mode(request, fakeci):
    """Run a test against a current server (ask) and against one that
    predates ask (it answers 404, so the agent falls back to the legacy
    loops). The value is the mode the agent must end up in."""
    fakeci.set_state(askSupported=request.param == "ask")
    return request.param


# ------------------------------------------------------------------- fixtures

@pytest.fixture
def fakeci():
    """A FakeCI server on a free 127.0.0.1 port, stopped at teardown."""
    server = FakeCI(project_id=PROJECT_ID, agent_id=AGENT_ID, secret_key=SECRET_KEY).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def install_dir(tmp_path, fakeci):
    """A GoAgent install directory with the built C binaries, pointed at fakeci."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"C binaries not built: bin/{', bin/'.join(missing)} missing "
                    f"(build them first, e.g. with make)")
    path = layout_install_dir(tmp_path / "install", fakeci)
    try:
        yield path
    finally:
        cleanup_install_dir(path)


@pytest.fixture
def bare_install_dir(tmp_path, fakeci):
    """The install layout without the C binaries (java stand-in, jar, properties)."""
    path = layout_install_dir(tmp_path / "install", fakeci, with_binaries=False)
    try:
        yield path
    finally:
        cleanup_install_dir(path)
