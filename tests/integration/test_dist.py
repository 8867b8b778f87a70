"""make dist, and the swap of a GoAgent install to this agent and back, with
the commands docs/deploy.md gives. GoAgent is a stand-in here: shell scripts
named devopsAgent, devopsDaemon and tmp/upgrader that answer `version` and
record the subcommands they were given.
"""

import hashlib
import os
import subprocess
import tarfile

import pytest

from conftest import REPO_ROOT, agent_env, read_properties, wait_until
from fakeci.layout import BIN_DIR

GO_VERSION = "v1.16.0-goagent-standin"
GOAGENT = f"""#!/bin/sh
echo "$(basename "$0") $*" >> "$(dirname "$0")/goagent.calls"
case "$1" in
version) echo {GO_VERSION} ;;
esac
exit 0
"""


def version():
    return subprocess.run([str(BIN_DIR / "devopsAgent"), "version"], capture_output=True,
                          text=True, timeout=10).stdout.strip()


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    # A make of its own, not a sub-make of the one running the suite (which
    # would print "Entering/Leaving directory" lines around its output).
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    r = subprocess.run(["make", "-s", "--no-print-directory", "dist", f"DIST={out}",
                        f"BIN={BIN_DIR}"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    path = r.stdout.strip().splitlines()[-1]
    assert path.endswith(f"-{version()}-linux-" + {"x86_64": "amd64", "aarch64": "arm64"}.get(
        os.uname().machine, os.uname().machine) + ".tar.gz"), path
    return path


def test_make_dist(tarball, tmp_path):
    # The tarball's own checksum file.
    digest, name = open(tarball + ".sha256").read().split()
    assert name == os.path.basename(tarball)
    assert hashlib.sha256(open(tarball, "rb").read()).hexdigest() == digest
    with tarfile.open(tarball) as t:
        t.extractall(tmp_path)
        names = t.getnames()
    top = os.path.basename(tarball)[:-len(".tar.gz")]
    d = tmp_path / top
    for f in ("devopsAgent", "devopsDaemon", "upgrader"):
        assert os.stat(d / f).st_mode & 0o777 == 0o755
        assert (d / f).read_bytes() == (BIN_DIR / f).read_bytes()
    for f in ("scripts/linux/install.sh", "scripts/linux/start.sh", "scripts/macos/stop.sh",
              "README.md", "docs/deploy.md", "docs/devopsAgent.md", "docs/hooks.md"):
        assert f"{top}/{f}" in names, f
    # SHA256SUMS covers every other file, and verifies.
    listed = {line.split(None, 1)[1] for line in (d / "SHA256SUMS").read_text().splitlines()}
    files = {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert listed == files
    r = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=d,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = subprocess.run([str(d / "devopsAgent"), "version"], capture_output=True,
                         text=True, timeout=10)
    assert out.stdout.strip() == version()


def sh(cwd, script, env):
    r = subprocess.run(["sh", "-ec", script], cwd=cwd, capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_swap_goagent_and_back(install_dir, fakeci, tarball, tmp_path):
    # A GoAgent install: its binaries, .install_type DIRECT as HEAD writes it.
    for f in ("devopsAgent", "devopsDaemon", "tmp/upgrader"):
        (install_dir / f).write_text(GOAGENT)
        (install_dir / f).chmod(0o755)
    (install_dir / ".install_type").write_text("DIRECT")
    props_before = read_properties(install_dir / ".agent.properties")
    env = agent_env({"DEVOPS_AGENT_TEST_FAST": "1", "TARBALL": tarball},
                    tmp_path / "home")

    # To this agent (docs/deploy.md, "Swap one install directory by hand").
    sh(install_dir, """
./devopsAgent stop
mkdir -p ../goagent-backup && cp -p devopsAgent devopsDaemon tmp/upgrader ../goagent-backup/
mkdir -p ../release && tar xzf "$TARBALL" -C ../release
rel=$(echo ../release/devops-agent-c-*)
install -m 0755 "$rel/devopsAgent"  devopsAgent
install -m 0755 "$rel/devopsDaemon" devopsDaemon
install -m 0755 "$rel/upgrader"     tmp/upgrader
./devopsAgent start
""", env)
    assert "devopsAgent stop" in (install_dir / "goagent.calls").read_text()
    assert wait_until(lambda: fakeci.get_state()["lastStartup"], timeout=20)
    assert fakeci.get_state()["lastStartup"]["masterVersion"] == version()
    st = subprocess.run(["./devopsAgent", "status"], cwd=install_dir, capture_output=True,
                        text=True, env=env, timeout=60)
    assert st.returncode == 0, st.stdout
    fakeci.queue_build()
    assert fakeci.wait_for("finished", 1, timeout=30)
    assert fakeci.finished[0]["success"] is True

    # And back to GoAgent.
    sh(install_dir, """
./devopsAgent stop
cp -p ../goagent-backup/devopsAgent ../goagent-backup/devopsDaemon .
cp -p ../goagent-backup/upgrader tmp/upgrader
./devopsAgent start
""", env)
    assert wait_until(lambda: not os.path.exists("/proc/%s" % (install_dir / "runtime" /
                      "agent.pid").read_text().split()[0]), timeout=15)
    out = subprocess.run(["./devopsAgent", "version"], cwd=install_dir, capture_output=True,
                         text=True, timeout=10)
    assert out.stdout.strip() == GO_VERSION
    assert "devopsAgent start" in (install_dir / "goagent.calls").read_text()
    # Identity and settings carried over both ways.
    after = read_properties(install_dir / ".agent.properties")
    for key in ("devops.project.id", "devops.agent.id", "devops.agent.secret.key",
                "landun.gateway", "devops.parallel.task.count", "landun.env"):
        assert after[key] == props_before[key], key
