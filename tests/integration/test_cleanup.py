"""The cleanup loop (issue 5; agent-behaviour §9, §6.9.1, W21).

The test lays out an install directory with old and new files of every
kind the loop looks at, starts devopsAgent (whose first round runs at
start-up), waits for the round's log line and compares the whole tree with
exactly what must be left.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from conftest import Agent, write_properties

HOUR = 3600
NOW = time.time()
OLD_LOG = NOW - 100 * HOUR         # keep.hours is 96
NEW_LOG = NOW - 90 * HOUR
OLD_WEEK = NOW - 8 * 24 * HOUR     # build_tmp and build scripts: 7 days
NEW_WEEK = NOW - 6 * 24 * HOUR


def make(path: Path, mtime: float, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    return path


def tree(root: Path) -> set:
    """Every path below root (relative; directories end with '/')."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        for d in dirnames:
            out.add(str(rel / d) + "/")
        for f in filenames:
            out.add(str(rel / f))
    return out


def task(ws: Path, name: str, mtime: float, result: dict | None) -> None:
    """A pipeline task dir as the executor leaves it."""
    make(ws / name / "task.json", mtime, json.dumps({"id": name}))
    make(ws / name / "output.log", mtime)
    if result is not None:
        make(ws / name / "result.json", mtime, json.dumps(dict(result, id=name)))
    os.utime(ws / name, (mtime, mtime))


def test_cleanup_removes_exactly_the_old_entries(install_dir, fakeci, tmp_path):
    d = install_dir
    write_properties(d, fakeci, {"devops.pipeline.enable": "true"})
    outside = make(tmp_path / "outside-target", OLD_WEEK)

    # §9 items 1 and 2: dumps and logs older than keep.hours (top level only).
    make(d / "hs_err_pid111.log", OLD_LOG)
    make(d / "hs_err_pid222.log", NEW_LOG)
    make(d / "logs" / "old.log", OLD_LOG)
    make(d / "logs" / "devopsAgent.3.log", OLD_LOG)
    make(d / "logs" / "new.log", NEW_LOG)
    make(d / "logs" / "old.txt", OLD_LOG)
    make(d / "logs" / "sub" / "deep.log", OLD_LOG)
    # §9 item 3: docker build log dirs.
    make(d / "docker_workspace" / "logs" / "b-old" / "1.log", OLD_LOG)
    os.utime(d / "docker_workspace" / "logs" / "b-old", (OLD_LOG, OLD_LOG))
    make(d / "docker_workspace" / "logs" / "b-new" / "1.log", NEW_LOG)
    # §6.9.1 + W21: build_tmp recursively, 7 days.
    bt = d / "build_tmp"
    make(bt / "old.bin", OLD_WEEK)
    make(bt / "new.bin", NEW_WEEK)
    make(bt / "olddir" / "a.txt", OLD_WEEK)
    make(bt / "olddir" / "deeper" / "b.txt", OLD_WEEK)
    os.utime(bt / "olddir" / "deeper", (OLD_WEEK, OLD_WEEK))
    os.utime(bt / "olddir", (OLD_WEEK, OLD_WEEK))
    make(bt / "mixed" / "old.txt", OLD_WEEK)
    make(bt / "mixed" / "new.txt", NEW_WEEK)
    os.utime(bt / "mixed", (OLD_WEEK, OLD_WEEK))
    make(bt / "newdir" / "old.txt", OLD_WEEK)                # dir itself is new
    os.symlink(outside, bt / "oldlink")
    os.utime(bt / "oldlink", (OLD_WEEK, OLD_WEEK), follow_symlinks=False)
    make(d / "devops_agent_start_p_b1_1.sh", OLD_WEEK)
    make(d / "devops_agent_prepare_start_p_b1_1.sh", OLD_WEEK)
    make(d / "devops_agent_start_p_b2_1.sh", NEW_WEEK)
    make(d / "devops_agent_start_notes.txt", OLD_WEEK)
    # Finished pipeline task dirs older than keep.hours.
    ws = d / "pipeline_tasks"
    done = {"tag": "pipeline", "status": "SUCCESS", "done": True}
    task(ws, "t-old-reported", OLD_LOG, dict(done, reported=True))
    task(ws, "t-new-reported", NEW_LOG, dict(done, reported=True))
    task(ws, "t-old-unreported", OLD_LOG, dict(done, tag="other", reported=False))
    task(ws, "t-old-never-started", OLD_LOG, None)
    make(ws / "not-a-task" / "data.txt", OLD_LOG)
    os.utime(ws / "not-a-task", (OLD_LOG, OLD_LOG))
    # W21: an entry that cannot be removed does not stop the scan.
    stuck = make(bt / "stuck" / "immutable.bin", OLD_WEEK)
    os.utime(bt / "stuck", (OLD_WEEK, OLD_WEEK))
    immutable = subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode == 0

    expected = tree(d) - {
        "hs_err_pid111.log", "logs/old.log", "logs/devopsAgent.3.log",
        "docker_workspace/logs/b-old/", "docker_workspace/logs/b-old/1.log",
        "build_tmp/old.bin", "build_tmp/olddir/", "build_tmp/olddir/a.txt",
        "build_tmp/olddir/deeper/", "build_tmp/olddir/deeper/b.txt",
        "build_tmp/mixed/old.txt", "build_tmp/newdir/old.txt", "build_tmp/oldlink",
        "devops_agent_start_p_b1_1.sh", "devops_agent_prepare_start_p_b1_1.sh",
        "pipeline_tasks/t-old-reported/", "pipeline_tasks/t-old-reported/task.json",
        "pipeline_tasks/t-old-reported/output.log",
        "pipeline_tasks/t-old-reported/result.json",
        "pipeline_tasks/t-old-never-started/",
        "pipeline_tasks/t-old-never-started/task.json",
        "pipeline_tasks/t-old-never-started/output.log",
    }
    if not immutable:
        expected -= {"build_tmp/stuck/", "build_tmp/stuck/immutable.bin"}
    try:
        agent = Agent(d, fast=True).start()
        agent.wait_for_log(r"cleanup: round done", timeout=20)
        left = tree(d)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(stuck)], check=False)
    # Files the agent itself creates at start are not part of the question.
    created = {p for p in left - expected
               if p.startswith(("runtime/", "logs/devopsAgent", "tmp/"))
               or p in (".cert", ".agent.properties.bak")}
    assert left - created == expected, (
        f"removed but expected kept: {sorted(expected - left)}\n"
        f"kept but expected removed: {sorted(left - created - expected)}\n"
        + agent.read_log()[-3000:])
    assert outside.exists(), "a symlink's target outside build_tmp was removed"
    if immutable:
        assert "cleanup: unlink" in agent.read_log()
    assert agent.running
    shutil.rmtree(ws / "t-old-unreported")
