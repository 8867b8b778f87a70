#!/usr/bin/python3
"""bench/report.py - the table and plots of docs/benchmarks.md from bench runs.

Every bench records its figures with bench/benchlib.py (one JSON object per
line in <results>/<bench>.jsonl, series for plots in
<results>/<bench>.<key>.json; <results> is $BENCH_RESULTS or build/bench).
This script reads them all and writes:

  <out>/table.md       the figure table (Markdown), machines listed below it
  <out>/<plot>.png     one PNG per known series (matplotlib, when installed)

<out> is build/bench/report, or, with --docs, the table replaces what lies
between the markers "<!-- figures:begin -->" and "<!-- figures:end -->" in
docs/benchmarks.md and the plots go to docs/img/. Nothing is measured here.

Usage: bench/report.py [--docs]
Exit 1 when no figure was recorded, or docs/benchmarks.md lacks the markers.
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import benchlib  # noqa: E402

# Table order: the figure order; benches not listed come last.
ORDER = ["memory", "idle_cost", "server_load", "restart_latency", "pickup",
         "scale", "throughput", "fleet", "queue", "docker"]
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"
SECTIONS = {"memory": "Memory", "idle_cost": "Idle cost", "server_load": "Server load",
            "restart_latency": "Restart", "pickup": "Pickup", "scale": "Scale",
            "throughput": "Throughput", "fleet": "Fleet", "queue": "Queue",
            "docker": "Container"}


def load(results: Path):
    """All figure records, the last one per (bench, key), in table order."""
    recs = {}
    for p in sorted(results.glob("*.jsonl")):
        for line in p.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                print(f"report: {p.name}: skipping a line that is not JSON",
                      file=sys.stderr)
                continue
            recs[(r["bench"], r["key"])] = r
    rank = {b: i for i, b in enumerate(ORDER)}
    return sorted(recs.values(), key=lambda r: (rank.get(r["bench"], len(ORDER)),
                                                r["bench"], r["time"]))


def shown(v) -> str:
    """A value as the table shows it: 3 significant digits, no exponent."""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def cell(text: str) -> str:
    """Text made safe for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def label_of(r) -> str:
    """A record's label without a leading "<Section>: " the table shows anyway."""
    sec = SECTIONS.get(r["bench"], r["bench"])
    label = r["label"]
    if label.lower().startswith(sec.lower() + ": "):
        label = label[len(sec) + 2:]
    return label


def table(recs) -> str:
    """The figure table (every figure with a GoAgent anchor or a goal, one
    section row per bench), the machines, then every figure with its note."""
    machines = []
    for r in recs:
        if r.get("machine", "unknown") not in machines:
            machines.append(r.get("machine", "unknown"))
    rows = ["| Figure | Ours | GoAgent | Goal | Verdict | Machine | Date | Commit |",
            "|---|---|---|---|---|---|---|---|"]
    detail = ["| Figure | Value | How it was measured |", "|---|---|---|"]
    section = None
    for r in recs:
        sec = SECTIONS.get(r["bench"], r["bench"])
        value = f"{shown(r['value'])} {r['unit']}".strip()
        detail.append("| " + " | ".join(cell(x) for x in (
            f"{sec}: {label_of(r)}", value, r.get("note") or "")) + " |")
        if not (r.get("anchor") or r.get("goal")):
            continue
        if sec != section:
            rows.append(f"| **{sec}** | | | | | | | |")
            section = sec
        verdict = {True: "met", False: "**missed**", None: ""}[r.get("met")]
        date = datetime.datetime.fromtimestamp(r["time"], datetime.timezone.utc)
        rows.append("| " + " | ".join(cell(x) for x in (
            label_of(r), value, r.get("anchor") or "-", r.get("goal") or "-", verdict,
            f"m{machines.index(r.get('machine', 'unknown')) + 1}",
            date.strftime("%Y-%m-%d"), r.get("commit", "unknown"))) + " |")
    out = rows + [""] + [f"- m{i + 1}: {m}" for i, m in enumerate(machines)]
    out += ["", "<details><summary>Every figure of the run, with how it was measured"
            "</summary>", ""] + detail + ["", "</details>"]
    return "\n".join(out) + "\n"


