"""JDK 17: layout, the worker's JDK variables, jdkVersion, the JDK 17 upgrade.

The install directory has jdk/ (JDK 8) and jdk17/ (JDK 17), both holding the
java stand-in (tests/fakeci/java); a `release` file next to bin/ changes the
version the stand-in reports. Every test runs the real devopsAgent against
fakeci; nothing asserts how long anything takes.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import (Agent, assert_no_violations, heartbeats, read_properties,
                      upgrade_checks, wait_heartbeats, wait_until)
from test_upgrade import make_jdk_zip, suffix, wait_finish

NEW_VM = "OpenJDK 64-Bit Server VM (build 17.0.12+9, mixed mode)"


def zip_name() -> str:
    """Server name of this machine's JDK 17 zip."""
    return "jre/" + suffix()[1:] + "/jdk17.zip"


def serve_jdk(fakeci, tmp_path: Path, install_dir: Path, version: str | None = "17.0.12") -> None:
    make_jdk_zip(tmp_path / "jdk17.zip", install_dir / "jdk/bin/java", version)
    fakeci.add_file(zip_name(), (tmp_path / "jdk17.zip").read_bytes())


def jdk17_key(install_dir: Path) -> str | None:
    return read_properties(install_dir / ".agent.properties").get("devops.agent.jdk17.dir.path")


def jdk17_dirs(install_dir: Path) -> list[str]:
    return sorted(p.name for p in install_dir.iterdir()
                  if p.is_dir() and (p.name == "jdk17" or p.name.startswith("jdk17-")))


def zip_downloads(fakeci) -> list:
    return fakeci.requests("jdk17.zip")


def heartbeat_jdk(fakeci):
    hb = fakeci.get_state()["lastHeartbeat"] or {}
    return (hb.get("props") or {}).get("jdkVersion", "absent")


def real(path: Path) -> str:
    return os.path.realpath(path)


def run_build(fakeci, script: str = "echo hello") -> dict:
    """Run one build to its finish report; the worker's end report."""
    n, done = len(fakeci.worker_ends), len(fakeci.finished)
    fakeci.queue_build(script=script)
    assert fakeci.wait_for("worker_ends", n + 1, timeout=60)
    assert fakeci.wait_for("finished", done + 1, timeout=60)
    return fakeci.worker_ends[n]


# ------------------------------------------------------------- layout and env

def test_worker_runs_on_jdk17_with_jdk_variables(fakeci, install_dir):
    (install_dir / ".install_type").write_text("  service\n")
    # Heartbeat envs come after the JDK variables and override them.
    fakeci.set_state(envs={"DEVOPS_AGENT_JDK_8_PATH": "/from/the/server"})
    agent = Agent(install_dir, fast=True).start()
    assert wait_heartbeats(fakeci, 2, timeout=30)
    end = run_build(fakeci)
    env = end["env"]
    assert env["DEVOPS_AGENT_JDK_17_PATH"] == real(install_dir / "jdk17/bin/java")
    assert env["DEVOPS_AGENT_JDK_8_PATH"] == "/from/the/server"
    assert env["DEVOPS_AGENT_INSTALL_MODE"] == "SERVICE"
    # The worker itself ran on the latest java: jdk17/bin/java.
    assert real(end["argv"][0]) == real(install_dir / "jdk17/bin/java")
    jdk = heartbeat_jdk(fakeci)
    assert jdk == ["openjdk 17.0.9 2023-10-17", "OpenJDK Runtime Environment (build 17.0.9+9)",
                   "OpenJDK 64-Bit Server VM (build 17.0.9+9, mixed mode)"], jdk
    # Without heartbeat envs the agent's own value shows.
    fakeci.set_state(envs={})
    n = len(heartbeats(fakeci))
    assert wait_heartbeats(fakeci, n + 2, timeout=30)
    env = run_build(fakeci)["env"]
    assert env["DEVOPS_AGENT_JDK_8_PATH"] == real(install_dir / "jdk/bin/java")
    assert agent.running
    assert_no_violations(fakeci)


def test_without_jdk17_the_worker_runs_on_jdk8(fakeci, install_dir):
    shutil.rmtree(install_dir / "jdk17")
    agent = Agent(install_dir, fast=True).start()
    assert wait_heartbeats(fakeci, 2, timeout=30)
    assert heartbeat_jdk(fakeci) == []           # no jdk17 directory
    end = run_build(fakeci)
    assert end["env"]["DEVOPS_AGENT_JDK_17_PATH"] == ""
    assert end["env"]["DEVOPS_AGENT_JDK_8_PATH"] == real(install_dir / "jdk/bin/java")
    assert end["env"]["DEVOPS_AGENT_INSTALL_MODE"] == ""
    assert real(end["argv"][0]) == real(install_dir / "jdk/bin/java")
    # A jdk17/ holding a JDK that is not 17: three empty lines.
    (install_dir / "jdk17/bin").mkdir(parents=True)
    shutil.copy2(install_dir / "jdk/bin/java", install_dir / "jdk17/bin/java")
    (install_dir / "jdk17/release").write_text('JAVA_VERSION="11.0.21"\n')
    assert wait_until(lambda: heartbeat_jdk(fakeci) == ["", "", ""], timeout=30), \
        heartbeat_jdk(fakeci)
    assert agent.running
    assert_no_violations(fakeci)


# ------------------------------------------------------------------ upgrade

