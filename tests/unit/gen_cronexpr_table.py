#!/usr/bin/python3
"""Write tests/unit/cronexpr_table.h: next-fire times from two oracles.

1. gorhill/cronexpr's own test table (Debian: golang-github-gorhill-cronexpr-dev,
   /usr/share/gocode/src/github.com/gorhill/cronexpr/cronexpr_test.go), UTC;
   expressions with L, W or '#' (not supported here) are left out.
2. python3-croniter for 5-field expressions (where croniter and gorhill read
   the fields the same way), in UTC and in Asia/Shanghai (no DST), from a
   few start times, five fires each.

Run it again after changing the expression lists:
    /usr/bin/python3 tests/unit/gen_cronexpr_table.py > tests/unit/cronexpr_table.h

With "--random N [SEED]" it prints N fresh rows instead, tab-separated
(expr, zone, utc, from, next), for random 5-field expressions: the unit test
(test_cron.c) reads them through popen() so every run meets new cases.
"""

import calendar
import random
import re
import sys
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from croniter import croniter

GORHILL = "/usr/share/gocode/src/github.com/gorhill/cronexpr/cronexpr_test.go"

EXPRS = [
    "* * * * *", "*/7 * * * *", "5 4 * * *", "0 */3 * * 1-5", "15,45 9-17 * * mon-fri",
    "0 0 1 * *", "0 0 29 2 *", "30 2 31 * *", "0 12 * jan,jul sun", "0 0 13 * fri",
    "1-59/13 3 * * *", "0 0 * * 0", "0 0 * * 7", "0 6 1,15 * 3", "*/15 0 1 1 *",
    "59 23 31 12 *", "0 0 1-7 * 1", "10 10 10 10 *", "0 9 */2 * *", "0 0 * feb *",
]
STARTS = ["2013-01-01 00:00:00", "2016-02-28 23:59:30", "2024-12-31 23:59:59",
          "2025-03-09 01:59:00"]
ZONES = [("UTC", 1), ("Asia/Shanghai", 0)]


def c_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def go_layout_to_strptime(layout):
    return (layout.replace("Mon", "%a").replace("2006", "%Y").replace("01", "%m")
            .replace("02", "%d").replace("15", "%H").replace("04", "%M").replace("05", "%S"))


def gorhill_rows():
    try:
        text = open(GORHILL).read()
    except OSError:
        return []
    rows = []
    block = re.compile(r'\{\s*"([^"]*)",\s*"([^"]*)",\s*\[\]crontimes\{(.*?)\n\t\t\},', re.S)
    for expr, layout, times in block.findall(text):
        if re.search(r"[LW#]", expr):
            continue
        fmt = go_layout_to_strptime(layout)
        for frm, nxt in re.findall(r'\{"([^"]*)", "([^"]*)"\}', times):
            f = calendar.timegm(datetime.strptime(frm, "%Y-%m-%d %H:%M:%S").timetuple())
            n = datetime.strptime(nxt, fmt)
            rows.append((expr, "UTC", 1, f, calendar.timegm(n.timetuple())))
    return rows


def croniter_rows():
    rows = []
    for expr in EXPRS:
        for zone, utc in ZONES:
            tz = ZoneInfo(zone)
            for start in STARTS:
                base = datetime.strptime(start, "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz)
                it = croniter(expr, base)
                prev = int(base.timestamp())
                for _ in range(5):
                    nxt = int(it.get_next(datetime).timestamp())
                    rows.append((expr, zone, utc, prev, nxt))
                    prev = nxt
    return rows


def random_field(rng, lo, hi, names=None):
    """One random field in the grammar croniter and gorhill read alike."""
    items = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.choice(["star", "one", "range", "star-step", "range-step", "from-step"])
        a = rng.randint(lo, hi)
        b = rng.randint(a, hi)
        step = rng.randint(1, max(1, (hi - lo) // 2))
        name = (lambda v: names[v - lo] if names and rng.random() < 0.5 else str(v))
        if kind == "star":
            return "*"
        if kind == "one":
            items.append(name(a))
        elif kind == "range":
            items.append(f"{name(a)}-{name(b)}")
        elif kind == "star-step":
            items.append(f"*/{step}")
        elif kind == "range-step":
            items.append(f"{a}-{b}/{step}")
        else:
            items.append(f"{a}/{step}")
    return ",".join(items)


MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def expand(field, lo, hi, names=None):
    """The values a field names (our reading), to spot where the oracles differ."""
    def val(t):
        return names.index(t) + lo if names and t in names else int(t)
    out = set()
    for item in field.split(","):
        rng, _, step = item.partition("/")
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            a, b = (val(x) for x in rng.split("-"))
        else:
            a = val(rng)
            b = hi if step else a
        out.update(range(a, b + 1, int(step or 1)))
    return out


def comparable(dom, dow):
    """croniter reads a day field naming every day as '*' (gorhill does not), and
    "N/STEP" in the weekday field as running to 7; leave those cases out."""
    if any("/" in i and not i.startswith("*") and "-" not in i for i in dow.split(",")):
        return False
    if dom != "*" and expand(dom, 1, 31) == set(range(1, 32)):
        return False
    if dow != "*" and expand(dow, 0, 6, DAYS) >= set(range(0, 7)):
        return False
    return True


def croniter_reads_month_end(dom, base):
    """croniter 1.3.5, searching from February with a day field naming the 30th
    or 31st, skips every earlier day of March (from 28 Feb, "1,31" gives 31
    March, not 1 March); leave those cases out."""
    return base.month != 2 or dom == "*" or max(expand(dom, 1, 31)) < 30


def random_rows(n, seed):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        expr = " ".join([random_field(rng, 0, 59), random_field(rng, 0, 23),
                         random_field(rng, 1, 31), random_field(rng, 1, 12, MONTHS),
                         random_field(rng, 0, 6, DAYS)])
        if not comparable(expr.split()[2], expr.split()[4]):
            continue
        zone, utc = rng.choice(ZONES)
        start = rng.randint(946684800, 3786825600)          # 2000 .. 2090
        try:
            base = datetime.fromtimestamp(start, ZoneInfo(zone))
            if not croniter_reads_month_end(expr.split()[2], base):
                continue
            nxt = int(croniter(expr, base).get_next(datetime).timestamp())
        except Exception:                                   # croniter refuses or finds none
            continue
        if nxt > 4102444799:                                # beyond 2099: not comparable
            continue
        out.append(f"{expr}\t{zone}\t{utc}\t{start}\t{nxt}")
    return out


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--random":
        seed = int(sys.argv[3]) if len(sys.argv) > 3 else random.randrange(1 << 30)
        print(f"# seed {seed}")
        print("\n".join(random_rows(int(sys.argv[2]), seed)))
        return
    rows = gorhill_rows()
    ng = len(rows)
    rows += croniter_rows()
    out = sys.stdout
    out.write("/* cronexpr_table.h - generated by gen_cronexpr_table.py; do not edit.\n"
              f" * {ng} rows from gorhill/cronexpr's test table, {len(rows) - ng} from croniter. */\n")
    out.write("struct cron_row { const char *expr, *tz; int utc; long long from, next; };\n")
    out.write("static const struct cron_row cron_rows[] = {\n")
    for expr, zone, utc, f, n in rows:
        out.write(f"\t{{ {c_str(expr)}, {c_str(zone)}, {utc}, {f}LL, {n}LL }},\n")
    out.write("};\n")


if __name__ == "__main__":
    main()