def plots(results: Path, out: Path) -> list:
    """Draw the recorded series; returns the PNG paths written.

    A series with "lines" (a list of {"label", "x", "y"}) or "samples"
    ({label: [values]}, drawn as sorted values: a quantile plot, which
    suits latencies) gets a plot of its own, titled by its "title" and
    labelled by "xlabel"/"ylabel". Series with a plain "x" and "y" (a curve
    over time, like the fleet's reconnects) are drawn together, one plot per
    bench and key prefix (<bench>-<prefix>.png): y divided by "idle_rps"
    when the series has it, the span "outage" ([from, to] in x) shaded.
    Other series (raw data for readers) are not drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: no matplotlib (Debian: python3-matplotlib); no plots drawn",
              file=sys.stderr)
        return []
    written, curves = [], {}
    for p in sorted(results.glob("*.*.json")):
        try:
            data = json.loads(p.read_text())
        except ValueError:
            print(f"report: {p.name} is not JSON; skipped", file=sys.stderr)
            continue
        if "x" in data and "y" in data:
            bench, key = p.stem.split(".", 1)
            curves.setdefault(f"{bench}-{key.split('.')[0]}", []).append(data)
            continue
        if "lines" not in data and "samples" not in data:
            continue
        fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
        for line in data.get("lines", []):
            ax.plot(line["x"], line["y"], label=line.get("label", ""))
        for label, values in data.get("samples", {}).items():
            v = sorted(values)
            ax.plot([100.0 * (i + 0.5) / len(v) for i in range(len(v))], v, marker=".",
                    label=label)
        ax.set_title(data.get("title", p.stem))
        ax.set_xlabel(data.get("xlabel", "percentile" if "samples" in data else ""))
        ax.set_ylabel(data.get("ylabel", ""))
        written.append(save(plt, fig, ax, out / (p.stem.replace(".", "-") + ".png")))
    for name, group in sorted(curves.items()):
        fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
        norm = all(d.get("idle_rps") for d in group)
        for d in group:
            y = [v / d["idle_rps"] for v in d["y"]] if norm else d["y"]
            ax.plot(d["x"], y, label=d.get("title", ""), linewidth=1)
        spans = {tuple(d["outage"]) for d in group if "outage" in d}
        for a, b in spans:
            ax.axvspan(a, b, color="grey", alpha=0.15)
        if norm:
            ax.axhline(2.0, color="red", linestyle=":", linewidth=1)
        ax.set_title(name.replace("-", ": "))
        ax.set_xlabel(group[0].get("xlabel", ""))
        ax.set_ylabel("requests/s / idle requests/s" if norm else group[0].get("ylabel", ""))
        written.append(save(plt, fig, ax, out / f"{name}.png"))
    return written


def save(plt, fig, ax, dest: Path) -> Path:
    """Finish a plot (grid, legend) and write it to dest."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(dest, metadata={"Software": None})
    plt.close(fig)
    return dest


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", action="store_true",
                    help="update docs/benchmarks.md and docs/img/ in place")
    args = ap.parse_args()
    results = benchlib.results_dir()
    recs = load(results)
    if not recs:
        print(f"report: no figures in {results}; run `make bench` first",
              file=sys.stderr)
        return 1
    text = table(recs)
    if args.docs:
        doc = REPO / "docs" / "benchmarks.md"
        old = doc.read_text()
        if BEGIN not in old or END not in old:
            print(f"report: {doc} lacks the {BEGIN} / {END} markers", file=sys.stderr)
            return 1
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        doc.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
        out = REPO / "docs" / "img"
    else:
        out = results / "report"
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(text)
    out.mkdir(parents=True, exist_ok=True)
    pngs = plots(results, out)
    print(text)
    for p in pngs:
        print(f"report: wrote {p.relative_to(REPO) if p.is_relative_to(REPO) else p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
