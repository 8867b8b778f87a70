"""Container builds on a real Docker engine (dockerd from Debian's docker.io).

One private dockerd serves the whole module (its own data root and socket,
no bridge, no iptables), with a small test image imported from a cached
rootfs tar (dockerenv.py). The containers use the host network, so the
worker stand-in inside reaches fakeci on 127.0.0.1. A registry with
htpasswd auth on 127.0.0.1 serves the credential cases.
"""

import hashlib
import json
import os
import signal
import shutil
import subprocess
import time

import pytest

from conftest import Agent, assert_no_violations, heartbeats, wait_until, write_properties
from dockerenv import INIT_SCRIPT, Dockerd, Podman, Registry

OWNER_LABEL = "com.tencent.devops.agent.owner"
BUILD_LABEL = "com.tencent.devops.agent.build"


@pytest.fixture(scope="module")
def engine():
    d = Dockerd()
    if not d.start():
        pytest.skip(f"DOCKER ENGINE CANNOT RUN HERE: {d.why}")
    try:
        try:
            d.load_image()
        except RuntimeError as exc:
            # e.g. in a chroot whose / is no mount point, dockerd cannot
            # unpack any image ("remount /, flags: 0x84000: invalid argument")
            pytest.skip(f"DOCKER ENGINE CANNOT IMPORT AN IMAGE HERE: {exc}")
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def registry(engine):
    r = Registry()
    if not r.start():
        pytest.skip(f"REGISTRY CANNOT RUN HERE: {r.why}")
    try:
        image = f"{r.addr}/fakeci/worker:1"
        engine.run("tag", "fakeci/worker:1", image)
        engine.run("login", "-u", r.user, "--password-stdin", r.addr, input=r.password)
        engine.run("push", image, timeout=300)
        engine.run("logout", r.addr)
        engine.run("rmi", image)
        r.image = image
        yield r
    finally:
        r.stop()


def docker_install(install_dir, fakeci, cap=None):
    (install_dir / "agent_docker_init.sh").write_text(INIT_SCRIPT)
    os.chmod(install_dir / "agent_docker_init.sh", 0o755)
    if cap is not None:
        fakeci.set_state(dockerParallelTaskCount=cap)
        write_properties(install_dir, fakeci, {"devops.docker.parallel.task.count": str(cap)})


def start_agent(install_dir, engine_host, **kw):
    env = {"DOCKER_HOST": engine_host}
    env.update(kw.pop("env_extra", {}))
    return Agent(install_dir, env_extra=env, fast=True, **kw).start()


def dbi(**kw):
    info = {"image": "fakeci/worker:1", "options": {"network": ["host"]}}
    info.update(kw)
    return info


def finished_for(fakeci, build_id):
    return [f for f in fakeci.finished if f["buildId"] == build_id]


def owner_of(install_dir, agent_id):
    md5 = hashlib.md5(str(install_dir.resolve()).encode()).hexdigest()
    return f"{agent_id}-{md5[:12]}"


def our_containers(engine, owner):
    r = engine.run("ps", "-a", "--filter", f"label={OWNER_LABEL}={owner}", "--format",
                   "{{.Names}}")
    return [n for n in r.stdout.split() if n]


