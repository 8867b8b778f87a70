"""A private Docker engine, a test image and a registry for the container-build tests.

* `Dockerd`: Debian's dockerd with its own data root, exec root and unix
  socket (no bridge, no iptables), stopped at the end.
* `test_image_tar()`: a small root file system made of this machine's
  /bin/sh, bash, a few coreutils and python3 with its standard library
  (what the worker stand-in and the init script need), as a tar cached in
  build/docker-test-image/ and reused while the inputs are unchanged.
* `Registry`: Debian's docker-registry on 127.0.0.1 with htpasswd (bcrypt)
  auth; Docker talks plain HTTP to 127.0.0.0/8 registries.
"""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "build" / "docker-test-image"
IMAGE = "fakeci/worker:1"

# Behaves as the init script a HEAD server ships: works in /data/devops,
# logs to /data/devops/logs/docker.log, runs the jar as docker.jar.
INIT_SCRIPT = """#!/bin/bash
CI_DIR=/data/devops
LOG=$CI_DIR/logs/docker.log
mkdir -p "$CI_DIR/logs"
cd "$CI_DIR" || exit 1
echo "$(date +%Y%m%d-%H%M%S) init launched" >>"$LOG"
cp /data/worker-agent.jar "$CI_DIR/docker.jar"
/usr/local/jre/bin/java -version
exec /usr/local/jre/bin/java -Dfile.encoding=UTF-8 -Dbuild.type=DOCKER -Xmx1024m \
    -jar docker.jar "$@" >>"$LOG" 2>&1
"""

# Programs the image needs: the init script (bash, date, cp, chmod, mkdir)
# and the tests' build scripts (cat, ls, sleep, env, id, rm, touch).
PROGRAMS = ["/bin/sh", "/bin/bash", "/bin/date", "/bin/cp", "/bin/chmod", "/bin/mkdir",
            "/bin/cat", "/bin/ls", "/bin/sleep", "/usr/bin/env", "/usr/bin/id", "/bin/rm",
            "/usr/bin/touch", "/bin/echo", "/usr/bin/test"]
PY_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
           "config-3.11-x86_64-linux-gnu", "distutils", "unittest", "site-packages",
           "dist-packages", "venv", "asyncio", "email", "xml", "sqlite3", "curses", "dbm"}
PY_SKIP_KEEP = {"email"}          # http.client imports email.parser


def _python():
    return os.path.realpath("/usr/bin/python3")


def _stdlib():
    out = subprocess.run([_python(), "-c", "import os,sys;print(os.path.dirname(os.__file__))"],
                         capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.strip()


def _libs(paths):
    """Shared libraries (resolved paths and the names they are loaded by)."""
    libs = set()
    for path in paths:
        try:
            out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30).stdout
        except OSError:
            continue
        for line in out.splitlines():
            parts = line.split()
            if "=>" in parts:
                i = parts.index("=>")
                if i + 1 < len(parts) and parts[i + 1].startswith("/"):
                    libs.add(parts[i + 1])
            elif parts and parts[0].startswith("/"):
                libs.add(parts[0])
    return libs


def _copy(src, root):
    dst = Path(root) / src.lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    real = os.path.realpath(src)
    if not dst.exists():
        shutil.copy2(real, dst)


def test_image_tar():
    """Path of the cached rootfs tar (built when missing or its inputs changed)."""
    stdlib = _stdlib()
    key = hashlib.sha256(repr((PROGRAMS, sorted(PY_SKIP), _python(), stdlib,
                               os.path.getmtime(_python()))).encode()).hexdigest()[:16]
    tar = CACHE / f"rootfs-{key}.tar"
    if tar.exists():
        return tar
    CACHE.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
    try:
        bins = [p for p in PROGRAMS if os.path.exists(p)] + [_python()]
        dynload = Path(stdlib) / "lib-dynload"
        sos = [str(p) for p in dynload.glob("*.so")] if dynload.is_dir() else []
        for path in bins:
            _copy(path, root)
        for lib in _libs(bins + sos):
            _copy(lib, root)
        py = root / "usr/bin/python3"
        if not py.exists():
            os.symlink(os.path.basename(_python()), py)
        skip = PY_SKIP - PY_SKIP_KEEP
        shutil.copytree(stdlib, root / stdlib.lstrip("/"), symlinks=True,
                        ignore=lambda d, names: [n for n in names if
                                                 (d == stdlib and n in skip) or n == "__pycache__"])
        for d in ("tmp", "etc", "data", "proc", "sys", "dev", "root"):
            (root / d).mkdir(exist_ok=True)
        os.chmod(root / "tmp", 0o1777)
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
        (root / "etc/group").write_text("root:x:0:\n")
        tmp_tar = tar.with_suffix(".part")
        subprocess.run(["tar", "-C", str(root), "-cf", str(tmp_tar), "."], check=True,
                       timeout=120)
        os.replace(tmp_tar, tar)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for old in CACHE.glob("rootfs-*.tar"):
        if old != tar:
            old.unlink()
    return tar


