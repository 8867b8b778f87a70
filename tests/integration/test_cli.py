"""Tests of the devopsAgent subcommands (agent/cli.c, cli_service.c,
cli_env.c, status.c): install in every mode, start, stop, uninstall,
repair, debug, version, help, status, the .env/.path snapshot, the daemon
starting the agent with no argument, and `upgrader -action=uninstall`.

Each test runs the real binaries in a temporary install dir laid out as the
server's agent.zip (cli_box.py), with PATH shims for the service managers.
"""
import json
import os
import plistlib
import re
import signal
import subprocess

import pytest

import stub_agent as sa
from cli_box import (SERVICE, Box, assert_running, assert_stopped, binaries_built,
                     cmdline, environ, unit_text)

pytestmark = pytest.mark.skipif(not binaries_built(), reason="binaries not built")


@pytest.fixture
def box(tmp_path):
    b = Box(tmp_path)
    yield b
    b.close()


def out_lines(r):
    """stdout lines; every one must carry the [BK-CI] prefix."""
    lines = r.stdout.splitlines()
    assert all(l.startswith("[BK-CI]") for l in lines), r.stdout
    return lines


# ------------------------------------------------------------ plain commands

@pytest.mark.parametrize("arg", ["-h", "--help", "help"])
def test_help(box, arg):
    r = box.cli(arg)
    assert "install" in r.stdout and "status" in r.stdout and "drain" in r.stdout
    assert not (box.inst / "runtime").exists()


def test_unknown_command_prints_usage_and_fails(box):
    r = box.cli("frobnicate", check=False)
    assert r.returncode == 1
    assert "[BK-CI][ERROR] unknown command: frobnicate" in r.stderr
    assert "usage: devopsAgent" in r.stderr
    assert not (box.inst / "runtime").exists(), "a command must not start the agent"


def test_version_forms(box):
    assert len(box.cli("version").stdout.splitlines()) == 1
    full = box.cli("version", "-f").stdout.splitlines()
    assert len(full) == 3
    assert box.cli("fullVersion").stdout.splitlines() == full
    assert box.cli("version", "-x", check=False).returncode == 1


def test_debug_on_off(box):
    assert "Debug mode: OFF" in box.cli("debug").stdout
    for on in ("on", "enable"):
        box.cli("debug", on)
        assert (box.inst / ".debug").read_text() == "1"
        assert "Debug mode: ON" in box.cli("debug").stdout
        box.cli("debug", "off" if on == "on" else "disable")
        assert not (box.inst / ".debug").exists()
    r = box.cli("debug", "loud", check=False)
    assert r.returncode == 1 and r.stderr.startswith("[BK-CI][ERROR] ")


def test_debug_file_turns_on_debug_logging_of_the_agent(box):
    box.cli("debug", "on")
    box.cli("install", "direct")
    assert_running(box)
    pid = box.agent()
    assert cmdline(pid) == [str(box.inst / "devopsAgent")]
    log = box.inst / "logs" / "devopsAgent.log"
    assert sa.wait_for(lambda: "|DEBUG|" in log.read_text(errors="replace"), timeout=15)


# ------------------------------------------------------------ install

def test_install_direct(box):
    (box.inst / "devopsDaemon").chmod(0o644)
    r = box.cli("install", "direct")
    lines = out_lines(r)
    assert any("mode: DIRECT" in l for l in lines)
    assert (box.inst / ".install_type").read_text() == "DIRECT"
    assert (box.inst / "logs").is_dir() and (box.inst / "workspace").is_dir()
    assert (box.inst / "jdk17" / "bin" / "java").exists()
    assert (box.inst / "jdk" / "release").read_text() == "JAVA_VERSION=1.8.0_392\n"
    assert os.access(box.inst / "jdk" / "bin" / "java", os.X_OK)
    assert os.stat(box.inst / "devopsDaemon").st_mode & 0o777 == 0o755
    assert (box.inst / ".env").exists() and (box.inst / ".path").exists()
    assert_running(box)
    # The daemon starts the agent with no argument (any would be a subcommand).
    assert cmdline(box.agent()) == [str(box.inst / "devopsAgent")]
    assert cmdline(box.daemon()) == [str(box.inst / "devopsDaemon")]
    assert not any(c.startswith(("systemctl", "launchctl")) for c in box.calls())


