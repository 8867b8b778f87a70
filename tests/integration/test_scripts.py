"""Tests of the install/start/stop/uninstall scripts (scripts/linux,
scripts/macos; scripts/windows is only checked statically).

Each test copies the scripts into a temporary install dir holding a copy of
devopsDaemon and the stub agent, and runs them with PATH shims
(tests/scripts/) for systemctl, launchctl, loginctl, crontab and id that
record every call and emulate starting and stopping jobs. Unit, plist,
rc.local and crontab files go to temporary places (DEVOPS_SYSTEMD_SYSTEM_DIR,
DEVOPS_LAUNCHD_DAEMON_DIR, DEVOPS_RC_LOCAL, HOME). Unrelated "bystander"
processes run during every test and must survive it.
"""
import http.server
import os
import plistlib
import shutil
import signal
import subprocess
import threading
import zipfile
from pathlib import Path

import pytest

import stub_agent as sa

pytestmark = pytest.mark.skipif(not sa.daemon_bin().exists(),
                                reason="devopsDaemon not built")

SCRIPTS = sa.REPO / "scripts"
SHIMS = sa.REPO / "tests" / "scripts"
SERVICE = "devops_agent_" + sa.AGENT_ID


class Box:
    """A temporary install dir plus the shims' state, for one test."""

    def __init__(self, tmp, os_name):
        self.tmp = Path(tmp)
        self.inst = sa.make_install(tmp)
        for s in (SCRIPTS / os_name).glob("*.sh"):
            shutil.copy2(s, self.inst / s.name)
        self.home = self.tmp / "home"
        self.home.mkdir()
        self.state = self.tmp / "state"
        self.state.mkdir()
        self.calls_log = self.tmp / "calls.log"
        self.system_dir = self.tmp / "etc" / "systemd" / "system"
        self.daemon_dir = self.tmp / "Library" / "LaunchDaemons"
        self.rc_local = self.tmp / "etc" / "rc.local"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("DEVOPS_", "SHIM_", "XDG_"))}
        self.env.update({
            "PATH": "%s:%s" % (SHIMS, os.environ["PATH"]),
            "HOME": str(self.home),
            "SHIM_LOG": str(self.calls_log),
            "SHIM_STATE": str(self.state),
            "DEVOPS_SYSTEMD_SYSTEM_DIR": str(self.system_dir),
            "DEVOPS_LAUNCHD_DAEMON_DIR": str(self.daemon_dir),
            "DEVOPS_RC_LOCAL": str(self.rc_local),
        })
        self.bystanders = [subprocess.Popen(["sleep", "300"]) for _ in range(2)]

    def run(self, script, *args, env=None, cwd=None, check=True):
        """Run a script of the install dir (from another cwd by default)."""
        e = dict(self.env)
        e.update(env or {})
        r = subprocess.run(["sh", str(self.inst / script)] + list(args),
                           cwd=str(cwd or self.tmp), env=e, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)
        if check:
            assert r.returncode == 0, "%s: %s\n%s" % (script, r.stdout, r.stderr)
        return r

    def calls(self):
        """The shim calls recorded so far."""
        if not self.calls_log.exists():
            return []
        return self.calls_log.read_text().splitlines()

    def daemon(self):
        """Pid of the running daemon of this install, or None."""
        pid = sa.read_pid(self.inst, "daemon")
        if pid and sa.pid_exe(pid) == str(self.inst / "devopsDaemon"):
            return pid
        return None

    def agent(self):
        """Pid of the running agent of this install, or None."""
        pid = sa.read_pid(self.inst, "agent")
        if pid and sa.pid_exe(pid) == str(self.inst / "devopsAgent"):
            return pid
        return None

    def files(self):
        """Every path of the install dir, relative."""
        return sorted(str(p.relative_to(self.inst)) for p in self.inst.rglob("*"))

    def close(self):
        """Teardown: kill what runs from the install dir; check bystanders."""
        sa.kill_all(self.inst)
        alive = [b.poll() is None for b in self.bystanders]
        for b in self.bystanders:
            b.kill()
            b.wait()
        assert all(alive), "a script killed an unrelated process"


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


def assert_running(box):
    """The daemon runs from the install dir and an agent holds the lock."""
    assert sa.wait_for(box.daemon, timeout=10), sa.daemon_log(box.inst)
    assert sa.wait_new_agent(box.inst), sa.daemon_log(box.inst)


def assert_stopped(box):
    """Neither the daemon nor the agent of the install dir runs."""
    assert box.daemon() is None
    assert box.agent() is None
    assert sa.agent_holder(box.inst) is None


# ---------------------------------------------------------------- linux

