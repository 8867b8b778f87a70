"""Tests of the install/start/stop/uninstall scripts.

scripts/linux and scripts/macos are one-line wrappers over the devopsAgent
subcommands (the behaviour is in C and tested in test_cli.py); these tests
check that each script reaches its subcommand from any cwd and with the
arguments it passes on. GoAgent HEAD ships the same four scripts as
`./devopsAgent <command>` one-liners run from the install dir; one test runs
HEAD's own copies against our binaries when a bk-ci checkout is at hand
(BKCI_SRC, or a git mirror), and our equivalents of them run always.
scripts/windows is only checked statically.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import stub_agent as sa
from cli_box import (SCRIPTS, SERVICE, SHIMS, Box, assert_running, assert_stopped,
                     binaries_built, cmdline, unit_text)

needs_bins = pytest.mark.skipif(not binaries_built(), reason="binaries not built")

HEAD_SCRIPTS = ("install.sh", "start.sh", "stop.sh", "uninstall.sh")


@pytest.fixture
def linux(tmp_path):
    box = Box(tmp_path, "linux")
    yield box
    box.close()


@pytest.fixture
def macos(tmp_path):
    box = Box(tmp_path, "macos")
    yield box
    box.close()


def lifecycle(box, run, env=None):
    """install, start (idempotent), stop, start, uninstall through run(name)."""
    run("install.sh")
    assert_running(box)
    assert cmdline(box.agent()) == [str(box.inst / "devopsAgent")]
    daemon = box.daemon()
    r = run("start.sh")
    assert "already running (pid %d)" % daemon in r.stdout
    run("stop.sh")
    assert_stopped(box)
    run("start.sh")
    assert_running(box)
    before = set(f for f in box.files() if not f.startswith(("java.env", "runtime/")))
    run("uninstall.sh")
    assert_stopped(box)
    assert not (box.inst / ".install_type").exists()
    lost = before - {".install_type"} - set(box.files())
    assert not lost, "uninstall deletes nothing else: %s" % lost


# ---------------------------------------------------------------- ours

@needs_bins
def test_linux_scripts_drive_the_subcommands_from_any_cwd(linux):
    lifecycle(linux, lambda name: linux.script(name))
    calls = linux.calls()
    assert "systemctl enable --now " + SERVICE in calls
    assert "systemctl stop " + SERVICE in calls
    assert "systemctl disable " + SERVICE in calls
    assert not (linux.system_dir / (SERVICE + ".service")).exists()


@needs_bins
def test_linux_install_sh_passes_the_mode_on(linux):
    linux.script("install.sh", "direct")
    assert (linux.inst / ".install_type").read_text() == "DIRECT"
    assert not linux.system_dir.exists()
    assert_running(linux)


@needs_bins
def test_linux_install_sh_writes_head_unit(linux):
    linux.script("install.sh")
    unit = linux.system_dir / (SERVICE + ".service")
    assert unit.read_text() == unit_text(linux.inst, SERVICE)
    assert_running(linux)


@needs_bins
def test_linux_install_user_unit_with_linger(linux):
    env = {"DEVOPS_AGENT_TEST_UID": "1000"}
    linux.script("install.sh", "user", env=env)
    unit = linux.home / ".config" / "systemd" / "user" / (SERVICE + ".service")
    assert unit.read_text() == unit_text(linux.inst, SERVICE, user=True)
    assert "loginctl enable-linger" in linux.calls()
    assert_running(linux)
    linux.script("uninstall.sh", env=env)
    assert not unit.exists()
    assert_stopped(linux)


@needs_bins
def test_scripts_fail_when_the_subcommand_fails(linux):
    (linux.inst / ".agent.properties").write_text("devops.agent.id=\n")
    r = linux.script("install.sh", check=False)
    assert r.returncode == 1
    assert "[BK-CI][ERROR]" in r.stderr
    assert not (linux.inst / "runtime").exists()


@needs_bins
def test_macos_scripts_drive_the_subcommands(macos):
    env = {"DEVOPS_AGENT_TEST_OS": "darwin", "DEVOPS_AGENT_TEST_UID": "501"}
    lifecycle(macos, lambda name: macos.script(name, env=env))
    calls = macos.calls()
    plist = macos.home / "Library" / "LaunchAgents" / (SERVICE + ".plist")
    assert "launchctl bootstrap gui/501 %s" % plist in calls
    assert "launchctl bootout gui/501/" + SERVICE in calls
    assert not plist.exists()


# ------------------------------------------------- GoAgent HEAD's scripts

def head_script_text(name):
    """HEAD's support-files/agent-package/script/linux/<name>: from
    $BKCI_SRC (a checkout or a git dir) or a git mirror of bk-ci in .mirror/
    next to this checkout; None when neither is there."""
    rel = "support-files/agent-package/script/linux/" + name
    src = os.environ.get("BKCI_SRC")
    candidates = []
    if src:
        candidates.append(Path(src))
    # A mirror next to the checkout: <parent of the repo>/.mirror/TencentBlueKing+bk-ci.
    mirror = sa.REPO.parent / ".mirror"
    if mirror.is_dir():
        for d in sorted(mirror.glob("TencentBlueKing+bk-ci*")):
            candidates += [d / "repo", d]
    for c in candidates:
        if (c / rel).is_file():
            return (c / rel).read_text()
        gitdir = c / ".git" if (c / ".git").exists() else c
        r = subprocess.run(["git", "--git-dir", str(gitdir), "show", "HEAD:" + rel],
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            return r.stdout
    return None


def our_equivalent(name):
    """What HEAD's script does (one line run from the install dir), ours."""
    return "#!/bin/sh\n./devopsAgent %s\n" % name[:-3]


