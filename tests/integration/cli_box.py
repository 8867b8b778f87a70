"""A temporary install directory laid out as the server's agent.zip, plus the
PATH shims of tests/scripts, for the CLI and script tests (test_cli.py,
test_scripts.py).

The layout is that of agent.zip: devopsAgent, devopsDaemon and tmp/upgrader
(the real binaries), the scripts, .agent.properties, worker-agent.jar,
jdk17.zip and jre.zip (small zips holding a java stand-in). The agent points
at a closed 127.0.0.1 port: it retries its startup call forever, which is
enough to hold its lock and pid file. The shims (systemctl, launchctl,
loginctl, id) record every call in calls.log and emulate starting and
stopping jobs. Unit, plist and rc.local files go to temporary places through
DEVOPS_SYSTEMD_SYSTEM_DIR, DEVOPS_LAUNCHD_DAEMON_DIR and DEVOPS_RC_LOCAL, so
nothing is written to /etc or /Library. Unrelated "bystander" processes run
during every test and must survive it.
"""
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import stub_agent as sa

SCRIPTS = sa.REPO / "scripts"
SHIMS = sa.REPO / "tests" / "scripts"
SERVICE = "devops_agent_" + sa.AGENT_ID
BINARIES = {"devopsAgent": "devopsAgent", "devopsDaemon": "devopsDaemon",
            "upgrader": "tmp/upgrader"}


def binaries_built():
    """True when the three binaries are in AGENT_BIN_DIR (or bin/)."""
    return all(os.access(sa.BIN_DIR / b, os.X_OK) for b in BINARIES)


def make_jdk_zip(path, marker):
    """A zip holding bin/java (a shell stand-in that writes the environment
    it was given to <install dir>/java.env) and a marker file."""
    with zipfile.ZipFile(path, "w") as z:
        info = zipfile.ZipInfo("bin/java")
        info.external_attr = 0o755 << 16
        z.writestr(info, "#!/bin/sh\nenv > \"$(dirname \"$0\")/../../java.env.tmp\"\n"
                   "mv \"$(dirname \"$0\")/../../java.env.tmp\" \"$(dirname \"$0\")/../../java.env\"\n"
                   "echo 'openjdk version \"%s\"' >&2\n" % marker)
        z.writestr("release", "JAVA_VERSION=%s\n" % marker)


