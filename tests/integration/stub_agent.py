"""Helpers for the daemon and script tests: the stub agent, install dirs,
process and lock facts read from /proc without disturbing anyone.

The stub itself is stub_agent.c (see its header for the modes); build_stub()
compiles it once per test run. Nothing here takes a lock that an agent may
want: who holds runtime/agent.lock is read from /proc/locks.
"""
import atexit
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BIN_DIR = Path(os.environ.get("AGENT_BIN_DIR", REPO / "bin"))
AGENT_ID = "stubagent01"
PROPS = """\
devops.project.id=testproj
devops.agent.id={agent_id}
devops.agent.secret.key=0123456789abcdef0123456789abcdef
landun.gateway=http://127.0.0.1:{port}
landun.fileGateway=
landun.env=prod
devops.parallel.task.count=4
devops.agent.collectorOn=false
"""

_stub_cache = {}


def build_stub():
    """Path of the compiled stub agent (built once per process)."""
    if "path" not in _stub_cache:
        d = tempfile.mkdtemp(prefix="stub_agent.")
        atexit.register(shutil.rmtree, d, True)
        out = os.path.join(d, "stub_agent")
        subprocess.run(["cc", "-std=c11", "-O1", "-o", out,
                        str(HERE / "stub_agent.c")], check=True)
        _stub_cache["path"] = out
    return _stub_cache["path"]


def daemon_bin():
    """The devopsDaemon under test (AGENT_BIN_DIR or <repo>/bin)."""
    return BIN_DIR / "devopsDaemon"


def real_agent_bin():
    """bin/devopsAgent when it exists and is not a stub, else None."""
    p = BIN_DIR / "devopsAgent"
    return p if p.is_file() and os.access(p, os.X_OK) else None


def closed_port():
    """A 127.0.0.1 port nobody listens on (bound, then released)."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_install(root, agent="stub", agent_id=AGENT_ID, port=None):
    """Create an install dir root/inst with devopsDaemon, devopsAgent (the
    stub, or the real binary with agent="real") and .agent.properties.
    Copies, not links: each binary finds its dir through /proc/self/exe."""
    inst = Path(root) / "inst"
    inst.mkdir()
    shutil.copy2(daemon_bin(), inst / "devopsDaemon")
    src = build_stub() if agent == "stub" else real_agent_bin()
    shutil.copy2(src, inst / "devopsAgent")
    (inst / ".agent.properties").write_text(PROPS.format(
        agent_id=agent_id, port=port or closed_port()))
    return inst


def set_mode(inst, mode):
    """Set the stub's behaviour for its next starts (see stub_agent.c)."""
    tmp = Path(inst) / "stub_agent.mode.tmp"
    tmp.write_text(mode + "\n")
    os.replace(tmp, Path(inst) / "stub_agent.mode")


def starts(inst):
    """Start records of the stub, oldest first."""
    p = Path(inst) / "stub_agent.starts"
    if not p.exists():
        return []
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]


def workers(inst):
    """Pids of the fake build workers the stub started."""
    p = Path(inst) / "stub_agent.workers"
    if not p.exists():
        return []
    return [json.loads(l)["pid"] for l in p.read_text().splitlines() if l.strip()]


def pid_alive(pid):
    """True when pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (OSError, ValueError):
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def pid_exe(pid):
    """readlink /proc/pid/exe, or None."""
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return None


def read_pid(inst, name):
    """Pid in runtime/<name>.pid, or None."""
    try:
        return int((Path(inst) / "runtime" / (name + ".pid")).read_text().strip())
    except (OSError, ValueError):
        return None


def lock_holders(path):
    """Pids holding a flock on path, read from /proc/locks (no probing)."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    out = []
    with open("/proc/locks") as f:
        for line in f:
            w = line.split()
            if len(w) < 6 or w[1] == "->" or w[1] != "FLOCK":
                continue
            maj, mino, ino = w[5].split(":")
            if (int(ino) == st.st_ino and int(maj, 16) == os.major(st.st_dev)
                    and int(mino, 16) == os.minor(st.st_dev)):
                out.append(int(w[4]))
    return out


def agent_holder(inst):
    """The pid holding inst's runtime/agent.lock, or None."""
    h = lock_holders(Path(inst) / "runtime" / "agent.lock")
    return h[0] if h else None


def wait_for(pred, timeout=10.0, interval=0.01):
    """Poll pred() until it returns a true value (returned) or timeout (None)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def wait_new_agent(inst, old=None, timeout=10.0):
    """Wait for an agent other than old to hold agent.lock and be named by
    agent.pid; returns its pid or None."""
    def ok():
        pid = agent_holder(inst)
        if pid and pid != old and pid_alive(pid) and read_pid(inst, "agent") == pid:
            return pid
        return None
    return wait_for(ok, timeout)


def start_daemon(inst, *args, env=None, cwd=None):
    """Start inst/devopsDaemon (cwd: somewhere else by default, to check that
    it finds its own dir: W22)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.Popen([str(Path(inst) / "devopsDaemon")] + list(args),
                            cwd=str(cwd or Path(inst).parent), env=e,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def daemon_log(inst):
    """Text of inst/logs/devopsDaemon.log ('' when missing)."""
    p = Path(inst) / "logs" / "devopsDaemon.log"
    return p.read_text(errors="replace") if p.exists() else ""


def _in_dir(pid, inst):
    """True when pid runs a binary from inst or has its cwd there."""
    prefix = str(inst) + "/"
    for link in ("exe", "cwd"):
        try:
            t = os.readlink("/proc/%d/%s" % (pid, link))
        except OSError:
            continue
        if t == str(inst) or t.startswith(prefix):
            return True
    return False


def kill_all(inst, extra=()):
    """Teardown: SIGKILL every process running from or inside inst, the
    stub's workers and the pids in extra; wait until they are gone."""
    inst = Path(inst).resolve()
    victims = set(p for p in extra if p) | set(workers(inst))
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid() and _in_dir(int(name), inst):
            victims.add(int(name))
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    wait_for(lambda: not any(pid_alive(p) for p in victims), timeout=5)