def unmount_under(base):
    """Unmount what an engine left mounted below base (e.g. exec/netns/default)."""
    prefix = str(base) + "/"
    try:
        with open("/proc/self/mounts", encoding="utf-8") as fh:
            points = [line.split()[1] for line in fh]
    except OSError:
        return
    points = [p.replace("\\040", " ") for p in points if p.startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dockerd:
    """dockerd with private roots and socket; `why` says why it did not start."""

    def __init__(self):
        # A short base: a unix socket path must fit in 108 bytes.
        self.base = Path(tempfile.mkdtemp(prefix="dk-", dir="/tmp"))
        self.sock = self.base / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.proc = None
        self.why = None
        self.config = self.base / "cli"          # the tests' own docker CLI config
        self.config.mkdir()

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.config)
        return env

    def start(self, timeout=30):
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            self.why = "dockerd not installed (Debian package docker.io)"
            return False
        if os.geteuid() != 0:
            self.why = "dockerd needs root here (no rootless setup)"
            return False
        log = open(self.base / "dockerd.log", "wb")
        self.proc = subprocess.Popen(
            [dockerd, "--data-root", str(self.base / "data"), "--exec-root",
             str(self.base / "exec"), "-H", self.host, "--pidfile", str(self.base / "pid"),
             "--bridge=none", "--iptables=false", "--ip6tables=false",
             "--config-file", str(self._daemon_json())],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                break
            r = self.run("version", "--format", "{{.Server.Version}}", check=False, timeout=10)
            if r.returncode == 0:
                return True
            time.sleep(0.3)
        tail = (self.base / "dockerd.log").read_text(errors="replace")[-1500:]
        self.why = f"dockerd did not come up: {tail}"
        self.stop()
        return False

    def _daemon_json(self):
        path = self.base / "daemon.json"
        path.write_text("{}\n")
        return path

    def run(self, *args, check=True, timeout=120, input=None):
        r = subprocess.run(["docker", *args], env=self.env(), capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
        return r

    def containers(self, all_=True):
        """{name: labels} of every container."""
        r = self.run("ps", "-a" if all_ else "-q", "--format", "{{.Names}}")
        names = [n for n in r.stdout.split() if n]
        out = {}
        for name in names:
            lab = self.run("inspect", "--format", "{{json .Config.Labels}}", name, check=False)
            out[name] = lab.stdout.strip()
        return out

    def load_image(self):
        tar = test_image_tar()
        if IMAGE not in self.run("images", "--format", "{{.Repository}}:{{.Tag}}").stdout:
            with open(tar, "rb") as fh:
                r = subprocess.run(["docker", "import", "-", IMAGE], env=self.env(), stdin=fh,
                                   capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                raise RuntimeError(f"docker import: {r.stderr.strip()}")
        return IMAGE

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            r = self.run("ps", "-aq", check=False, timeout=30)
            ids = r.stdout.split()
            if ids:
                self.run("rm", "-f", *ids, check=False, timeout=120)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        unmount_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


class Podman:
    """Rootful podman with a private store (vfs) and its own containers.conf.

    Rootful podman in this kind of machine cannot raise RLIMIT_NPROC and
    RLIMIT_NOFILE to the host's limits, which it does by default ("error
    setting rlimit type 6: operation not permitted"): containers.conf sets
    default_ulimits low enough, which is what an operator would do too.
    """

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="pm-", dir="/tmp"))
        self.why = None
        (self.base / "storage.conf").write_text(
            "[storage]\ndriver = \"vfs\"\n"
            f"graphroot = \"{self.base / 'root'}\"\nrunroot = \"{self.base / 'run'}\"\n")
        (self.base / "containers.conf").write_text(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n")

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update(self.agent_env())
        return env

    def agent_env(self):
        return {"CONTAINERS_STORAGE_CONF": str(self.base / "storage.conf"),
                "CONTAINERS_CONF": str(self.base / "containers.conf"),
                "DEVOPS_AGENT_CONTAINER_RUNTIME": "podman"}

    def run(self, *args, check=True, timeout=120, stdin=None):
        r = subprocess.run(["podman", *args], env=self.env(), capture_output=True, text=True,
                           timeout=timeout, stdin=stdin)
        if check and r.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: {r.stderr.strip()}")
        return r

    def start(self):
        if shutil.which("podman") is None:
            self.why = "podman not installed (Debian package podman)"
            return False
        if os.geteuid() != 0:
            self.why = "the podman test runs rootful podman and needs root"
            return False
        with open(test_image_tar(), "rb") as fh:
            r = subprocess.run(["podman", "import", "-", IMAGE], env=self.env(), stdin=fh,
                               capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            self.why = f"podman import failed: {r.stderr.strip()[-500:]}"
            return False
        r = self.run("run", "--rm", "--network", "host", IMAGE, "/bin/sh", "-c", "exit 0",
                     check=False)
        if r.returncode != 0:
            self.why = f"podman cannot run a container here: {r.stderr.strip()[-500:]}"
            return False
        return True

    def stop(self):
        self.run("rm", "-a", "-f", check=False)
        self.run("system", "reset", "-f", check=False, timeout=120)
        unmount_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


class Registry:
    """docker-registry on 127.0.0.1 with htpasswd auth."""

    def __init__(self, user="ci-user", password="ci-pass-1"):
        self.base = Path(tempfile.mkdtemp(prefix="reg-", dir="/tmp"))
        self.user, self.password = user, password
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.proc = None
        self.why = None

    def start(self, timeout=20):
        binary = shutil.which("docker-registry")
        htpasswd = shutil.which("htpasswd")
        if binary is None or htpasswd is None:
            self.why = "docker-registry or htpasswd (apache2-utils) not installed"
            return False
        line = subprocess.run([htpasswd, "-Bbn", self.user, self.password], capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()
        (self.base / "htpasswd").write_text(line + "\n")
        cfg = self.base / "config.yml"
        cfg.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.base / 'data'}\n"
            f"http:\n  addr: {self.addr}\n"
            f"auth:\n  htpasswd:\n    realm: fakeci\n    path: {self.base / 'htpasswd'}\n")
        log = open(self.base / "registry.log", "wb")
        self.proc = subprocess.Popen([binary, "serve", str(cfg)], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.2)
        self.why = "docker-registry did not listen: " + \
            (self.base / "registry.log").read_text(errors="replace")[-800:]
        self.stop()
        return False

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)


if __name__ == "__main__":
    print(test_image_tar(), file=sys.stderr)