class Box:
    """A temporary agent.zip-shaped install dir plus the shims' state."""

    def __init__(self, tmp, scripts_os="linux"):
        self.tmp = Path(tmp)
        self.inst = self.tmp / "inst"
        (self.inst / "tmp").mkdir(parents=True)
        for name, dest in BINARIES.items():
            shutil.copy2(sa.BIN_DIR / name, self.inst / dest)
        for s in (SCRIPTS / scripts_os).glob("*.sh"):
            shutil.copy2(s, self.inst / s.name)
        (self.inst / ".agent.properties").write_text(sa.PROPS.format(
            agent_id=sa.AGENT_ID, port=sa.closed_port()))
        (self.inst / "worker-agent.jar").write_text("v1.15.2\n")
        make_jdk_zip(self.inst / "jdk17.zip", "17.0.9")
        make_jdk_zip(self.inst / "jre.zip", "1.8.0_392")
        self.home = self.tmp / "home"
        self.home.mkdir()
        self.state = self.tmp / "state"
        self.state.mkdir()
        self.calls_log = self.tmp / "calls.log"
        self.system_dir = self.tmp / "etc" / "systemd" / "system"
        self.daemon_dir = self.tmp / "Library" / "LaunchDaemons"
        self.rc_local = self.tmp / "etc" / "rc.d" / "rc.local"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("DEVOPS_", "SHIM_", "XDG_"))
                    and k.lower() not in ("http_proxy", "https_proxy", "all_proxy",
                                          "no_proxy")}
        self.env.update({
            "PATH": "%s:%s" % (SHIMS, os.environ["PATH"]),
            "HOME": str(self.home),
            "SHIM_LOG": str(self.calls_log),
            "SHIM_STATE": str(self.state),
            "DEVOPS_SYSTEMD_SYSTEM_DIR": str(self.system_dir),
            "DEVOPS_LAUNCHD_DAEMON_DIR": str(self.daemon_dir),
            "DEVOPS_RC_LOCAL": str(self.rc_local),
            "DEVOPS_LINGER_DIR": str(self.tmp / "linger"),
        })
        self.bystanders = [subprocess.Popen(["sleep", "300"]) for _ in range(2)]

    def cli(self, *args, env=None, check=True, cwd=None):
        """Run `devopsAgent args...` (from another cwd by default)."""
        return self._run([str(self.inst / "devopsAgent")] + list(args), env, check, cwd)

    def script(self, name, *args, env=None, check=True, cwd=None, shell="sh"):
        """Run a script of the install dir with shell."""
        return self._run([shell, str(self.inst / name)] + list(args), env, check, cwd)

    def _run(self, argv, env, check, cwd):
        e = dict(self.env)
        e.update(env or {})
        r = subprocess.run(argv, cwd=str(cwd or self.tmp), env=e, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)
        if check:
            assert r.returncode == 0, "%s: %s\n%s" % (argv, r.stdout, r.stderr)
        return r

    def calls(self):
        """The shim calls recorded so far."""
        if not self.calls_log.exists():
            return []
        return self.calls_log.read_text().splitlines()

    def pid_of(self, name, binary):
        """Pid of runtime/<name>.pid when it runs inst/<binary>, else None."""
        pid = sa.read_pid(self.inst, name)
        if pid and sa.pid_alive(pid) and sa.pid_exe(pid) == str(self.inst / binary):
            return pid
        return None

    def daemon(self):
        """Pid of the running daemon of this install, or None."""
        return self.pid_of("daemon", "devopsDaemon")

    def agent(self):
        """Pid of the running agent of this install (holding its lock), or None."""
        pid = self.pid_of("agent", "devopsAgent")
        return pid if pid and sa.agent_holder(self.inst) == pid else None

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
        assert all(alive), "a command killed an unrelated process"


def assert_running(box):
    """The daemon runs from the install dir and an agent holds the lock."""
    assert sa.wait_for(box.daemon, timeout=10), sa.daemon_log(box.inst)
    assert sa.wait_for(box.agent, timeout=10), sa.daemon_log(box.inst)


def assert_stopped(box):
    """Neither the daemon nor the agent of the install dir runs."""
    assert sa.wait_for(lambda: box.daemon() is None and box.agent() is None, timeout=5)
    assert sa.agent_holder(box.inst) is None


def cmdline(pid):
    """The argv of pid, from /proc/<pid>/cmdline."""
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return [a.decode() for a in f.read().split(b"\0")[:-1]]


def environ(pid):
    """The environment of pid, from /proc/<pid>/environ."""
    with open("/proc/%d/environ" % pid, "rb") as f:
        items = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    return dict(i.split("=", 1) for i in items if "=" in i)


def unit_text(inst, name, user=False):
    """The systemd unit GoAgent HEAD's installer writes (service_linux.go),
    plus Delegate=yes (per-build cgroups under systemd)."""
    return ("[Unit]\n"
            "Description=BK-CI Agent Daemon (%(n)s)\n"
            "After=network.target\n"
            "\n"
            "[Service]\n"
            "Type=simple\n"
            "ExecStartPre=/bin/rm -f %(d)s/runtime/daemon.pid %(d)s/runtime/agent.pid\n"
            "ExecStart=%(d)s/devopsDaemon\n"
            "WorkingDirectory=%(d)s\n"
            "KillMode=none\n"
            "Delegate=yes\n"
            "%(p)s"
            "\n"
            "[Install]\n"
            "WantedBy=%(w)s\n") % {
                "n": name, "d": inst, "p": "" if user else "PrivateTmp=false\n",
                "w": "default.target" if user else "multi-user.target"}
