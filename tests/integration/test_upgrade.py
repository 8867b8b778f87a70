"""Self-upgrade: downloads, the upgrader, rollback (issue 4; agent-behaviour §7,
protocol §7.4-7.6, W6, W7, W8, W26).

Every test runs the real binaries in a temporary install dir against fakeci.
Short settings come from environment knobs: DEVOPS_AGENT_TEST_FAST (1 s
upgrade period), DEVOPS_AGENT_STALL_SEC (low-speed abort of downloads),
DEVOPS_UPGRADER_HEALTH_SEC / DEVOPS_UPGRADER_START_SEC (the upgrader's health
check), DEVOPS_DAEMON_STABLE_MS (the daemon's crash-loop threshold). No test
asserts how long anything takes; orderings are checked on fakeci's records.
"""
from __future__ import annotations

import hashlib
import os
import platform
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import (REPO_ROOT, Agent, Daemon, assert_no_violations, heartbeats,
                      kill_leftovers, read_properties, upgrade_checks, wait_heartbeats,
                      wait_until)

NEW_VERSION = "v9.9.9"
UPGRADE_ENV = {
    "DEVOPS_AGENT_TEST_FAST": "1",
    "DEVOPS_UPGRADER_HEALTH_SEC": "2",
    "DEVOPS_UPGRADER_START_SEC": "8",
    "DEVOPS_DAEMON_STABLE_MS": "300",
}
CRASHING_AGENT = b"""#!/bin/sh
# A devopsAgent that answers `version` and crashes at every start.
# It claims to be this project's agent (the upgrade refuses GoAgent):
# devops-agent-c/implementation-marker/1
if [ "$1" = version ]; then echo v6.6.6; exit 0; fi
exit 1
"""


def suffix() -> str:
    """Server file-name suffix of this machine (protocol §7.4)."""
    arm = platform.machine() in ("aarch64", "arm64")
    return "_linux_arm64" if arm else "_linux"


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def serve_binaries(fakeci, install_dir: Path, agent: bytes | None = None, **opts) -> None:
    """Serve upgrader and daemon as installed, and `agent` (default: as installed)."""
    fakeci.add_file("upgrade/upgrader" + suffix(), (install_dir / "tmp/upgrader").read_bytes())
    fakeci.add_file("upgrade/devopsDaemon" + suffix(),
                    (install_dir / "devopsDaemon").read_bytes())
    fakeci.add_file("upgrade/devopsAgent" + suffix(),
                    agent if agent is not None else (install_dir / "devopsAgent").read_bytes(),
                    **opts)


def finishes(fakeci) -> list[bool]:
    return [f["success"] for f in fakeci.upgrade_finishes]


def wait_finish(fakeci, agent=None, timeout: float = 60.0) -> dict:
    """The first FinishUpgrade call; fails with the logs when none comes."""
    if not fakeci.wait_for("upgrade_finishes", 1, timeout=timeout):
        logs = ""
        if agent is not None:
            logs = "\n".join(agent.read_log().splitlines()[-40:])
        upg = agent.install_dir / "logs/devopsUpgrader.log" if agent else None
        if upg is not None and upg.exists():
            logs += "\n--- upgrader:\n" + "\n".join(upg.read_text().splitlines()[-40:])
        pytest.fail(f"no FinishUpgrade within {timeout}s; log tail:\n{logs}")
    return fakeci.upgrade_finishes[0]


def running_agent(install_dir: Path) -> int | None:
    """pid of a live process running <install_dir>/devopsAgent per runtime/agent.pid."""
    try:
        pid = int((install_dir / "runtime/agent.pid").read_text())
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError):
        return None
    return pid if exe == str((install_dir / "devopsAgent").resolve()) else None