def test_container_build_passes(install_dir, fakeci, engine, poll_mode):
    docker_install(install_dir, fakeci)
    fakeci.set_state(envs={"MY_HB_VAR": "from-heartbeat", "bad name": "x",
                           "NPM_TOKEN": "tok-123-secret"})
    ws = install_dir / "ws-host"
    build = fakeci.queue_build(
        script='echo "jar=$(cat /data/devops/docker.jar)"; echo made > "$WORKSPACE/out.txt"',
        workspace=str(ws), dockerBuildInfo=dbi())
    agent = start_agent(install_dir, engine.host)
    assert fakeci.wait_for("finished", 1, timeout=60), agent.read_log()[-4000:]
    report = finished_for(fakeci, build["buildId"])[0]
    assert report["success"] is True, report
    # The worker inside saw the workspace, the variables and the jar.
    end = fakeci.worker_ends[0]
    assert end["cwd"] == "/data/devops"
    assert end["env"]["devops_agent_id"] == build["dockerBuildInfo"]["agentId"]
    assert end["env"]["agent_build_env"] == "DOCKER"
    assert end["env"]["devops_gateway"] == "http://" + fakeci.gateway
    assert end["env"]["MY_HB_VAR"] == "from-heartbeat"
    assert "bad name" not in end["env"]
    assert end["env"]["NPM_TOKEN"] == "tok-123-secret"
    assert not any("tok-123-secret" in m for m in fakeci.log_messages(build["buildId"]))
    assert end["env"]["DEVOPS_AGENT_JDK_17_PATH"] == "/usr/local/jre/bin/java"
    assert (ws / "out.txt").read_text().strip() == "made"
    msgs = fakeci.log_messages(build["buildId"])
    assert "jar=v1.15.2" in msgs
    assert any(m.startswith("[docker] docker create") for m in msgs), msgs
    # The secret key went by name (-e NAME: its value from the CLI's
    # environment), so neither argv nor the posted command line holds it.
    create = next(m for m in msgs if m.startswith("[docker] docker create"))
    assert " -e devops_agent_secret_key " in create
    assert end["env"]["devops_agent_secret_key"] == build["dockerBuildInfo"]["secretKey"]
    assert build["dockerBuildInfo"]["secretKey"] not in "".join(msgs)
    # docker.log landed in the logs mount.
    log = (install_dir / "docker_workspace" / "logs" / build["buildId"] / "1" / "docker.log")
    assert "init launched" in log.read_text()
    # Claimed as ALL (ask, or the legacy pull), not in taskList, container gone.
    if poll_mode == "ask":
        assert any(a["askEnable"]["build"] == "ALL" for a in fakeci.asks() if a)
    else:
        assert fakeci.requests("startup?buildType=ALL")
    assert all(not h.get("taskList") for h in heartbeats(fakeci))
    assert wait_until(lambda: not our_containers(engine, owner_of(install_dir, fakeci.agent_id)),
                      10)
    time.sleep(1)
    assert len(fakeci.finished) == 1
    assert_no_violations(fakeci)


def test_failing_container_build(install_dir, fakeci, engine):
    docker_install(install_dir, fakeci)
    build = fakeci.queue_build(script="echo about to fail; exit 3", dockerBuildInfo=dbi())
    agent = start_agent(install_dir, engine.host)
    assert fakeci.wait_for("finished", 1, timeout=60), agent.read_log()[-4000:]
    report = finished_for(fakeci, build["buildId"])[0]
    assert report["success"] is False
    assert report["error"]["errorCode"] == 2128056
    msg = report["message"]
    assert "exit code 1" in msg and "step failed with exit code 3" in msg, msg
    assert msg.startswith("container dispatch-" + build["buildId"])
    assert wait_until(lambda: not our_containers(engine, owner_of(install_dir, fakeci.agent_id)),
                      10)
    assert_no_violations(fakeci)


def test_bad_network_fails_at_create(install_dir, fakeci, engine):
    docker_install(install_dir, fakeci)
    build = fakeci.queue_build(dockerBuildInfo=dbi(options={"network": ["no-such-net"]}))
    agent = start_agent(install_dir, engine.host)
    assert fakeci.wait_for("finished", 1, timeout=60), agent.read_log()[-4000:]
    report = finished_for(fakeci, build["buildId"])[0]
    assert report["success"] is False
    assert report["error"]["errorCode"] in (2128054, 2128055), report
    assert "no-such-net" in report["message"], report["message"]
    assert wait_until(lambda: not our_containers(engine, owner_of(install_dir, fakeci.agent_id)),
                      10)


def test_container_cap(install_dir, fakeci, engine):
    docker_install(install_dir, fakeci, cap=1)
    builds = [fakeci.queue_build(script="sleep 2", dockerBuildInfo=dbi()) for _ in range(2)]
    agent = start_agent(install_dir, engine.host)
    owner = owner_of(install_dir, fakeci.agent_id)
    seen = []

    def sample():
        seen.append(len(our_containers(engine, owner)))
        return len(fakeci.finished) >= 2

    assert wait_until(sample, 90, interval=0.3), agent.read_log()[-4000:]
    assert all(f["success"] for f in fakeci.finished), fakeci.finished
    assert max(seen) == 1, seen
    # While the container ran, the agent asked for binary builds only.
    kinds = {a["askEnable"]["build"] for a in fakeci.asks() if a}
    assert "BINARY" in kinds, kinds
    assert {f["buildId"] for f in fakeci.finished} == {b["buildId"] for b in builds}
    listed = [t["buildId"] for h in heartbeats(fakeci) for t in h.get("dockerTaskList") or []]
    assert set(listed) <= {b["buildId"] for b in builds} and listed
    assert all(not h.get("taskList") for h in heartbeats(fakeci))
    assert_no_violations(fakeci)