def test_install_service_writes_head_unit(box):
    r = box.cli("install")
    unit = box.system_dir / (SERVICE + ".service")
    assert unit.read_text() == unit_text(box.inst, SERVICE)
    assert oct(unit.stat().st_mode & 0o777) == oct(0o644)
    calls = box.calls()
    assert "systemctl is-system-running" in calls
    assert calls.index("systemctl daemon-reload") < calls.index(
        "systemctl enable --now " + SERVICE)
    assert (box.inst / ".install_type").read_text() == "SERVICE"
    assert "Install complete" in r.stdout
    assert_running(box)
    assert not any(c.startswith("loginctl") for c in calls)


@pytest.mark.parametrize("state,mode", [("degraded", "SERVICE"), ("starting", "SERVICE"),
                                        ("offline", "DIRECT")])
def test_install_mode_follows_systemd_state(box, state, mode):
    r = box.cli("install", env={"SHIM_SYSTEMD_STATE": state})
    assert (box.inst / ".install_type").read_text() == mode
    assert (box.system_dir / (SERVICE + ".service")).exists() == (mode == "SERVICE")
    if mode == "DIRECT":
        assert "No systemd detected" in r.stdout
    assert_running(box)


def test_install_user_mode(box):
    env = {"DEVOPS_AGENT_TEST_UID": "1000", "DEVOPS_AGENT_TEST_USER": "tester"}
    box.cli("install", "user", env=env)
    unit = box.home / ".config" / "systemd" / "user" / (SERVICE + ".service")
    assert unit.read_text() == unit_text(box.inst, SERVICE, user=True)
    assert not box.system_dir.exists()
    calls = box.calls()
    assert "systemctl --user is-system-running" in calls
    assert "systemctl --user enable --now " + SERVICE in calls
    assert "loginctl enable-linger" in calls
    assert (box.inst / ".install_type").read_text() == "USER"
    assert_running(box)

    def linger_check():
        doc = json.loads(box.cli("status", "--json", env=env, check=False).stdout)
        return {c["name"]: c["ok"] for c in doc["checks"]}["linger"]
    assert linger_check() is False
    (box.tmp / "linger").mkdir()
    (box.tmp / "linger" / "tester").touch()
    assert linger_check() is True
    box.cli("stop", env=env)
    assert "systemctl --user stop " + SERVICE in box.calls()
    assert_stopped(box)


def test_install_user_refused_for_root_and_bad_mode(box):
    r = box.cli("install", "user", check=False)
    assert r.returncode == 1 and "non-root" in r.stderr
    r = box.cli("install", "bogus", check=False)
    assert r.returncode == 1 and "unknown install mode: bogus" in r.stderr
    assert not (box.inst / ".install_type").exists()
    assert box.calls() == [] or all("enable" not in c for c in box.calls())


def test_install_twice_replaces_the_previous_install(box):
    box.cli("install")
    assert_running(box)
    first = box.daemon()
    r = box.cli("install", "direct")
    assert "Cleaning up previous SERVICE installation" in r.stdout
    assert not (box.system_dir / (SERVICE + ".service")).exists()
    assert (box.inst / ".install_type").read_text() == "DIRECT"
    assert_running(box)
    assert box.daemon() != first


def test_install_refuses_a_path_a_unit_cannot_hold(tmp_path):
    b = Box(tmp_path / "with space")
    try:
        r = b.cli("install", check=False)
        assert r.returncode == 1 and "cannot go into a systemd unit" in r.stderr
        b.cli("install", "direct")
        assert_running(b)
    finally:
        b.close()


# ------------------------------------------------------------ start / stop

