"""Tables of ratios and PNG plots from the reports of bench/compare.sh.

    bench/.venv/bin/python bench/plot.py bench/results/compare-DATE [--plots bench/plots]

Reads DIR/{fanout,idle,storm}-N[-rK]-SERVER.json (tidings-bench --out reports), prints markdown
tables with Tidings' figures and its ratio to each peer (Tidings / peer: below 1 is better for
Tidings in latency, CPU and memory), and draws latency (p50, p99) and deliveries/s and server CPU
per delivery against the subscriber count. With several rounds, each figure is the median.
"""

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

NAME = re.compile(r"^(fanout|idle|storm)-(\d+)(?:-r\d+)?-(\w+)\.json$")
ORDER = ["tidings", "nchan", "fastapi"]
LABEL = {"tidings": "Tidings", "nchan": "Nchan", "fastapi": "FastAPI + sse-starlette"}
COLOR = {"tidings": "#1f77b4", "nchan": "#2ca02c", "fastapi": "#d62728"}


def load(directory):
    """{(scenario, n, server): [report, ...]}"""
    runs = defaultdict(list)
    for path in sorted(Path(directory).glob("*.json")):
        m = NAME.match(path.name)
        if m:
            runs[(m[1], int(m[2]), m[3])].append(json.loads(path.read_text()))
    return runs


def med(reports, get):
    values = [v for v in (get(r) for r in reports) if v is not None]
    return statistics.median(values) if values else None


FIELDS = {
    "p50": lambda r: r["latency"]["p50_ms"],
    "p99": lambda r: r["latency"]["p99_ms"],
    "rate": lambda r: r["delivery"]["per_second"],
    "cpu": lambda r: r["cpu"].get("server_cpu_us_per_delivery"),
    "core": lambda r: r["cpu"].get("server_core_percent"),
    "gen": lambda r: r["cpu"]["generator_core_percent"],
    "kib": lambda r: (r.get("memory") or {}).get("kib_per_subscriber"),
    "connected": lambda r: r["connect"]["connected"],
    "connect_s": lambda r: r["connect"]["seconds"],
    "lost": lambda r: r["delivery"]["lost"],
    "dup": lambda r: r["delivery"]["duplicated"],
    "ooo": lambda r: r["delivery"]["out_of_order"],
    "expected": lambda r: r["delivery"]["expected"],
    "events": lambda r: r["publish"]["acked"],
    "evrate": lambda r: r["publish"]["actual_rate"],
    "reconnected": lambda r: (r.get("reconnect") or {}).get("reconnected"),
    "with_id": lambda r: (r.get("reconnect") or {}).get("with_last_event_id"),
    "rfailed": lambda r: (r.get("reconnect") or {}).get("failed"),
    "rp99": lambda r: ((r.get("reconnect") or {}).get("latency") or {}).get("p99_ms"),
    "saturated": lambda r: 1 if r["cpu"]["generator_saturated"] else 0,
}


def fig(runs, scenario, n, server, field):
    reports = runs.get((scenario, n, server))
    return med(reports, FIELDS[field]) if reports else None


def fmt(v, digits=2):
    if v is None:
        return "n/a"
    if isinstance(v, float) and v >= 1000:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"


def servers_of(runs, scenario):
    present = {s for (sc, _, s) in runs if sc == scenario}
    return [s for s in ORDER if s in present] + sorted(present - set(ORDER))


def sizes_of(runs, scenario):
    return sorted({n for (sc, n, _) in runs if sc == scenario})


def fanout_table(runs):
    servers = servers_of(runs, "fanout")
    peers = [s for s in servers if s != "tidings"]
    out = ["### Scenario 1: fan-out, one topic\n"]
    head = "| subscribers | server | events/s sent | p50 ms | p99 ms | deliveries/s | lost | server µs CPU / delivery | server core % | generator core % |"
    out += [head, "|" + "---|" * 10]
    for n in sizes_of(runs, "fanout"):
        for s in servers:
            g = lambda f: fig(runs, "fanout", n, s, f)
            sat = " (saturated)" if g("saturated") else ""
            out.append(
                f"| {n:,} | {LABEL.get(s, s)} | {fmt(g('evrate'), 1)} | {fmt(g('p50'))} | {fmt(g('p99'))} | "
                f"{fmt(g('rate'), 0)} | {fmt(g('lost'), 0)} | {fmt(g('cpu'))} | {fmt(g('core'), 0)} | {fmt(g('gen'), 0)}{sat} |"
            )
    if peers:
        out += ["", "Tidings / peer (below 1: Tidings is better):", ""]
        head = "| subscribers | " + " | ".join(
            f"p99 vs {LABEL[p]} | CPU/delivery vs {LABEL[p]} | deliveries/s vs {LABEL[p]}" for p in peers
        ) + " |"
        out += [head, "|---|" + "---|" * (3 * len(peers))]
        for n in sizes_of(runs, "fanout"):
            t = lambda f: fig(runs, "fanout", n, "tidings", f)
            cells = []
            for p in peers:
                q = lambda f: fig(runs, "fanout", n, p, f)
                cells += [ratio(t("p99"), q("p99")), ratio(t("cpu"), q("cpu")), ratio(t("rate"), q("rate"))]
            out.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def idle_table(runs):
    servers = servers_of(runs, "idle")
    out = ["### Scenario 3: idle capacity\n"]
    out += ["| server | subscribers asked | connected | connect s | server KiB / subscriber | Tidings / peer | deliveries expected after (3 events) | lost |", "|" + "---|" * 8]
    for n in sizes_of(runs, "idle"):
        for s in servers:
            g = lambda f: fig(runs, "idle", n, s, f)
            t = fig(runs, "idle", n, "tidings", "kib")
            out.append(
                f"| {LABEL.get(s, s)} | {n:,} | {fmt(g('connected'), 0)} | {fmt(g('connect_s'))} | {fmt(g('kib'))} | "
                f"{'—' if s == 'tidings' else ratio(t, g('kib'))} | {fmt(g('expected'), 0)} | {fmt(g('lost'), 0)} |"
            )
    return "\n".join(out) + "\n"