def test_kill9_readopts_and_reports_once(install_dir, fakeci, engine):
    docker_install(install_dir, fakeci)
    build = fakeci.queue_build(script="sleep 4; echo finished-inside", dockerBuildInfo=dbi())
    agent = start_agent(install_dir, engine.host)
    owner = owner_of(install_dir, fakeci.agent_id)
    assert wait_until(lambda: fakeci.count("logs") and any(
        "started" in m for m in fakeci.log_messages(build["buildId"])), 30), \
        agent.read_log()[-3000:]
    names = our_containers(engine, owner)
    assert len(names) == 1
    journal = json.loads(next((install_dir / "runtime" / "builds").glob("*.json")).read_text())
    assert journal["container"] == names[0] and journal["state"] == "running"
    agent.send_signal(signal.SIGKILL)
    agent.wait(5)
    agent2 = start_agent(install_dir, engine.host)
    assert fakeci.wait_for("finished", 1, timeout=60), agent2.read_log()[-4000:]
    assert "re-adopted" in agent2.read_log()
    report = finished_for(fakeci, build["buildId"])[0]
    assert report["success"] is True, report
    assert "finished-inside" in fakeci.log_messages(build["buildId"])
    assert wait_until(lambda: not our_containers(engine, owner), 10)
    time.sleep(2)
    assert len(fakeci.finished) == 1
    assert_no_violations(fakeci)


def test_gone_build_container_removed_foreign_untouched(install_dir, fakeci, engine):
    docker_install(install_dir, fakeci)
    owner = owner_of(install_dir, fakeci.agent_id)
    ours = "dispatch-b-gone-1-abcdefgh"
    foreign = "someone-elses-container"
    other_agent = "dispatch-b-other-1-abcdefgh"
    engine.run("create", "--name", ours, "--label", f"{OWNER_LABEL}={owner}",
               "--label", f"{BUILD_LABEL}=b-gone_1", "--network", "none",
               "fakeci/worker:1", "/bin/sleep", "60")
    engine.run("create", "--name", foreign, "--network", "none", "fakeci/worker:1",
               "/bin/sleep", "60")
    engine.run("create", "--name", other_agent, "--label", f"{OWNER_LABEL}=other-agent-x",
               "--network", "none", "fakeci/worker:1", "/bin/sleep", "60")
    try:
        agent = start_agent(install_dir, engine.host)
        assert wait_until(lambda: ours not in engine.containers(), 30), agent.read_log()[-3000:]
        names = engine.containers()
        assert foreign in names and other_agent in names
    finally:
        engine.run("rm", "-f", foreign, other_agent, check=False)


HOSTILE = [
    ("image option injection", dbi(image="--privileged")),
    ("image with a space", dbi(image="debian latest")),
    ("volumes not strings", dbi(options={"volumes": [123]})),
    ("network with a semicolon", dbi(options={"network": ["host;rm -rf /"]})),
    ("user flag injection", dbi(options={"user": "--privileged"})),
    ("credential a string", dbi(credential="user:pw")),
    ("options a list", dbi(options=["--privileged"])),
    ("privileged a string", dbi(options={"privileged": "yes"})),
    ("image missing", {"options": {"network": ["host"]}}),
]