def test_jdk17_upgrade_into_missing_dir_then_no_loop(fakeci, install_dir, tmp_path):
    """No jdk17/: it is created, the server's version rule is then met."""
    shutil.rmtree(install_dir / "jdk17")
    serve_jdk(fakeci, tmp_path, install_dir)
    fakeci.set_upgrade(jdkVersion=NEW_VM)          # server rule: [] or a different VM line
    agent = Agent(install_dir, fast=True).start()

    first = wait_finish(fakeci, agent)
    assert first["success"] is True, agent.read_log()[-3000:]
    assert jdk17_key(install_dir) == "jdk17"
    assert jdk17_dirs(install_dir) == ["jdk17"]
    assert (install_dir / "jdk17/bin/java").exists()
    # The next checks report the new JDK, so the server asks nothing more.
    assert wait_until(lambda: any(
        (c.get("jdkVersion") or ["", "", ""])[2] == NEW_VM
        for c in upgrade_checks(fakeci)), timeout=30)
    n = len(upgrade_checks(fakeci))
    assert wait_until(lambda: len(upgrade_checks(fakeci)) >= n + 3, timeout=30)
    assert [f["success"] for f in fakeci.upgrade_finishes] == [True]
    assert len(zip_downloads(fakeci)) == 1
    assert agent.read_log().count("upgrade: unpacking tmp/jdk17.zip") == 1
    # The JDK 8 is untouched; builds run on the new JDK 17.
    assert (install_dir / "jdk/bin/java").exists()
    end = run_build(fakeci)
    assert end["env"]["DEVOPS_AGENT_JDK_17_PATH"] == real(install_dir / "jdk17/bin/java")
    assert_no_violations(fakeci)


def test_jdk17_upgrade_switches_and_cleans_up(fakeci, install_dir, tmp_path):
    """A server that keeps offering jdk: one unpack, then 304s and no-ops."""
    (install_dir / "jdk17-1700000000/bin").mkdir(parents=True)      # a stale one
    (install_dir / "jdk1712345678/bin").mkdir(parents=True)         # not a JDK 17 name
    (install_dir / "jdk17.zip").write_bytes(b"the shipped jdk17.zip\n")
    serve_jdk(fakeci, tmp_path, install_dir)
    fakeci.set_upgrade(jdk=True)
    agent = Agent(install_dir, fast=True).start()

    assert fakeci.wait_for("upgrade_finishes", 3, timeout=60), agent.read_log()[-3000:]
    assert all(f["success"] for f in fakeci.upgrade_finishes), agent.read_log()[-3000:]
    key = jdk17_key(install_dir)
    assert key.startswith("jdk17-") and key[6:].isdigit() and key != "jdk17-1700000000", key
    # Only the new JDK 17 is left; other names and the zips stay.
    assert jdk17_dirs(install_dir) == [key]
    assert (install_dir / "jdk1712345678").is_dir()
    assert (install_dir / "jdk17.zip").read_bytes() == b"the shipped jdk17.zip\n"
    assert (install_dir / "jdk/bin/java").exists()
    assert (install_dir / key / ".devops-jdk17-md5").exists()
    # One download and one unpack; later attempts got 304 and changed nothing.
    downloads = zip_downloads(fakeci)
    assert [r["status"] for r in downloads][:1] == [200]
    assert all(r["status"] == 304 and r["query"].get("eTag") for r in downloads[1:])
    assert len(downloads) >= 2
    assert agent.read_log().count("upgrade: unpacking tmp/jdk17.zip") == 1
    assert wait_until(lambda: (heartbeat_jdk(fakeci) or ["", "", ""])[2] == NEW_VM, timeout=30)
    assert_no_violations(fakeci)


def check_old_jdk_kept(fakeci, install_dir, agent) -> None:
    """The failed zip left the JDK 17 in use, and was not unpacked again."""
    assert fakeci.wait_for("upgrade_finishes", 2, timeout=60), agent.read_log()[-3000:]
    assert not any(f["success"] for f in fakeci.upgrade_finishes)
    assert jdk17_key(install_dir) in (None, "")
    assert jdk17_dirs(install_dir) == ["jdk17"]
    assert (install_dir / "jdk17/bin/java").exists()
    assert not (install_dir / "jdk17/.devops-jdk17-md5").exists()
    log = agent.read_log()
    assert log.count("upgrade: unpacking tmp/jdk17.zip") == 1
    assert "already failed to unpack or verify" in log
    assert heartbeat_jdk(fakeci)[0] == "openjdk 17.0.9 2023-10-17"
    end = run_build(fakeci)
    assert end["env"]["DEVOPS_AGENT_JDK_17_PATH"] == real(install_dir / "jdk17/bin/java")
    assert agent.running
    assert_no_violations(fakeci)


def test_corrupt_jdk17_zip_keeps_the_old_jdk(fakeci, install_dir):
    fakeci.add_file(zip_name(), b"PK\x03\x04 this is not a zip archive" * 10)
    fakeci.set_upgrade(jdk=True)
    agent = Agent(install_dir, fast=True).start()
    check_old_jdk_kept(fakeci, install_dir, agent)


def test_zip_without_jdk17_keeps_the_old_jdk(fakeci, install_dir, tmp_path):
    serve_jdk(fakeci, tmp_path, install_dir, version="11.0.21")
    fakeci.set_upgrade(jdk=True)
    agent = Agent(install_dir, fast=True).start()
    check_old_jdk_kept(fakeci, install_dir, agent)
    agent.wait_for_log(r"no 'openjdk 17' line", timeout=5)
