"""The disk guard: below devops.agent.disk.min.free.mb on the install dir's
file system the agent stops claiming (askEnable.build NONE), says so in its
log and in `devopsAgent status`, runs the cleanup at once, and claims again
once space is back. The install dir lives on a small tmpfs (mounted as
root); without the right to mount, a threshold above the disk's free space
stands in for a full disk.
"""

import json
import os
import subprocess

import pytest

from conftest import (Agent, cleanup_install_dir, layout_install_dir, wait_until,
                      write_properties)

SIZE_MB = 48
MIN_FREE_MB = 24


@pytest.fixture
def tmpfs_install(tmp_path, fakeci):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        yield None, r.stderr.strip()
        return
    try:
        inst = layout_install_dir(mnt / "install", fakeci)
        yield inst, None
        cleanup_install_dir(inst)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def status_json(inst):
    r = subprocess.run(["./devopsAgent", "status", "--json"], cwd=inst,
                       capture_output=True, text=True, timeout=60)
    return r.returncode, json.loads(r.stdout)


def test_disk_guard_on_tmpfs(tmpfs_install, fakeci, install_dir):
    inst, why = tmpfs_install
    if inst is None:
        # Fallback: the normal disk, with a threshold no disk meets.
        inst = install_dir
        write_properties(inst, fakeci, {"devops.agent.disk.min.free.mb": str(1 << 40)})
        agent = Agent(inst, fast=True).start()
        agent.wait_for_log("disk guard: .* below devops.agent.disk.min.free.mb")
        fakeci.queue_build()
        assert wait_until(lambda: any(a and a["askEnable"]["build"] == "NONE"
                                      for a in fakeci.asks()), timeout=10)
        assert not fakeci.wait_for("finished", 1, timeout=3)
        pytest.skip(f"LOUD SKIP of the tmpfs part: cannot mount a tmpfs ({why}); "
                    "the guard was checked against a threshold above the free space")
    write_properties(inst, fakeci, {"devops.agent.disk.min.free.mb": str(MIN_FREE_MB)})
    agent = Agent(inst, fast=True).start()
    fakeci.queue_build()
    assert fakeci.wait_for("finished", 1, timeout=30), agent.read_log()[-3000:]

    # Fill the file system below the threshold.
    filler = inst.parent / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * ((SIZE_MB - MIN_FREE_MB + 4) << 20))
    m = agent.wait_for_log(r"disk guard: (\d+) MiB free on the install dir's file system, "
                           r"below devops.agent.disk.min.free.mb=%d; not claiming builds; "
                           r"running the cleanup now" % MIN_FREE_MB)
    assert int(m.group(1)) < MIN_FREE_MB
    # The cleanup ran at once (its first round was at the start).
    assert wait_until(lambda: agent.read_log().split("running the cleanup now", 1)[1]
                      .count("cleanup: round done") >= 1, timeout=10)
    n_asks = len(fakeci.asks())
    fakeci.queue_build()
    assert wait_until(lambda: len(fakeci.asks()) >= n_asks + 2, timeout=15)
    assert all(a["askEnable"]["build"] == "NONE" for a in fakeci.asks()[n_asks + 1:])
    assert len(fakeci.finished) == 1
    assert wait_until(lambda: status_json(inst)[1]["agent"]["diskGuard"]["low"], timeout=5)
    rc, doc = status_json(inst)
    checks = {c["name"]: c for c in doc["checks"]}
    assert not checks["disk"]["ok"] and checks["disk"]["class"] == 7
    assert doc["agent"]["diskGuard"]["low"] is True
    assert "devops.agent.disk.min.free.mb" in doc["agent"]["notClaiming"]
    assert not checks["disk guard"]["ok"]

    # Space back: claiming again, the queued build runs.
    os.unlink(filler)
    agent.wait_for_log("disk guard: .* free again; claiming builds again")
    assert fakeci.wait_for("finished", 2, timeout=30), agent.read_log()[-3000:]
    # The state file follows within a second.
    assert wait_until(lambda: status_json(inst)[1]["agent"]["diskGuard"]["low"] is False,
                      timeout=5)