def test_hostile_docker_build_info(install_dir, fakeci, engine):
    docker_install(install_dir, fakeci)
    builds = [fakeci.queue_build(dockerBuildInfo=info) for _, info in HOSTILE]
    comma_ws = fakeci.queue_build(workspace="/tmp/x,target=/etc", dockerBuildInfo=dbi())
    not_obj = fakeci.queue_build(dockerBuildInfo="oops")
    agent = start_agent(install_dir, engine.host)
    total = len(builds) + 2
    assert fakeci.wait_for("finished", total, timeout=60), agent.read_log()[-4000:]
    for (what, _), b in zip(HOSTILE + [("comma workspace", None)], builds + [comma_ws]):
        rep = finished_for(fakeci, b["buildId"])[0]
        assert rep["success"] is False, what
        assert rep["error"]["errorCode"] == 2128060, (what, rep)
        assert "malformed dockerBuildInfo" in rep["message"], (what, rep["message"])
    rep = finished_for(fakeci, not_obj["buildId"])[0]
    assert rep["success"] is False and "dockerBuildInfo" in rep["message"]
    assert agent.running
    assert not our_containers(engine, owner_of(install_dir, fakeci.agent_id))
    assert not engine.containers()


def test_no_engine(install_dir, fakeci):
    docker_install(install_dir, fakeci)
    dead = f"unix://{install_dir}/no-such-docker.sock"
    raw = {"projectId": fakeci.project_id, "buildId": "b-noengine", "vmSeqId": "1",
           "workspace": "", "pipelineId": "p-1", "executeCount": 1, "containerHashId": "c-1",
           "dockerBuildInfo": dbi(agentId="a", secretKey="s")}
    agent = start_agent(install_dir, dead)
    assert wait_until(lambda: "container engine not available" in agent.read_log(), 20)
    fakeci.queue_build(raw=raw)
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-3000:]
    rep = fakeci.finished[0]
    assert rep["success"] is False
    assert "container engine is not available" in rep["message"], rep["message"]
    assert "Cannot connect" in rep["message"] or "docker daemon" in rep["message"]
    # The agent never asked for container builds; binary builds go on.
    kinds = {a["askEnable"]["build"] for a in fakeci.asks() if a}
    assert kinds <= {"BINARY", "NONE"}, kinds
    b = fakeci.queue_build(script="echo binary ok")
    assert fakeci.wait_for("finished", 2, timeout=30)
    assert finished_for(fakeci, b["buildId"])[0]["success"] is True


def test_no_runtime_binary(install_dir, fakeci):
    docker_install(install_dir, fakeci)
    agent = start_agent(install_dir, "unix:///nonexistent",
                        env_extra={"DEVOPS_AGENT_CONTAINER_RUNTIME": "no-such-runtime"})
    assert wait_until(lambda: "not found in PATH" in agent.read_log(), 20), agent.read_log()


def test_pull_with_credentials(install_dir, fakeci, engine, registry):
    docker_install(install_dir, fakeci)
    good = fakeci.queue_build(script="echo pulled-ok", dockerBuildInfo=dbi(
        image=registry.image, imagePullPolicy="always",
        credential={"user": registry.user, "password": registry.password, "errMsg": None}))
    bad = fakeci.queue_build(dockerBuildInfo=dbi(
        image=registry.image, imagePullPolicy="always",
        credential={"user": registry.user, "password": "wrong-pass-9", "errMsg": None}))
    agent = start_agent(install_dir, engine.host)
    assert fakeci.wait_for("finished", 2, timeout=120), agent.read_log()[-4000:]
    rep = finished_for(fakeci, good["buildId"])[0]
    assert rep["success"] is True, rep
    assert "pulled-ok" in fakeci.log_messages(good["buildId"])
    rep = finished_for(fakeci, bad["buildId"])[0]
    assert rep["success"] is False
    assert rep["error"]["errorCode"] == 2128051
    assert "registry login" in rep["message"] and "unauthorized" in rep["message"].lower(), \
        rep["message"]
    # The passwords are in no log, no request and no file of the install.
    for pw in (registry.password, "wrong-pass-9"):
        assert pw not in agent.read_log()
        assert not any(pw in (r["body"] or "") for r in fakeci.requests()
                       if "/ms/log/" in r["path"] or "workerBuildFinish" in r["path"])
        hits = subprocess.run(["grep", "-rl", pw, str(install_dir)], capture_output=True,
                              text=True, timeout=30).stdout.split()
        assert not hits, hits
    assert not list((install_dir / "runtime" / "docker").glob("bkci-docker-config-*"))
    engine.run("rmi", registry.image, check=False)