def test_start_stop_direct(box):
    r = box.cli("start")
    assert "direct" in r.stdout
    assert_running(box)
    daemon, agent = box.daemon(), box.agent()
    r = box.cli("start")
    assert "already running (pid %d)" % daemon in r.stdout
    assert box.daemon() == daemon and box.agent() == agent
    r = box.cli("stop")
    out = r.stdout
    assert out.index("daemon: stopping") < out.index("agent: stopping"), out
    assert_stopped(box)


def test_start_stop_service(box):
    box.cli("install")
    assert_running(box)
    box.cli("stop")
    assert "systemctl stop " + SERVICE in box.calls()
    assert_stopped(box)
    assert (box.system_dir / (SERVICE + ".service")).exists(), "stop is not uninstall"
    box.cli("start")
    assert "systemctl start " + SERVICE in box.calls()
    assert_running(box)


def test_stop_never_signals_stale_pids_nor_builds(box):
    rt = box.inst / "runtime"
    rt.mkdir()
    (rt / "daemon.pid").write_text(str(box.bystanders[0].pid))
    (rt / "agent.pid").write_text(str(box.bystanders[1].pid))
    r = box.cli("stop")
    assert r.stdout.count("left alone") == 2, r.stdout
    assert all(b.poll() is None for b in box.bystanders)


def test_stop_leaves_build_processes_running(box):
    box.cli("install", "direct")
    assert_running(box)
    # A build-like process: own session, started from the workspace.
    build = subprocess.Popen(["setsid", "sleep", "300"], cwd=str(box.inst / "workspace"))
    try:
        box.cli("stop")
        assert_stopped(box)
        assert build.poll() is None, "stop killed a build process"
    finally:
        build.kill()
        build.wait()


def test_uninstall(box):
    box.rc_local.parent.mkdir(parents=True)
    other = "cd /x && ./devopsDaemon & # %s2" % SERVICE   # a longer id: kept
    box.rc_local.write_text("#!/bin/sh\ncd %s && ./devopsDaemon & # %s\n%s\nexit 0\n"
                            % (box.inst, SERVICE, other))
    box.rc_local.chmod(0o755)
    box.cli("install")
    assert_running(box)
    assert box.rc_local.read_text() == "#!/bin/sh\n%s\nexit 0\n" % other, \
        "install (SERVICE) drops old rc.local lines"
    before = set(f for f in box.files() if not f.startswith(("java.env", "runtime/")))
    box.cli("uninstall")
    calls = box.calls()
    assert "systemctl stop " + SERVICE in calls
    assert "systemctl disable " + SERVICE in calls
    assert not (box.system_dir / (SERVICE + ".service")).exists()
    assert not (box.inst / ".install_type").exists()
    assert_stopped(box)
    assert before - {".install_type"} <= set(box.files())
    assert os.access(box.rc_local, os.X_OK)