def test_linux_install_root_systemd_unit(linux):
    r = linux.run("install.sh", env={"DEVOPS_AUTOSTART": "systemd"})
    unit = linux.system_dir / (SERVICE + ".service")
    text = unit.read_text()
    assert "KillMode=process\n" in text
    assert "Delegate=yes\n" in text
    assert 'ExecStart="%s/devopsDaemon"\n' % linux.inst in text
    assert "WorkingDirectory=%s\n" % linux.inst in text
    assert "RestartPreventExitStatus=88\n" in text
    assert "WantedBy=multi-user.target\n" in text
    calls = linux.calls()
    assert "systemctl daemon-reload" in calls
    assert "systemctl enable " + SERVICE in calls
    assert "systemctl start " + SERVICE in calls
    assert not any(c.startswith("loginctl") for c in calls)
    assert_running(linux)
    assert "systemd unit" in r.stdout


def test_linux_install_user_systemd_unit_with_linger(linux):
    env = {"DEVOPS_AUTOSTART": "systemd", "SHIM_UID": "1000", "SHIM_USER": "tester"}
    linux.run("install.sh", env=env)
    unit = linux.home / ".config" / "systemd" / "user" / (SERVICE + ".service")
    text = unit.read_text()
    assert "KillMode=process\n" in text
    assert "WantedBy=default.target\n" in text
    assert not linux.system_dir.exists()
    calls = linux.calls()
    assert "loginctl enable-linger tester" in calls
    assert "systemctl --user enable " + SERVICE in calls
    assert "systemctl --user start " + SERVICE in calls
    assert_running(linux)


def test_linux_start_is_idempotent(linux):
    env = {"DEVOPS_AUTOSTART": "systemd"}
    linux.run("install.sh", env=env)
    assert_running(linux)
    daemon, agent = linux.daemon(), linux.agent()
    n_calls = len(linux.calls())
    r = linux.run("start.sh", env=env)
    assert "already running (pid %d)" % daemon in r.stdout
    assert linux.daemon() == daemon and linux.agent() == agent
    assert len(linux.calls()) == n_calls, "start.sh called the service manager again"
    assert len(sa.starts(linux.inst)) == 1


def test_linux_start_without_autostart_uses_nohup(linux):
    r = linux.run("start.sh", env={"DEVOPS_AUTOSTART": "none"})
    assert "nohup" in r.stdout
    assert_running(linux)
    assert linux.calls() == []
    assert (linux.inst / "workspace").is_dir() and (linux.inst / "logs").is_dir()


def test_linux_stop_stops_daemon_then_agent_not_workers(linux):
    sa.set_mode(linux.inst, "worker")
    env = {"DEVOPS_AUTOSTART": "none"}
    linux.run("start.sh", env=env)
    assert_running(linux)
    assert sa.wait_for(lambda: sa.workers(linux.inst))
    worker = sa.workers(linux.inst)[0]
    r = linux.run("stop.sh", env=env)
    out = r.stdout
    assert out.index("daemon: stopping") < out.index("agent: stopping"), out
    assert_stopped(linux)
    assert sa.pid_alive(worker), "stop.sh killed a build worker"
    os.kill(worker, signal.SIGKILL)


def test_linux_stop_with_systemd_stops_unit_first(linux):
    env = {"DEVOPS_AUTOSTART": "systemd"}
    linux.run("install.sh", env=env)
    assert_running(linux)
    linux.run("stop.sh", env=env)
    assert "systemctl stop " + SERVICE in linux.calls()
    assert_stopped(linux)
    assert (linux.system_dir / (SERVICE + ".service")).exists(), "stop.sh is not uninstall"


def test_linux_stop_never_signals_stale_pids(linux):
    rt = linux.inst / "runtime"
    rt.mkdir()
    (rt / "daemon.pid").write_text(str(linux.bystanders[0].pid))
    (rt / "agent.pid").write_text(str(linux.bystanders[1].pid))
    r = linux.run("stop.sh", env={"DEVOPS_AUTOSTART": "none"})
    assert r.stdout.count("left alone") == 2, r.stdout
    assert all(b.poll() is None for b in linux.bystanders)


def test_linux_stop_kills_after_grace(linux):
    sa.set_mode(linux.inst, "stubborn")
    env = {"DEVOPS_AUTOSTART": "none", "DEVOPS_STOP_GRACE_SEC": "1"}
    linux.run("start.sh", env=env)
    assert_running(linux)
    r = linux.run("stop.sh", env=env)
    assert "agent: pid" in r.stdout and "sending SIGKILL" in r.stdout
    assert_stopped(linux)