def run_in_inst(box, name, shell):
    """Run a script as HEAD's docs say: cd to the install dir, ./<name>."""
    return box.script(name, cwd=box.inst, shell=shell)


@needs_bins
def test_head_scripts_against_our_binaries(tmp_path):
    texts = {n: head_script_text(n) for n in HEAD_SCRIPTS}
    if any(t is None for t in texts.values()):
        pytest.skip("no bk-ci source: set BKCI_SRC to a bk-ci checkout (or its git "
                    "dir) to run GoAgent HEAD's install/start/stop/uninstall.sh")
    if shutil.which("bash") is None:
        pytest.skip("HEAD's scripts need bash")
    box = Box(tmp_path)
    try:
        for n, t in texts.items():
            assert "./devopsAgent" in t, "%s is no longer a CLI wrapper" % n
            (box.inst / n).write_text(t)
            (box.inst / n).chmod(0o755)
        lifecycle(box, lambda name: run_in_inst(box, name, "bash"))
        assert "systemctl enable --now " + SERVICE in box.calls()
        assert not (box.system_dir / (SERVICE + ".service")).exists()
    finally:
        box.close()


@needs_bins
def test_head_style_one_liners_against_our_binaries(tmp_path):
    # The same check without bk-ci: HEAD's scripts are `./devopsAgent <cmd>`.
    box = Box(tmp_path)
    try:
        for n in HEAD_SCRIPTS:
            (box.inst / n).write_text(our_equivalent(n))
        lifecycle(box, lambda name: run_in_inst(box, name, "sh"))
        assert (box.system_dir.exists() and
                not (box.system_dir / (SERVICE + ".service")).exists())
    finally:
        box.close()


@needs_bins
def test_head_upgrader_style_uninstall_call(tmp_path):
    # HEAD's tmp/upgrader -action=uninstall runs `WORKDIR/devopsAgent uninstall`.
    box = Box(tmp_path)
    try:
        box.script("install.sh")
        assert_running(box)
        r = subprocess.run([str(box.inst / "devopsAgent"), "uninstall"], cwd="/",
                           env=box.env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert_stopped(box)
    finally:
        box.close()


# ---------------------------------------------------------------- static

@pytest.mark.parametrize("os_name", ["linux", "macos"])
def test_scripts_are_one_line_wrappers(os_name):
    for name in HEAD_SCRIPTS:
        lines = [l for l in (SCRIPTS / os_name / name).read_text().splitlines()
                 if l.strip() and not l.startswith("#")]
        assert lines[0] == 'cd "$(dirname -- "$0")" || exit 1', name
        cmd = name[:-3]
        want = 'exec ./devopsAgent install "$@"' if cmd == "install" else \
            "exec ./devopsAgent " + cmd
        assert lines[1:] == [want], name
        assert os.access(SCRIPTS / os_name / name, os.X_OK), name


def test_windows_batch_files_are_well_formed():
    names = ["install.bat", "start.bat", "stop.bat", "uninstall.bat"]
    for name in names:
        raw = (SCRIPTS / "windows" / name).read_bytes()
        assert raw.count(b"\n") == raw.count(b"\r\n"), name + ": CRLF line ends"
        text = raw.decode("ascii")
        assert text.lower().startswith("@echo off"), name
        assert "setlocal" in text.lower(), name
        body = "".join(l for l in text.splitlines() if not l.lstrip().lower().startswith("rem"))
        assert body.count("(") == body.count(")"), name + ": unbalanced parentheses"
    assert "sc.exe create" in (SCRIPTS / "windows" / "install.bat").read_text()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="no shellcheck")
def test_scripts_and_shims_are_shellcheck_clean():
    files = sorted(str(p) for d in ("linux", "macos") for p in (SCRIPTS / d).glob("*.sh"))
    files += sorted(str(p) for p in SHIMS.iterdir() if p.is_file())
    r = subprocess.run(["shellcheck", "-x"] + files, cwd=str(sa.REPO),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