def test_upgrader_uninstall_action_runs_the_cli(box):
    box.cli("install")
    assert_running(box)
    r = subprocess.run([str(box.inst / "tmp" / "upgrader"), "-action=uninstall"],
                       cwd="/", env=box.env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not (box.system_dir / (SERVICE + ".service")).exists()
    assert not (box.inst / ".install_type").exists()
    assert_stopped(box)
    log = (box.inst / "logs" / "devopsUpgrader.log").read_text()
    assert "uninstall: devopsAgent uninstall exit code 0" in log


def test_repair_unzips_again_and_starts(box):
    box.cli("install", "direct")
    assert_running(box)
    (box.inst / "jdk17" / "release").write_text("broken\n")
    (box.inst / "jdk" / "bin" / "java").unlink()
    box.cli("repair")
    assert (box.inst / "jdk17" / "release").read_text() == "JAVA_VERSION=17.0.9\n"
    assert (box.inst / "jdk" / "bin" / "java").exists()
    assert_running(box)


# ------------------------------------------------------------ .env / .path

def test_env_snapshot_format_and_user_lines_kept(box):
    env = {"JAVA_HOME": "/opt/jdk", "LANG": "C.UTF-8", "GOPATH": "/go",
           "NOT_SNAPSHOT": "x", "LC_ALL": ""}
    box.cli("install", "direct", env=env)
    lines = (box.inst / ".env").read_text().splitlines()
    assert lines[0] == "# BK-CI Agent Environment Snapshot"
    assert lines[1].startswith("# Updated: 20")
    assert lines[2] == ("# Edit this file to add custom variables; changes take "
                        "effect on next restart.")
    body = [l for l in lines[3:]]
    keys = [l.split("=", 1)[0] for l in body]
    assert keys.index("LANG") < keys.index("JAVA_HOME") < keys.index("GOPATH")
    assert "JAVA_HOME=/opt/jdk" in body and "LC_ALL" not in keys
    assert "NOT_SNAPSHOT" not in keys
    assert (box.inst / ".path").read_text() == box.env["PATH"] + "\n"
    assert oct((box.inst / ".env").stat().st_mode & 0o777) == oct(0o644)
    # An operator's own line survives the next snapshot (start).
    with open(box.inst / ".env", "a") as f:
        f.write("MY_TOOL_HOME=/opt/tool\n")
    box.cli("stop")
    box.cli("start", env={"JAVA_HOME": "/opt/jdk2"})
    text = (box.inst / ".env").read_text()
    assert "MY_TOOL_HOME=/opt/tool\n" in text and "JAVA_HOME=/opt/jdk2\n" in text


def test_stop_right_after_start_leaves_nothing(box):
    """`install` and `start` return once the agent itself runs (not only the
    daemon), so a `stop` right after them finds and stops it: an agent still
    starting has no pid file yet, and a `stop` then used to miss it."""
    for cmd in (("install", "direct"), ("start",)):
        out = box.cli(*cmd).stdout
        m = re.search(r"devopsAgent is running \(pid (\d+)\)", out)
        assert m, out
        assert int(m.group(1)) == box.agent()
        box.cli("stop")
        assert_stopped(box)


def java_env(box):
    """The environment the agent gave its last java probe (a child), or None."""
    p = box.inst / "java.env"
    if not p.exists():
        return None
    return dict(l.split("=", 1) for l in p.read_text().splitlines() if "=" in l)


def test_env_and_path_applied_to_the_agent(box):
    box.cli("install", "direct")
    box.cli("stop")
    with open(box.inst / ".env", "a") as f:
        f.write("\n  # comment\n BKCI_TEST_VAR = hello=world \n=novalue\n")
    # start snapshots the invoking PATH; the daemon gets a minimal one, as
    # under systemd, and the agent puts the snapshot in front.
    snap = "/opt/snap/bin:/usr/bin::/opt/snap/bin:%s" % box.env["PATH"]
    (box.inst / "java.env").unlink(missing_ok=True)
    box.cli("start", env={"PATH": snap})
    assert (box.inst / ".path").read_text() == snap + "\n"
    assert "BKCI_TEST_VAR= hello=world\n" in (box.inst / ".env").read_text()
    assert_running(box)
    e = sa.wait_for(lambda: java_env(box), timeout=20)
    assert e, "the agent ran no java probe"
    # The variable reached a child of the agent (its own /proc environ only
    # shows what it was started with).
    assert e["BKCI_TEST_VAR"] == " hello=world"
    parts = e["PATH"].split(":")
    assert parts[:2] == ["/opt/snap/bin", "/usr/bin"]
    assert len(parts) == len(set(parts)), "duplicates are removed"
    assert "" not in parts
    assert "BKCI_TEST_VAR" not in environ(box.daemon()), "the daemon does not read .env"


def test_env_fifo_does_not_block_the_agent(box):
    box.cli("install", "direct")
    box.cli("stop")
    (box.inst / ".env").unlink()
    os.mkfifo(box.inst / ".env")
    d = sa.start_daemon(box.inst, env=box.env)
    try:
        assert_running(box)
        log = box.inst / "logs" / "devopsAgent.log"
        assert sa.wait_for(lambda: ".env: not applied" in log.read_text(errors="replace"),
                           timeout=10), log.read_text(errors="replace")
    finally:
        d.kill()
        d.wait()


# ------------------------------------------------------------ status

def test_status_running_and_stopped(box):
    box.cli("install", "direct")
    assert_running(box)
    r = box.cli("status", "--json", check=False)
    doc = json.loads(r.stdout)
    names = {c["name"]: c for c in doc["checks"]}
    assert names["daemon"]["ok"] and names["agent"]["ok"]
    assert names[".agent.properties"]["ok"]
    assert "0123456789abcdef0123456789abcdef" not in r.stdout, "secret must be masked"
    assert names["jdk17"]["ok"] and names["jdk"]["ok"] and names["worker-agent.jar"]["ok"]
    assert not names["gateway tcp"]["ok"]          # the gateway port is closed
    assert doc["install_mode"] == "DIRECT"
    # The server is unreachable: exit 5, with what to do next.
    assert r.returncode == 5 and doc["exit_code"] == 5 and doc["healthy"] is False
    assert names["gateway tcp"]["class"] == 5 and names["gateway tcp"]["hint"]
    text = box.cli("status", check=False)
    assert text.returncode == 5
    out_lines(text)
    assert "\u2717 gateway tcp" in text.stdout
    box.cli("stop")
    r = box.cli("status", "--json", check=False)
    assert r.returncode == 3
    assert json.loads(r.stdout)["checks"][0]["name"] in ("daemon", "service")
    assert box.cli("status", "--yaml", check=False).returncode == 1


def test_status_healthy_against_fakeci(box, fakeci):
    from fakeci.layout import write_properties
    write_properties(box.inst, fakeci)
    box.cli("install", "direct")
    assert_running(box)
    r = box.cli("status", "--json", check=False)
    doc = json.loads(r.stdout)
    bad = [c for c in doc["checks"] if not c["ok"]]
    assert r.returncode == 0 and not bad, bad
    assert fakeci.secret_key not in r.stdout


# ------------------------------------------------------------ macOS (launchd)

def read_plist(path):
    with open(path, "rb") as f:
        return plistlib.load(f)


MAC = {"DEVOPS_AGENT_TEST_OS": "darwin"}


def test_macos_root_launch_daemon(box):
    box.cli("install", env=MAC)
    plist = box.daemon_dir / (SERVICE + ".plist")
    p = read_plist(plist)
    assert p["Label"] == SERVICE
    assert p["ProgramArguments"] == [str(box.inst / "devopsDaemon")]
    assert p["WorkingDirectory"] == str(box.inst)
    assert p["RunAtLoad"] is True and p["KeepAlive"] == {"Crashed": True}
    assert p["AbandonProcessGroup"] is True
    assert "launchctl bootstrap system %s" % plist in box.calls()
    assert (box.inst / ".install_type").read_text() == "DAEMON"
    assert_running(box)
    box.cli("stop", env=MAC)
    assert "launchctl bootout system/" + SERVICE in box.calls()
    assert_stopped(box)
    box.cli("start", env=MAC)
    assert_running(box)
    box.cli("uninstall", env=MAC)
    assert not plist.exists()
    assert_stopped(box)


@pytest.mark.parametrize("no_gui,domain,mode", [("0", "gui/501", "LOGIN"),
                                                ("1", "user/501", "BACKGROUND")])
def test_macos_user_launch_agent(box, no_gui, domain, mode):
    env = dict(MAC, DEVOPS_AGENT_TEST_UID="501", SHIM_NO_GUI=no_gui)
    box.cli("install", env=env)
    plist = box.home / "Library" / "LaunchAgents" / (SERVICE + ".plist")
    assert read_plist(plist)["Label"] == SERVICE
    assert "launchctl bootstrap %s %s" % (domain, plist) in box.calls()
    assert (box.inst / ".install_type").read_text() == mode
    assert not box.daemon_dir.exists()
    assert_running(box)
    box.cli("uninstall", env=env)
    assert not plist.exists()
    assert_stopped(box)