def test_linux_uninstall_removes_unit_stops_and_deletes_nothing(linux):
    env = {"DEVOPS_AUTOSTART": "systemd"}
    linux.run("install.sh", env=env)
    assert_running(linux)
    before = set(linux.files())
    linux.run("uninstall.sh", env=env)
    assert not (linux.system_dir / (SERVICE + ".service")).exists()
    calls = linux.calls()
    assert "systemctl disable " + SERVICE in calls
    assert "systemctl stop " + SERVICE in calls
    assert_stopped(linux)
    assert before <= set(linux.files()), before - set(linux.files())


def test_linux_rc_local_fallback(linux):
    linux.rc_local.parent.mkdir(parents=True)
    other = "cd /x && ./devopsDaemon & # %s2" % SERVICE  # a longer id: kept
    linux.rc_local.write_text("#!/bin/sh -e\n%s\nexit 0\n" % other)
    linux.rc_local.chmod(0o755)
    env = {"DEVOPS_AUTOSTART": "rc.local"}
    linux.run("install.sh", env=env)
    lines = linux.rc_local.read_text().splitlines()
    ours = [l for l in lines if l.endswith("# " + SERVICE)]
    assert ours == ["cd '%s' && ./devopsDaemon >/dev/null 2>&1 & # %s"
                    % (linux.inst, SERVICE)]
    assert lines[-1] == "exit 0" and other in lines
    assert os.access(linux.rc_local, os.X_OK)
    assert_running(linux)
    linux.run("install.sh", env=env)  # again: no second line
    assert sum(l.endswith("# " + SERVICE) for l in linux.rc_local.read_text().splitlines()) == 1
    linux.run("uninstall.sh", env=env)
    assert linux.rc_local.read_text() == "#!/bin/sh -e\n%s\nexit 0\n" % other
    assert_stopped(linux)


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="systemd is PID 1 here")
def test_linux_auto_detects_rc_local_without_systemd(linux):
    linux.rc_local.parent.mkdir(parents=True)
    linux.rc_local.write_text("#!/bin/sh\nexit 0\n")
    linux.rc_local.chmod(0o755)
    linux.run("install.sh")
    assert ("# " + SERVICE) in linux.rc_local.read_text()
    assert not any(c.startswith("systemctl") for c in linux.calls())


def test_linux_cron_fallback(linux):
    (linux.state / "crontab").write_text("0 3 * * * /usr/bin/true\n")
    env = {"DEVOPS_AUTOSTART": "cron", "SHIM_UID": "1000"}
    linux.run("install.sh", env=env)
    tab = (linux.state / "crontab").read_text().splitlines()
    assert tab == ["0 3 * * * /usr/bin/true",
                   "@reboot cd '%s' && ./devopsDaemon >/dev/null 2>&1 # %s"
                   % (linux.inst, SERVICE)]
    assert_running(linux)
    linux.run("uninstall.sh", env=env)
    assert (linux.state / "crontab").read_text().splitlines() == ["0 3 * * * /usr/bin/true"]
    assert_stopped(linux)


def test_linux_user_without_systemd_manager_falls_back_to_cron(linux):
    shims = linux.tmp / "shims"
    shims.mkdir()
    for s in SHIMS.iterdir():
        shutil.copy2(s, shims / s.name)
    # A systemctl whose user manager is unreachable (su without a login).
    (shims / "systemctl").write_text('#!/bin/sh\necho "systemctl $*" >>"$SHIM_LOG"\nexit 1\n')
    env = {"DEVOPS_AUTOSTART": "systemd", "SHIM_UID": "1000",
           "PATH": "%s:%s" % (shims, os.environ["PATH"])}
    linux.run("install.sh", env=env)
    assert "@reboot" in (linux.state / "crontab").read_text()
    assert_running(linux)


class ZipServer:
    """Serves one file over HTTP on 127.0.0.1 and records request headers."""

    def __init__(self, payload):
        self.headers = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.headers.append(dict(self.headers))
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *a):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.skipif(shutil.which("curl") is None and shutil.which("wget") is None,
                    reason="needs curl or wget")