def storm_table(runs):
    servers = servers_of(runs, "storm")
    out = ["### Scenario 5: reconnect storm\n"]
    out += ["| server | subscribers | events acked | deliveries expected | lost | duplicated | out of order | reconnections | with Last-Event-ID | failed | reconnect p99 ms | p99 ms | server µs CPU / delivery |", "|" + "---|" * 13]
    for n in sizes_of(runs, "storm"):
        for s in servers:
            g = lambda f: fig(runs, "storm", n, s, f)
            out.append(
                f"| {LABEL.get(s, s)} | {n:,} | {fmt(g('events'), 0)} | {fmt(g('expected'), 0)} | {fmt(g('lost'), 0)} | {fmt(g('dup'), 0)} | "
                f"{fmt(g('ooo'), 0)} | {fmt(g('reconnected'), 0)} | {fmt(g('with_id'), 0)} | {fmt(g('rfailed'), 0)} | "
                f"{fmt(g('rp99'))} | {fmt(g('p99'))} | {fmt(g('cpu'))} |"
            )
    return "\n".join(out) + "\n"


def plots(runs, directory):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    servers = servers_of(runs, "fanout")
    sizes = sizes_of(runs, "fanout")
    if not sizes:
        return []
    written = []

    def series(s, f):
        xs, ys = [], []
        for n in sizes:
            v = fig(runs, "fanout", n, s, f)
            if v is not None:
                xs.append(n)
                ys.append(v)
        return xs, ys

    note = "one topic; 100 events/s at 100 and 1,000 subscribers, 10/s at 10,000"
    f, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for s in servers:
        xs, ys = series(s, "p99")
        ax.plot(xs, ys, "o-", color=COLOR.get(s), label=f"{LABEL.get(s, s)} p99")
        xs, ys = series(s, "p50")
        ax.plot(xs, ys, "s--", color=COLOR.get(s), alpha=0.7, label=f"{LABEL.get(s, s)} p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("subscribers")
    ax.set_ylabel("publish → deliver latency, ms")
    ax.set_title(f"Fan-out latency\n({note})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    f.tight_layout()
    path = directory / "fanout-latency.png"
    f.savefig(path)
    written.append(path)

    f, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    for s in servers:
        xs, ys = series(s, "rate")
        a1.plot(xs, ys, "o-", color=COLOR.get(s), label=LABEL.get(s, s))
        xs, ys = series(s, "cpu")
        a2.plot(xs, ys, "o-", color=COLOR.get(s), label=LABEL.get(s, s))
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("subscribers")
    a1.set_ylabel("deliveries per second")
    a1.set_title("Throughput (asked: 10,000 / 100,000 / 100,000 per s)", fontsize=10)
    a2.set_xscale("log")
    a2.set_xlabel("subscribers")
    a2.set_ylabel("server CPU per delivery, µs")
    a2.set_ylim(bottom=0)
    a2.set_title("Server CPU per delivery (one core, from /proc)", fontsize=10)
    for a in (a1, a2):
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    f.tight_layout()
    path = directory / "fanout-throughput-cpu.png"
    f.savefig(path)
    written.append(path)

    idle = sizes_of(runs, "idle")
    if idle:
        n = idle[-1]
        names = [s for s in servers_of(runs, "idle")]
        vals = [fig(runs, "idle", n, s, "kib") or 0 for s in names]
        f, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
        bars = ax.bar([LABEL.get(s, s) for s in names], vals, color=[COLOR.get(s) for s in names])
        ax.bar_label(bars, fmt="%.1f KiB")
        ax.set_ylim(top=max(vals + [8]) * 1.15)
        ax.axhline(8, color="gray", linestyle=":", label="issue-7 floor: 8 KiB")
        ax.set_ylabel("server RSS per idle subscriber, KiB")
        ax.set_title(f"Idle subscribers: memory each ({n:,} asked)", fontsize=10)
        ax.legend(fontsize=8)
        f.tight_layout()
        path = directory / "idle-memory.png"
        f.savefig(path)
        written.append(path)
    plt.close("all")
    return written


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", help="a bench/compare.sh results directory")
    ap.add_argument("--plots", help="write the PNGs here")
    args = ap.parse_args()
    runs = load(args.results)
    if not runs:
        sys.exit(f"no compare reports in {args.results}")
    for scenario, table in (("fanout", fanout_table), ("idle", idle_table), ("storm", storm_table)):
        if any(sc == scenario for (sc, _, _) in runs):
            print(table(runs))
    if args.plots:
        for p in plots(runs, Path(args.plots)):
            print(f"wrote {p}", file=sys.stderr)


if __name__ == "__main__":
    main()