def test_podman(install_dir, fakeci):
    pm = Podman()
    try:
        if not pm.start():
            pytest.skip(f"PODMAN CANNOT RUN HERE: {pm.why}")
        docker_install(install_dir, fakeci)
        ok = fakeci.queue_build(script="echo in-podman", dockerBuildInfo=dbi())
        bad = fakeci.queue_build(script="exit 4", dockerBuildInfo=dbi())
        agent = Agent(install_dir, env_extra=pm.agent_env(), fast=True).start()
        assert fakeci.wait_for("finished", 2, timeout=90), agent.read_log()[-4000:]
        assert finished_for(fakeci, ok["buildId"])[0]["success"] is True
        assert "in-podman" in fakeci.log_messages(ok["buildId"])
        rep = finished_for(fakeci, bad["buildId"])[0]
        assert rep["success"] is False and rep["error"]["errorCode"] == 2128056
        assert "step failed with exit code 4" in rep["message"]
        assert any(m.startswith("[docker] podman create")
                   for m in fakeci.log_messages(ok["buildId"]))
        assert wait_until(lambda: not pm.run("ps", "-a", "--format", "{{.Names}}").stdout.strip(),
                          10)
        assert_no_violations(fakeci)
    finally:
        pm.stop()


def test_init_script_downloaded_when_missing(install_dir, fakeci, engine):
    # Not there: the first build fetches it from the server, as GoAgent does;
    # when the server has none either, the build fails with 2128047.
    missing = fakeci.queue_build(dockerBuildInfo=dbi())
    agent = start_agent(install_dir, engine.host)
    assert fakeci.wait_for("finished", 1, timeout=60), agent.read_log()[-3000:]
    rep = finished_for(fakeci, missing["buildId"])[0]
    assert rep["success"] is False and rep["error"]["errorCode"] == 2128047, rep
    assert "agent_docker_init.sh" in rep["message"]
    fakeci.add_file("script/linux/agent_docker_init.sh", INIT_SCRIPT.encode())
    ok = fakeci.queue_build(script="echo with-downloaded-init", dockerBuildInfo=dbi())
    assert fakeci.wait_for("finished", 2, timeout=60), agent.read_log()[-3000:]
    assert finished_for(fakeci, ok["buildId"])[0]["success"] is True
    assert (install_dir / "agent_docker_init.sh").read_text() == INIT_SCRIPT
    assert os.stat(install_dir / "agent_docker_init.sh").st_mode & 0o777 == 0o755
    assert "devops.docker.enable=true" in (install_dir / ".agent.properties").read_text()


def journal_entry(install_dir, fakeci, build_id, container):
    build = {"projectId": fakeci.project_id, "buildId": build_id, "vmSeqId": "1",
             "workspace": "", "pipelineId": "p-1", "executeCount": 1, "containerHashId": "c-1",
             "dockerBuildInfo": dbi(agentId="a", secretKey="s")}
    d = install_dir / "runtime" / "builds"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{build_id}_1.json").write_text(json.dumps(
        {"version": 1, "build": build, "state": "running", "pid": 0, "startTime": 0, "pgid": 0,
         "container": container}))


def test_recovered_container_never_started_or_gone(install_dir, fakeci, engine):
    docker_install(install_dir, fakeci)
    owner = owner_of(install_dir, fakeci.agent_id)
    created = "dispatch-b-created-1-abcdefgh"
    engine.run("create", "--name", created, "--label", f"{OWNER_LABEL}={owner}",
               "--network", "none", "fakeci/worker:1", "/bin/sleep", "60")
    journal_entry(install_dir, fakeci, "b-created", created)
    journal_entry(install_dir, fakeci, "b-gone", "dispatch-b-gone-1-abcdefgh")
    agent = start_agent(install_dir, engine.host)
    assert fakeci.wait_for("finished", 2, timeout=60), agent.read_log()[-3000:]
    rep = finished_for(fakeci, "b-created")[0]
    assert rep["success"] is False and "before the container started" in rep["message"]
    rep = finished_for(fakeci, "b-gone")[0]
    assert rep["success"] is False and "is gone" in rep["message"], rep["message"]
    assert created not in engine.containers()
    time.sleep(1)
    assert len(fakeci.finished) == 2
