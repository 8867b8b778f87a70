"""The native host-metrics collector (issue 5; agent-behaviour §10, W17;
protocol §7.11 (a)).

devopsAgent runs with devops.agent.collectorOn=true and
DEVOPS_AGENT_TEST_FAST=1 (a round every second). Every body that reaches
fakeci is parsed by a strict InfluxDB line-protocol parser written here,
and the values are checked against /proc, statvfs() and the mount table
read by the test itself.
"""

import math
import os
import re
import time

from conftest import Agent, wait_heartbeats, write_properties

WRITE_PATH = "/ms/environment/api/buildAgent/agent/thirdPartyAgent/agents/metrix/write"
IGNORED_FS = {"tmpfs", "devtmpfs", "devfs", "overlay", "aufs", "squashfs"}
CPU_FIELDS = ("usage_user", "usage_nice", "usage_system", "usage_idle", "usage_iowait",
              "usage_irq", "usage_softirq", "usage_steal", "usage_guest", "usage_guest_nice")


# ------------------------------------------------------------ strict parser

class LineError(ValueError):
    pass


def _until(line, i, stops, escapable):
    """Read an escaped token from i up to an unescaped char of stops."""
    out = []
    while i < len(line) and line[i] not in stops:
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] in escapable:
            out.append(line[i + 1])
            i += 2
            continue
        if c in "\n\r":
            raise LineError("newline inside a token")
        out.append(c)
        i += 1
    return "".join(out), i


FLOAT = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
INT = re.compile(r"-?\d+i")
UINT = re.compile(r"\d+u")
BOOL = re.compile(r"t|T|true|True|TRUE|f|F|false|False|FALSE")


