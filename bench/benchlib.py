"""Helpers shared by the bench scripts: starting and stopping an agent, memory
of a process and percentiles."""

import os
import signal
import subprocess
import time as _time

GOAGENT_RSS_MB = (30, 50)   # GoAgent with its embedded telegraf (agent-behaviour §10)


def smaps(pid: int) -> dict:
    """RSS, PSS, USS (private pages) and dirty (the private pages that are
    dirty: heap, stacks, relocated library data; what no other process can
    share and the kernel cannot drop) of pid in KiB, from
    /proc/<pid>/smaps_rollup."""
    out = {"rss": 0, "pss": 0, "uss": 0, "dirty": 0}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == "Rss":
                out["rss"] = int(v.split()[0])
            elif k == "Pss":
                out["pss"] = int(v.split()[0])
            elif k in ("Private_Clean", "Private_Dirty"):
                out["uss"] += int(v.split()[0])
                if k == "Private_Dirty":
                    out["dirty"] += int(v.split()[0])
    return out


def percentile(values, p):
    """Nearest-rank percentile of values (0 < p <= 100)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def start_agent(install: str, fast: bool = False) -> subprocess.Popen:
    """Start <install>/devopsAgent in its own session (test periods when fast)."""
    env = {k: v for k, v in os.environ.items() if k != "DEVOPS_AGENT_TEST_FAST"}
    if fast:
        env["DEVOPS_AGENT_TEST_FAST"] = "1"
    return subprocess.Popen(["./devopsAgent"], cwd=install, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def status_kb(pid: int, key: str) -> int:
    """A KiB field of /proc/<pid>/status (VmHWM, VmRSS ...), 0 when absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def read_pid(install: str, name: str) -> int:
    """The pid in <install>/runtime/<name>.pid, 0 when none yet."""
    try:
        with open(os.path.join(install, "runtime", name + ".pid")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def alive(pid: int) -> bool:
    """True when pid runs (and is no zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_daemon(install: str, timeout: float = 15.0):
    """Start <install>/devopsDaemon in its own session with the normal periods
    and wait up to timeout s for the agent it starts. Returns (Popen of the
    daemon, agent pid); the pid is 0 when no agent came up (stop the daemon
    with stop_daemon all the same)."""
    daemon = subprocess.Popen(["./devopsDaemon"], cwd=install, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True,
                              env={k: v for k, v in os.environ.items()
                                   if k != "DEVOPS_AGENT_TEST_FAST"})
    end = _time.monotonic() + timeout
    while not read_pid(install, "agent") and _time.monotonic() < end:
        _time.sleep(0.05)
    return daemon, read_pid(install, "agent")


def stop_daemon(daemon: subprocess.Popen, install: str) -> None:
    """SIGTERM the daemon (SIGKILL of its session after 10 s), then the agent
    of install if it still runs, waiting up to 10 s for it to exit."""
    stop_agent(daemon)
    agent = read_pid(install, "agent")
    if agent and alive(agent):
        try:
            os.kill(agent, signal.SIGTERM)
        except OSError:
            pass
        end = _time.monotonic() + 10
        while alive(agent) and _time.monotonic() < end:
            _time.sleep(0.1)


def stop_agent(p: subprocess.Popen) -> None:
    """SIGTERM p (an agent or a daemon we started), then SIGKILL its session
    after 10 s."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


# ------------------------------------------------------------ figures
# Every bench prints one line per figure and records it for bench/report.py,
# which writes the table of docs/benchmarks.md and its plots. A record is one
# JSON object per line in <results>/<bench>.jsonl; a series (for a plot) is
# <results>/<bench>.<key>.json. <results> is $BENCH_RESULTS, else build/bench.

import json as _json
from pathlib import Path as _Path

_REPO = _Path(__file__).resolve().parents[1]


def _commit() -> str:
    """The short commit of the checkout, with "+" when its code or benches have
    uncommitted changes (docs/ does not count: the report writes there)."""
    try:
        c = subprocess.run(["git", "-C", str(_REPO), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
        d = subprocess.run(["git", "-C", str(_REPO), "status", "--porcelain",
                            "--untracked-files=no", "--", ".", ":!docs"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
        return (c + "+" if d else c) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    """A short description of this machine: cores, CPU model, memory, kernel."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = " ".join(line.split(":", 1)[1].split())
                    break
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except OSError:
        mem_kib = 0
    return (f"{os.cpu_count()} cores {model}, {mem_kib / 1048576:.1f} GiB, "
            f"Linux {os.uname().release}")


_RUN = {}


def results_dir() -> _Path:
    """Where figures go: $BENCH_RESULTS or <repo>/build/bench (created)."""
    d = _Path(os.environ.get("BENCH_RESULTS") or _REPO / "build" / "bench")
    d.mkdir(parents=True, exist_ok=True)
    return d


def reset(bench: str) -> None:
    """Forget the figures an earlier run of bench recorded (call once at start)."""
    for p in results_dir().glob(f"{bench}.*"):
        p.unlink()
    (results_dir() / f"{bench}.jsonl").unlink(missing_ok=True)


def figure(bench: str, key: str, label: str, value, unit: str, *,
           anchor: str = "", goal: str = "", met=None, note: str = "") -> None:
    """Print one figure line and record it.

    bench: the script's short name (e.g. "memory"); key: a stable id unique
    within bench (e.g. "agent.uss.idle"); label: what a reader sees in the
    table; value: a number (or text) in unit; anchor: GoAgent's figure as
    text ("13.8 MB"), "" when none; goal: our goal as text ("< 1.4 MB");
    met: True/False when the goal is numeric and was checked, None else;
    note: one short sentence (the baseline of a ratio, the conditions).
    A figure never fails the bench: machines are noisy."""
    if isinstance(value, float):
        shown = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    else:
        shown = str(value)
    verdict = {True: "goal met", False: "goal MISSED", None: ""}[met]
    extra = "; ".join(x for x in (f"GoAgent {anchor}" if anchor else "",
                                  f"goal {goal}" if goal else "", verdict) if x)
    print(f"{bench}: {label}: {shown} {unit}" + (f"  [{extra}]" if extra else ""),
          flush=True)
    rec = {"bench": bench, "key": key, "label": label, "value": value,
           "unit": unit, "anchor": anchor, "goal": goal, "met": met,
           "note": note, "time": int(_time.time())}
    if not _RUN:
        _RUN.update(commit=_commit(), machine=machine())
    rec.update(_RUN)
    with open(results_dir() / f"{bench}.jsonl", "a") as f:
        f.write(_json.dumps(rec) + "\n")


def series(bench: str, key: str, data: dict) -> None:
    """Record a series for a plot: data is a JSON-able dict, e.g.
    {"x": [...], "y": [...], "xlabel": "s", "ylabel": "requests/s"}."""
    with open(results_dir() / f"{bench}.{key}.json", "w") as f:
        _json.dump(data, f)