def upgrader_log(install_dir: Path) -> str:
    path = install_dir / "logs/devopsUpgrader.log"
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="session")
def new_binaries() -> dict:
    """devopsAgent and devopsDaemon built from this tree with VERSION=v9.9.9."""
    build = REPO_ROOT / "build" / "upg"
    out = subprocess.run(["make", "-s", f"BUILD={build}", f"BIN={build}/bin",
                          f"VERSION={NEW_VERSION}", f"{build}/bin/devopsAgent",
                          f"{build}/bin/devopsDaemon"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"make of the {NEW_VERSION} binaries failed:\n{out.stderr}"
    found = {}
    for name in ("devopsAgent", "devopsDaemon"):
        binary = build / "bin" / name
        version = subprocess.run([str(binary), "version"], capture_output=True, text=True,
                                 timeout=30).stdout.strip()
        assert version == NEW_VERSION
        found[name] = binary.read_bytes()
    return found


@pytest.fixture(scope="session")
def new_agent_binary(new_binaries) -> bytes:
    """A devopsAgent that differs from bin/devopsAgent (VERSION=v9.9.9)."""
    return new_binaries["devopsAgent"]


def test_agent_upgrade_installs_new_binary(fakeci, install_dir, new_agent_binary, poll_mode):
    old_md5 = md5(install_dir / "devopsAgent")
    serve_binaries(fakeci, install_dir, agent=new_agent_binary)
    # Server rule: upgrade while the agent reports another version.
    fakeci.set_upgrade(agentVersion=NEW_VERSION)
    daemon = Daemon(install_dir, env_extra=UPGRADE_ENV).start()
    agent_view = Agent(install_dir)

    first = wait_finish(fakeci, agent_view)
    assert first["success"] is True, upgrader_log(install_dir)
    new_md5 = hashlib.md5(new_agent_binary).hexdigest()
    assert md5(install_dir / "devopsAgent") == new_md5
    assert md5(install_dir / "devopsAgent.bak") == old_md5
    assert not (install_dir / "devopsDaemon.bak").exists(), "daemon did not change"
    pid = wait_until(lambda: running_agent(install_dir), timeout=20)
    assert pid, "no agent runs after the upgrade"
    out = subprocess.run([str(install_dir / "devopsAgent"), "version"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == NEW_VERSION
    # The new agent asks again with its version: nothing more to do, so no
    # second FinishUpgrade (exactly one per attempt).
    assert wait_until(lambda: any(
        c.get("goAgentVersion") == NEW_VERSION for c in upgrade_checks(fakeci)), timeout=30)
    n = len(upgrade_checks(fakeci))
    assert wait_until(lambda: len(upgrade_checks(fakeci)) >= n + 2, timeout=30)
    assert finishes(fakeci) == [True]
    assert daemon.running, "the daemon kept running (it did not change)"
    log = upgrader_log(install_dir)
    assert "total-lock handed over by the agent" in log
    assert "is healthy" in log
    assert_no_violations(fakeci)
    kill_leftovers(install_dir)    # the new agent (the daemon leaves it running)


def test_agent_upgrade_without_daemon_starts_one(fakeci, install_dir, new_agent_binary):
    serve_binaries(fakeci, install_dir, agent=new_agent_binary)
    fakeci.set_upgrade(agentVersion=NEW_VERSION)
    agent = Agent(install_dir, env_extra=UPGRADE_ENV).start()

    first = wait_finish(fakeci, agent)
    assert first["success"] is True, upgrader_log(install_dir)
    assert agent.wait(10) == 0, "the old agent exits 0 after the hand-off"
    # No daemon ran: the upgrader started one, and it started the new agent.
    log = upgrader_log(install_dir)
    assert "started " + str(install_dir / "devopsDaemon") in log
    assert wait_until(lambda: running_agent(install_dir), timeout=20)
    assert finishes(fakeci) == [True]
    assert_no_violations(fakeci)
    kill_leftovers(install_dir)


def test_agent_and_daemon_upgrade(fakeci, install_dir, new_binaries):
    old = {name: md5(install_dir / name) for name in ("devopsAgent", "devopsDaemon")}
    serve_binaries(fakeci, install_dir, agent=new_binaries["devopsAgent"])
    fakeci.add_file("upgrade/devopsDaemon" + suffix(), new_binaries["devopsDaemon"])
    fakeci.set_upgrade(agentVersion=NEW_VERSION)
    daemon = Daemon(install_dir, env_extra=UPGRADE_ENV).start()

    first = wait_finish(fakeci, daemon)
    assert first["success"] is True, upgrader_log(install_dir)
    for name in old:
        assert md5(install_dir / name) == hashlib.md5(new_binaries[name]).hexdigest()
        assert md5(install_dir / (name + ".bak")) == old[name]
    # The daemon re-executed the new binary in place (SIGUSR2): same pid, so a
    # service manager (systemd, launchd) keeps supervising it; the new agent
    # runs under it.
    assert daemon.running
    assert int((install_dir / "runtime/daemon.pid").read_text()) == daemon.pid
    assert os.readlink(f"/proc/{daemon.pid}/exe") == str(install_dir / "devopsDaemon")
    assert os.stat(f"/proc/{daemon.pid}/exe").st_ino == \
        os.stat(install_dir / "devopsDaemon").st_ino
    assert wait_until(lambda: running_agent(install_dir), timeout=20)
    assert "now runs the new devopsDaemon" in upgrader_log(install_dir)
    assert "SIGUSR2: re-executing" in daemon.read_log()
    assert "stopping the daemon" not in upgrader_log(install_dir)
    n = len(upgrade_checks(fakeci))
    assert wait_until(lambda: len(upgrade_checks(fakeci)) >= n + 2, timeout=30)
    assert finishes(fakeci) == [True]
    assert_no_violations(fakeci)
    kill_leftovers(install_dir)


def test_corrupt_download_leaves_binaries_untouched(fakeci, install_dir, new_agent_binary):
    before = {name: md5(install_dir / name) for name in ("devopsAgent", "devopsDaemon")}
    serve_binaries(fakeci, install_dir, agent=new_agent_binary, md5="0" * 32)
    fakeci.set_upgrade(agent=True)
    agent = Agent(install_dir, fast=True).start()

    first = wait_finish(fakeci, agent)
    fakeci.set_upgrade()
    assert first["success"] is False
    assert all(s is False for s in finishes(fakeci))
    assert {name: md5(install_dir / name) for name in before} == before
    assert not (install_dir / "tmp/devopsAgent").exists(), "a bad download was kept"
    # An ask sent before set_upgrade() may still bring one more offer, whose
    # downloads are in flight for a moment: wait for them to end.
    assert wait_until(lambda: not list((install_dir / "tmp").glob("*.part.*")), 15), \
        "temp file left behind"
    assert not (install_dir / "devopsAgent.bak").exists()
    agent.wait_for_log(r"md5 mismatch", timeout=5)
    assert agent.running, "the agent must not hand off after a failed download"
    assert_no_violations(fakeci)


def test_stalled_download_fails_and_builds_go_on(fakeci, install_dir, new_agent_binary):
    fakeci.set_state(upgradingSeconds=0)   # let fakeci hand out builds meanwhile
    serve_binaries(fakeci, install_dir, agent=new_agent_binary, stall=600)
    fakeci.set_upgrade(agent=True)
    agent = Agent(install_dir, fast=True,
                  env_extra={"DEVOPS_AGENT_STALL_SEC": "12"}).start()

    # The stalled download is in flight: a build must still be claimed and run.
    assert wait_until(lambda: fakeci.requests("devopsAgent" + suffix()), timeout=30)
    # One attempt only (a second one, offered after the first ends, would
    # have its own partial files while this test looks for leftovers).
    fakeci.set_upgrade()
    fakeci.queue_build(script="echo built during a stalled download")
    assert fakeci.wait_for("finished", 1, timeout=60), agent.read_log()[-3000:]
    first = wait_finish(fakeci, agent)
    assert first["success"] is False
    ran = [line["t"] for line in fakeci.logs]
    assert ran and min(ran) < first["t"], "the build waited for the download"
    agent.wait_for_log(r"download upgrade/devopsAgent\S* failed", timeout=5)
    assert not list((install_dir / "tmp").glob("*.part.*"))
    # Everything was released: the next build is claimed as usual.
    fakeci.queue_build(script="echo after the stall")
    assert fakeci.wait_for("finished", 2, timeout=30)
    assert agent.running
    assert_no_violations(fakeci)


def test_crashing_new_agent_is_rolled_back(fakeci, install_dir):
    old_md5 = md5(install_dir / "devopsAgent")
    serve_binaries(fakeci, install_dir, agent=CRASHING_AGENT)
    fakeci.set_upgrade(agent=True)
    Daemon(install_dir, env_extra=UPGRADE_ENV).start()
    agent_view = Agent(install_dir)

    first = wait_finish(fakeci, agent_view, timeout=90)
    fakeci.set_upgrade()
    assert first["success"] is False, upgrader_log(install_dir)
    assert md5(install_dir / "devopsAgent") == old_md5
    assert md5(install_dir / "devopsAgent.bak") == old_md5
    # The previous agent runs again (the daemon may still be backing off).
    assert wait_until(lambda: running_agent(install_dir), timeout=90), upgrader_log(install_dir)
    assert finishes(fakeci) == [False]
    log = upgrader_log(install_dir)
    assert "rolling back" in log and "restored devopsAgent" in log
    assert_no_violations(fakeci)
    kill_leftovers(install_dir)


def test_rollback_reexecutes_the_daemon_back(fakeci, install_dir, new_binaries):
    """Agent and daemon change, the new agent crashes: the daemon (same pid,
    so still under its service manager) ends up running the old binary."""
    old = {name: md5(install_dir / name) for name in ("devopsAgent", "devopsDaemon")}
    serve_binaries(fakeci, install_dir, agent=CRASHING_AGENT)
    fakeci.add_file("upgrade/devopsDaemon" + suffix(), new_binaries["devopsDaemon"])
    fakeci.set_upgrade(agent=True)
    daemon = Daemon(install_dir, env_extra=UPGRADE_ENV).start()

    first = wait_finish(fakeci, Agent(install_dir), timeout=90)
    fakeci.set_upgrade()
    assert first["success"] is False, upgrader_log(install_dir)
    assert {name: md5(install_dir / name) for name in old} == old
    assert daemon.running
    assert wait_until(lambda: os.stat(f"/proc/{daemon.pid}/exe").st_ino ==
                      os.stat(install_dir / "devopsDaemon").st_ino, timeout=10)
    assert daemon.read_log().count("SIGUSR2: re-executing") == 2
    assert wait_until(lambda: running_agent(install_dir), timeout=90), upgrader_log(install_dir)
    assert finishes(fakeci) == [False]
    assert_no_violations(fakeci)
    kill_leftovers(install_dir)


def make_jdk_zip(path: Path, java: Path, version: str | None = "17.0.12") -> None:
    """A jdk17.zip with an executable bin/java, a symlink and a ../evil entry.

    version: JAVA_VERSION of its `release` file (what the java stand-in
    reports); None: no release file (the stand-in's default, 17.0.9).
    """
    def info(name: str, mode: int) -> zipfile.ZipInfo:
        zi = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
        zi.create_system = 3
        zi.external_attr = mode << 16
        return zi

    with zipfile.ZipFile(path, "w") as z:
        z.writestr(info("bin/java", stat.S_IFREG | 0o755), java.read_bytes())
        if version is not None:
            z.writestr(info("release", stat.S_IFREG | 0o644),
                       f'JAVA_VERSION="{version}"\n'.encode())
        z.writestr(info("lib/modules", stat.S_IFREG | 0o644), b"modules\n")
        z.writestr(info("lib/java-link", stat.S_IFLNK | 0o777), b"../bin/java")
        z.writestr(info("../evil", stat.S_IFREG | 0o644), b"zip-slip\n")


def test_worker_and_jdk_upgrade(fakeci, install_dir, tmp_path):
    jar = install_dir / "worker-agent.jar"
    jar_inode = jar.stat().st_ino
    (install_dir / "jre.zip").write_bytes(b"the shipped jre.zip\n")
    fakeci.add_file("jar/worker-agent.jar", b"v1.16.0\n")
    make_jdk_zip(tmp_path / "jdk17.zip", install_dir / "jdk17/bin/java")
    fakeci.add_file("jre/" + suffix()[1:] + "/jdk17.zip", (tmp_path / "jdk17.zip").read_bytes())
    fakeci.set_upgrade(worker=True, jdk=True)
    agent = Agent(install_dir, fast=True).start()

    first = wait_finish(fakeci, agent)
    fakeci.set_upgrade()
    assert first["success"] is True, agent.read_log()[-3000:]
    # Worker: new content, put in place by rename (a new inode).
    assert jar.read_text() == "v1.16.0\n"
    assert jar.stat().st_ino != jar_inode
    # JDK 17: jdk17/ exists, so a new jdk17-<ts>/ with modes and symlinks,
    # the path switched.
    jdk = read_properties(install_dir / ".agent.properties")["devops.agent.jdk17.dir.path"]
    assert jdk.startswith("jdk17-") and jdk[6:].isdigit(), jdk
    new = install_dir / jdk
    assert os.access(new / "bin/java", os.X_OK)
    assert stat.S_IMODE((new / "lib/modules").stat().st_mode) == 0o644
    assert os.path.islink(new / "lib/java-link")
    assert os.readlink(new / "lib/java-link") == "../bin/java"
    # The ../evil entry was rejected: nothing outside jdk17-<ts>/.
    assert not (install_dir / "evil").exists()
    assert not (install_dir.parent / "evil").exists()
    agent.wait_for_log(r"entry '\.\./evil' rejected", timeout=5)
    # The old jdk17/ is gone; jre.zip and the JDK 8 jdk/ stay untouched.
    assert not (install_dir / "jdk17").exists()
    assert (install_dir / "jre.zip").read_bytes() == b"the shipped jre.zip\n"
    assert (install_dir / "jdk/bin/java").exists()
    # The agent now reports the new worker and the new JDK 17 version.
    assert wait_until(lambda: any(
        c.get("workerVersion") == "v1.16.0"
        and (c.get("jdkVersion") or [""])[0] == "openjdk 17.0.12 2024-04-16"
        for c in upgrade_checks(fakeci)), timeout=30)
    assert finishes(fakeci) == [True]
    # Builds use the new JDK 17.
    fakeci.queue_build(script="echo on the new jdk")
    assert fakeci.wait_for("finished", 1, timeout=30)
    assert fakeci.finished[0]["success"] is True
    assert fakeci.worker_ends[0]["env"]["DEVOPS_AGENT_JDK_17_PATH"] == os.path.realpath(new / "bin/java")
    assert_no_violations(fakeci)


def test_no_upgrade_while_a_build_runs(fakeci, install_dir):
    fakeci.set_state(upgradingSeconds=0)
    fakeci.add_file("jar/worker-agent.jar", b"v1.16.0\n")
    agent = Agent(install_dir, fast=True).start()
    fakeci.queue_build(script="echo started; sleep 4; echo done")
    assert wait_until(lambda: fakeci.logs, timeout=30), agent.read_log()[-3000:]
    started = fakeci.logs[0]["t"]
    fakeci.set_upgrade(worker=True)
    assert fakeci.wait_for("finished", 1, timeout=60)
    build_end = fakeci.finished[0]["t"]
    first = wait_finish(fakeci, agent)
    fakeci.set_upgrade()
    assert first["success"] is True
    during = [c["t"] for c in upgrade_checks(fakeci) if started < c["t"] < build_end]
    assert not during, "an upgrade check was sent while a build ran"
    assert first["t"] > build_end
    assert (install_dir / "worker-agent.jar").read_text() == "v1.16.0\n"
    assert_no_violations(fakeci)


def test_debug_mode_never_upgrades(fakeci, install_dir):
    fakeci.set_upgrade(agent=True, worker=True, jdk=True)
    (install_dir / ".debug").write_text("1")      # `devopsAgent debug on`
    agent = Agent(install_dir, fast=True).start()
    agent.wait_for_log(r"upgrade: disabled in debug mode", timeout=30)
    # Several upgrade periods (1 s) later there is still no check at all.
    n = len(wait_heartbeats(fakeci, 1, timeout=30))
    assert wait_heartbeats(fakeci, n + 3, timeout=30)
    assert not upgrade_checks(fakeci)
    assert all(not r["json"]["askEnable"]["upgrade"]
               for r in fakeci.requests("thirdPartyAgent/ask"))
    assert not fakeci.upgrade_finishes


def test_upgrader_uninstall_action(install_dir, tmp_path):
    # HEAD's upgrader runs `WORKDIR/devopsAgent uninstall` (test_cli.py checks
    # what that command does); system paths point into tmp_path.
    (install_dir / ".install_type").write_text("DIRECT")
    env = dict(os.environ, DEVOPS_SYSTEMD_SYSTEM_DIR=str(tmp_path / "units"),
               DEVOPS_RC_LOCAL=str(tmp_path / "rc.local"))
    up = install_dir / "tmp" / "upgrader"
    out = subprocess.run([str(up), "-action=uninstall"], cwd="/", capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert not (install_dir / ".install_type").exists()
    assert (install_dir / "runtime/upgrade.pid").exists()
    assert "Uninstall complete" not in out.stdout     # output goes to the log
    log = upgrader_log(install_dir)
    assert "uninstall: devopsAgent uninstall exit code 0" in log
    assert "[BK-CI] Uninstall complete" in log
    bad = subprocess.run([str(up), "-action=bogus"], capture_output=True, timeout=60)
    assert bad.returncode == 1