def parse_line(line):
    """One line of InfluxDB line protocol -> (measurement, tags, fields, ts).

    Strict: every escape, separator and value type is checked; tags must be
    sorted by key (as telegraf sends them) and unique; a value type never
    changes meaning (ints carry 'i').
    """
    if not line or line[0] in "# ":
        raise LineError("empty line, comment or leading space")
    meas, i = _until(line, 0, ", ", ",  ")
    if not meas:
        raise LineError("empty measurement")
    tags = {}
    keys = []
    while i < len(line) and line[i] == ",":
        key, i = _until(line, i + 1, "=, ", ",= ")
        if i >= len(line) or line[i] != "=" or not key:
            raise LineError(f"bad tag key at {i}")
        val, i = _until(line, i + 1, ", ", ",= ")
        if not val:
            raise LineError(f"empty value of tag {key}")
        if key in tags:
            raise LineError(f"duplicate tag {key}")
        tags[key] = val
        keys.append(key)
    if keys != sorted(keys):
        raise LineError(f"tags not sorted: {keys}")
    if i >= len(line) or line[i] != " ":
        raise LineError("no field set")
    i += 1
    fields = {}
    while True:
        key, i = _until(line, i, "=, ", ",= ")
        if i >= len(line) or line[i] != "=" or not key:
            raise LineError(f"bad field key at {i}")
        i += 1
        if i < len(line) and line[i] == '"':
            out, i = [], i + 1
            while True:
                if i >= len(line):
                    raise LineError("unterminated string")
                c = line[i]
                if c == "\\" and i + 1 < len(line) and line[i + 1] in '"\\':
                    out.append(line[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    out.append(c)
                    i += 1
            value = "".join(out)
        else:
            raw, i = _until(line, i, ", ", "")
            if INT.fullmatch(raw):
                value = int(raw[:-1])
            elif UINT.fullmatch(raw):
                value = int(raw[:-1])
            elif FLOAT.fullmatch(raw):
                value = float(raw)
            elif BOOL.fullmatch(raw):
                value = raw[0] in "tT"
            else:
                raise LineError(f"bad value {raw!r} of field {key}")
        if key in fields:
            raise LineError(f"duplicate field {key}")
        fields[key] = value
        if i < len(line) and line[i] == ",":
            i += 1
            continue
        break
    if i >= len(line) or line[i] != " ":
        raise LineError("no timestamp")
    ts = line[i + 1:]
    if not re.fullmatch(r"-?\d+", ts):
        raise LineError(f"bad timestamp {ts!r}")
    return meas, tags, fields, int(ts)


def test_parser_is_strict():
    good = r'a\ b,x=1,y=a\,b f=1i,g=2.5,h="q\"s" 1700000000000000000'
    assert parse_line(good) == ("a b", {"x": "1", "y": "a,b"},
                                {"f": 1, "g": 2.5, "h": 'q"s'}, 1700000000000000000)
    for bad in ("m f=1i", "m,y=1,x=2 f=1i 1", "m,x= f=1i 1", "m f= 1", "m f=1x 1",
                'm f="open 1', "m f=1i,f=2i 1", "m  f=1i 1", "m,x=1 1", "m f=1i 1.5"):
        try:
            parse_line(bad)
        except LineError:
            continue
        raise AssertionError(f"accepted {bad!r}")


# ------------------------------------------------------------ /proc, read here

def read_proc(path):
    with open(path) as fh:
        return fh.read()


def meminfo():
    out = {}
    for line in read_proc("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0])
    return out


def expected_disks():
    """path -> (device, fstype, statvfs): telegraf's filter, computed by the test."""
    nodev = {line.split()[1] for line in read_proc("/proc/filesystems").splitlines()
             if line.startswith("nodev")}
    entries = []
    for line in read_proc("/proc/self/mounts").splitlines():
        dev, mnt, fstype = line.split()[:3]
        unesc = lambda s: re.sub(r"\\([0-3][0-7][0-7])", lambda m: chr(int(m.group(1), 8)), s)
        entries.append((unesc(dev), unesc(mnt), fstype))
    out = {}
    for n, (dev, mnt, fstype) in enumerate(entries):
        if any(e[1] == mnt for e in entries[n + 1:]):
            continue                                   # hidden by a later mount
        if fstype in nodev or fstype in IGNORED_FS:
            continue
        try:
            st = os.statvfs(mnt)
        except OSError:
            continue
        if st.f_blocks == 0:
            continue
        out[mnt] = (dev[5:] if dev.startswith("/dev/") else dev, fstype, st)
    return out


def expected_interfaces():
    out = set()
    for line in read_proc("/proc/net/dev").splitlines()[2:]:
        name = line.split(":")[0].strip()
        try:
            flags = int(read_proc(f"/sys/class/net/{name}/flags").strip(), 16)
        except OSError:
            continue
        if flags & 0x1 and not flags & 0x8:
            out.add(name)
    return out


# ------------------------------------------------------------ helpers

def start_collector(install_dir, fakeci):
    write_properties(install_dir, fakeci, {"devops.agent.collectorOn": "true"})
    return Agent(install_dir, fast=True).start()


def points(fakeci):
    out = []
    for post in fakeci.metrix:
        for line in post["body"].splitlines():
            try:
                out.append(parse_line(line))
            except LineError as exc:
                raise AssertionError(f"{exc}: {line!r}") from None
    return out


def has_cpu_round(fakeci):
    return any(m == "cpu" for m, _, _, _ in points(fakeci))


# ------------------------------------------------------------ tests

def test_points_match_proc(install_dir, fakeci):
    (install_dir / "telegraf.conf").write_text(f'agentSecret = "{fakeci.secret_key}"\n')
    t0 = time.time_ns()
    agent = start_collector(install_dir, fakeci)
    assert fakeci.wait_until(lambda: has_cpu_round(fakeci), timeout=30), agent.read_log()[-3000:]
    t1 = time.time_ns()

    posts = fakeci.metrix
    assert all(p["path"] == WRITE_PATH and p["query"] == {"db": "agentMetrix"} for p in posts)
    assert all(fakeci.secret_key not in p["body"] for p in posts)            # W17
    assert not (install_dir / "telegraf.conf").exists()
    assert not [f for f in os.listdir(install_dir) if f.endswith(".conf")]
    pts = points(fakeci)
    for meas, tags, fields, ts in pts:
        assert tags["agentId"] == fakeci.agent_id and tags["projectId"] == fakeci.project_id
        assert tags["host"] and "agentSecret" not in tags
        assert t0 <= ts <= t1
    # The newest complete round: the one whose timestamp has cpu points.
    ts = max(ts for m, _, _, ts in pts if m == "cpu")
    rnd = [(m, tags, f) for m, tags, f, t in pts if t == ts]
    by = lambda name: [(tags, f) for m, tags, f in rnd if m == name]
    names = {m for m, _, _ in rnd}
    # A chroot or a container may have no device-backed filesystem at all:
    # then no disk point is right, and set(got) == set(disks) below checks it.
    want = {"cpu", "mem", "swap", "kernel", "processes", "system"}
    assert want | ({"disk"} if expected_disks() else set()) <= names

    stat = read_proc("/proc/stat")
    cpus = {"cpu-total"} | {l.split()[0] for l in stat.splitlines() if re.match(r"cpu\d+ ", l)}
    assert {t["cpu"] for t, _ in by("cpu")} <= cpus
    assert "cpu-total" in {t["cpu"] for t, _ in by("cpu")}
    for _, f in by("cpu"):
        assert set(f) == set(CPU_FIELDS)
        assert all(isinstance(f[k], float) and -1e-9 <= f[k] <= 100 + 1e-9 for k in CPU_FIELDS)
        assert math.isclose(sum(f.values()), 100.0, abs_tol=1e-6)

    mi = meminfo()
    (_, mem), = by("mem")
    assert mem["total"] == mi["MemTotal"] * 1024
    assert mem["used"] == mem["total"] - mem["free"] - mem["buffered"] - mem["cached"]
    assert math.isclose(mem["used_percent"], 100 * mem["used"] / mem["total"], rel_tol=1e-9)
    assert abs(mem["available"] - mi["MemAvailable"] * 1024) < 0.05 * mem["total"]
    assert all(isinstance(mem[k], int) for k in ("total", "used", "free", "available"))
    (_, swap), = by("swap")
    assert swap["total"] == mi["SwapTotal"] * 1024
    assert swap["used"] == swap["total"] - swap["free"]

    disks = expected_disks()
    got = {t["path"]: (t, f) for t, f in by("disk")}
    assert set(got) == set(disks)
    for path, (dev, fstype, st) in disks.items():
        t, f = got[path]
        assert (t["device"], t["fstype"]) == (dev, fstype)
        assert f["total"] == st.f_blocks * st.f_frsize
        assert f["inodes_total"] == st.f_files
        assert t["mode"] in ("rw", "ro")

    diskstats = {l.split()[2]: l.split() for l in read_proc("/proc/diskstats").splitlines()}
    for t, f in by("diskio"):
        now = diskstats[t["name"]]
        assert 0 < f["reads"] + f["writes"]
        assert f["reads"] <= int(now[3]) and f["writes"] <= int(now[7])
        assert f["read_bytes"] <= int(now[5]) * 512

    assert {t["interface"] for t, _ in by("net")} == expected_interfaces()
    netdev = {l.split(":")[0].strip(): l.split(":")[1].split()
              for l in read_proc("/proc/net/dev").splitlines()[2:]}
    for t, f in by("net"):
        assert f["bytes_recv"] <= int(netdev[t["interface"]][0])
        assert f["bytes_sent"] <= int(netdev[t["interface"]][8])

    (_, kern), = by("kernel")
    btime = int(re.search(r"^btime (\d+)", stat, re.M).group(1))
    assert kern["boot_time"] == btime
    assert kern["context_switches"] <= int(re.search(r"^ctxt (\d+)", stat, re.M).group(1))
    assert kern["processes_forked"] <= int(re.search(r"^processes (\d+)", stat, re.M).group(1))

    (_, procs), = by("processes")
    states = ("blocked", "dead", "idle", "paging", "parked", "running", "sleeping",
              "stopped", "unknown", "zombies")
    assert procs["total"] == sum(procs[k] for k in states) > 0
    assert procs["total_threads"] >= procs["total"] - procs["zombies"]

    (_, system), = by("system")
    assert system["n_cpus"] == len(os.sched_getaffinity(0))
    assert 0 <= system["uptime"] <= float(read_proc("/proc/uptime").split()[0]) + 1
    assert isinstance(system["uptime_format"], str) and ":" in system["uptime_format"]
    assert system["load1"] >= 0 and system["load5"] >= 0 and system["load15"] >= 0
    assert agent.running


def test_points_are_kept_while_the_server_is_down(install_dir, fakeci):
    # The collector starts once startup is acknowledged (nothing goes out
    # before it); then the server goes away.
    agent = start_collector(install_dir, fakeci)
    agent.wait_for_log("startup reported", timeout=30)
    fakeci.set_down(True)
    down_at = time.time_ns()
    delivered = len(fakeci.metrix)
    tries = fakeci.count("requests", "/agents/metrix")
    # Three rounds fail to deliver (fakeci records the dropped POSTs).
    assert fakeci.wait_for("requests", tries + 3, timeout=30,
                           path_contains="/agents/metrix"), agent.read_log()[-3000:]
    down_until = time.time_ns()
    fakeci.set_down(False)
    assert fakeci.wait_until(lambda: len(fakeci.metrix) > delivered, timeout=30)
    # The rounds of the outage arrive after it.
    stamps = sorted({ts for _, _, _, ts in points(fakeci) if down_at <= ts < down_until})
    assert len(stamps) >= 2, stamps
    assert "metrics: POST failed" in agent.read_log()
    assert agent.running


def test_collector_off(install_dir, fakeci):
    write_properties(install_dir, fakeci, {"devops.agent.collectorOn": "false"})
    agent = Agent(install_dir, fast=True).start()
    assert wait_heartbeats(fakeci, 4, timeout=20)
    assert fakeci.count("requests", "/agents/metri") == 0
    assert "metrics collector off" in agent.read_log()