def test_linux_install_piped_downloads_agent_zip(linux):
    # What the server sends: install.sh with its placeholders filled in,
    # run as `curl ... | sh` in an empty directory.
    zpath = linux.tmp / "agent.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for name in ("devopsDaemon", "devopsAgent", ".agent.properties", "start.sh",
                     "stop.sh", "install.sh", "uninstall.sh", "agent_lib.sh"):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16
            z.writestr(info, (linux.inst / name).read_bytes())
    srv = ZipServer(zpath.read_bytes())
    empty = linux.tmp / "fresh"
    empty.mkdir()
    try:
        script = (SCRIPTS / "linux" / "install.sh").read_text()
        script = script.replace("##agent_url##", "http://127.0.0.1:%d/agent.zip" % srv.port)
        script = script.replace("##projectId##", "testproj")
        e = dict(linux.env, DEVOPS_AUTOSTART="none")
        r = subprocess.run(["sh"], input=script, cwd=str(empty), env=e,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert srv.headers and srv.headers[0].get("X-DEVOPS-PROJECT-ID") == "testproj"
        pid = sa.wait_for(lambda: sa.read_pid(empty, "daemon"))
        assert pid and sa.pid_exe(pid) == str(empty / "devopsDaemon")
        assert sa.wait_new_agent(empty)
    finally:
        srv.close()
        sa.kill_all(empty)


@pytest.mark.parametrize("os_name", ["linux", "macos"])
def test_install_without_agent_lib_stops_before_touching_anything(tmp_path, os_name):
    # The scripts source agent_lib.sh from their own dir; install.sh only
    # after the unzip step, and says so when it is missing.
    box = Box(tmp_path, os_name)
    try:
        (box.inst / "agent_lib.sh").unlink()
        r = box.run("install.sh", env={"DEVOPS_AUTOSTART": "none"}, check=False)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "agent_lib.sh is missing" in r.stderr
        assert box.calls() == []
        assert not (box.inst / "runtime").exists()
    finally:
        box.close()


# ---------------------------------------------------------------- macos

def read_plist(path):
    """Parse a plist with the standard library (checks it is well formed)."""
    with open(path, "rb") as f:
        return plistlib.load(f)


def test_macos_install_user_launch_agent_loaded_at_once(macos):
    env = {"SHIM_UID": "501"}
    macos.run("install.sh", env=env)
    plist = macos.home / "Library" / "LaunchAgents" / (SERVICE + ".plist")
    p = read_plist(plist)
    assert p["Label"] == SERVICE
    assert p["ProgramArguments"] == [str(macos.inst / "devopsDaemon")]
    assert p["WorkingDirectory"] == str(macos.inst)
    assert p["RunAtLoad"] is True
    assert p["KeepAlive"] == {"Crashed": True}
    assert p["AbandonProcessGroup"] is True
    assert "launchctl bootstrap gui/501 %s" % plist in macos.calls()
    assert_running(macos)


def test_macos_install_root_launch_daemon(macos):
    macos.run("install.sh")
    plist = macos.daemon_dir / (SERVICE + ".plist")
    assert read_plist(plist)["Label"] == SERVICE
    assert "launchctl bootstrap system %s" % plist in macos.calls()
    assert not (macos.home / "Library" / "LaunchAgents").exists()
    assert_running(macos)


def test_macos_install_over_ssh_uses_user_domain(macos):
    macos.run("install.sh", env={"SHIM_UID": "501", "SHIM_NO_GUI": "1"})
    plist = macos.home / "Library" / "LaunchAgents" / (SERVICE + ".plist")
    assert "launchctl bootstrap user/501 %s" % plist in macos.calls()
    assert_running(macos)


def test_macos_start_idempotent_stop_and_uninstall(macos):
    env = {"SHIM_UID": "501"}
    sa.set_mode(macos.inst, "worker")
    macos.run("install.sh", env=env)
    assert_running(macos)
    daemon = macos.daemon()
    r = macos.run("start.sh", env=env)
    assert "already running (pid %d)" % daemon in r.stdout
    assert sa.wait_for(lambda: sa.workers(macos.inst))
    worker = sa.workers(macos.inst)[0]
    macos.run("stop.sh", env=env)
    assert "launchctl bootout gui/501/" + SERVICE in macos.calls()
    assert_stopped(macos)
    assert sa.pid_alive(worker)
    os.kill(worker, signal.SIGKILL)
    macos.run("start.sh", env=env)  # loads the job again
    assert_running(macos)
    before = set(macos.files())
    macos.run("uninstall.sh", env=env)
    assert not (macos.home / "Library" / "LaunchAgents" / (SERVICE + ".plist")).exists()
    assert_stopped(macos)
    assert before <= set(macos.files())


def test_macos_stop_never_signals_stale_pids(macos):
    rt = macos.inst / "runtime"
    rt.mkdir()
    (rt / "daemon.pid").write_text(str(macos.bystanders[0].pid))
    (rt / "agent.pid").write_text(str(macos.bystanders[1].pid))
    r = macos.run("stop.sh", env={"SHIM_UID": "501"})
    assert r.stdout.count("left alone") == 2, r.stdout


# ---------------------------------------------------------------- windows

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


# ---------------------------------------------------------------- lint

@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="no shellcheck")
def test_scripts_and_shims_are_shellcheck_clean():
    files = sorted(str(p) for d in ("linux", "macos") for p in (SCRIPTS / d).glob("*.sh"))
    files += sorted(str(p) for p in SHIMS.iterdir() if p.is_file())
    r = subprocess.run(["shellcheck", "-x"] + files, cwd=str(sa.REPO),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
