"""Lay out a GoAgent-style install directory for tests and the demo.

The layout follows agent-behaviour §1: the three binaries (upgrader in tmp/),
.agent.properties with the keys of the GoAgent template, a JDK whose
bin/java is the worker stand-in (tests/fakeci/java), worker-agent.jar (a text
file holding the worker version), workspace/ and logs/.
"""

import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WORKER_VERSION = "v1.15.2"


def bin_dir() -> str:
    """Where the built binaries are: $AGENT_BIN_DIR or <repo>/bin."""
    return os.environ.get("AGENT_BIN_DIR") or os.path.join(REPO, "bin")


def properties_text(project_id: str, agent_id: str, secret_key: str, gateway: str,
                    extra: dict | None = None) -> str:
    """The .agent.properties a server-generated package carries (§2.3)."""
    keys = {
        "devops.project.id": project_id,
        "devops.agent.id": agent_id,
        "devops.agent.secret.key": secret_key,
        "landun.gateway": gateway,
        "landun.fileGateway": "",
        "devops.parallel.task.count": "4",
        "landun.env": "PROD",
        "devops.agent.collectorOn": "false",
        "devops.agent.request.timeout.sec": "5",
        "devops.agent.detect.shell": "false",
        "devops.agent.batch.install": agent_id,
        "devops.agent.logs.keep.hours": "96",
        "devops.docker.parallel.task.count": "4",
        "devops.docker.enable": "false",
        "devops.language": "zh_CN",
    }
    keys.update(extra or {})
    lines = ["# Tencent is pleased to support the open source community by making BK-CI",
             "# available. Generated for a test install."]
    lines += [f"{k}={v}" for k, v in keys.items() if v is not None]
    return "\n".join(lines) + "\n"


def layout_install(path: str, gateway: str, project_id: str, agent_id: str,
                   secret_key: str, extra: dict | None = None,
                   binaries: str | None = None) -> str:
    """Create the install dir at path (must not exist or be empty); returns path."""
    src = binaries or bin_dir()
    os.makedirs(os.path.join(path, "tmp"), exist_ok=True)
    for name in ("devopsAgent", "devopsDaemon"):
        shutil.copy2(os.path.join(src, name), os.path.join(path, name))
    shutil.copy2(os.path.join(src, "upgrader"), os.path.join(path, "tmp", "upgrader"))
    os.makedirs(os.path.join(path, "jdk", "bin"), exist_ok=True)
    shutil.copy2(os.path.join(HERE, "java"), os.path.join(path, "jdk", "bin", "java"))
    with open(os.path.join(path, "worker-agent.jar"), "w") as f:
        f.write(WORKER_VERSION + "\n")
    for d in ("workspace", "logs"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    with open(os.path.join(path, ".agent.properties"), "w") as f:
        f.write(properties_text(project_id, agent_id, secret_key, gateway, extra))
    for script in ("install.sh", "start.sh", "stop.sh", "uninstall.sh"):
        s = os.path.join(REPO, "scripts", "linux", script)
        if os.path.exists(s):
            shutil.copy2(s, os.path.join(path, script))
    return path
