"""The tables, plot and target lines of ``python -m benchmarks.parallel``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from former.parallel import available_cpus


def shape_of(row: dict[str, Any]) -> tuple[int, int, int, int]:
    return row["b"], row["h"], row["t"], row["s"]


def format_table(rows: list[dict[str, Any]], key: str, names: list[str]) -> str:
    """One line per shape: the serial time, and ``key`` (a speed-up) of each method."""
    header = f"{'(b, h, t, s)':<18}{'serial ms':>11}" + "".join(f"{n:>11}" for n in names)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = "".join(f"{row[key][n]:>10.2f}x" for n in names)
        lines.append(f"{shape_of(row)!s:<18}{row['seconds']['serial'] * 1e3:>11.1f}{cells}")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], methods: dict[str, str], processes: int, path: Path) -> None:
    """Bars of each method's speed-up (all but serial, the baseline) per shape, log scale."""
    from matplotlib.figure import Figure

    names = list(methods)[1:]
    figure = Figure(figsize=(10, 6), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(rows))]
        speedups = [row["speedup"][name] for row in rows]
        bars = axes.bar(xs, speedups, width, label=f"{name}: {methods[name]}")
        axes.bar_label(bars, fmt="%.2gx", fontsize=7)
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.axhline(processes, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xticks(range(len(rows)))
    axes.set_xticklabels([f"b={r['b']} h={r['h']}\nt={r['t']} s={r['s']}" for r in rows])
    axes.set_yscale("log", base=2)
    axes.set_ylabel(f"speed-up over serial, 1 thread (log scale; dotted: {processes}x, ideal)")
    axes.set_title(f"Multi-head attention on {available_cpus()} cores: who wins, and when")
    figure.legend(fontsize=7, loc="outside lower center", ncols=2)
    figure.savefig(path, dpi=120)


def print_report(
    rows: list[dict[str, Any]], targets: list[dict[str, Any]], names: list[str]
) -> None:
    print("\nspeed-up over serial (1 thread), medians; serial in milliseconds")
    print(format_table(rows, "speedup", names))
    print("\nthe same from the fastest repeat of each method (less sensitive to other load)")
    print(format_table(rows, "best_speedup", names))
    if all(row["idle_machine_estimate"] for row in rows):
        print("\npool speed-ups estimated for an idle machine from CPU time")
        for row in rows:
            estimate = row["idle_machine_estimate"].items()
            print(f"{shape_of(row)}: " + ", ".join(f"{n} {x:.2f}x" for n, x in estimate))
    print("\nthe serial loop in a fresh process, default allocator (timed after the table):")
    for row in rows:
        plain, seconds = row["serial_plain_seconds"], row["seconds"]
        print(
            f"{shape_of(row)}: {plain * 1e3:.1f} ms, {plain / seconds['serial']:.2f}x the "
            f"baseline's time; head_pool over it {plain / seconds['head_pool']:.2f}x"
        )
    print(
        "(the baseline keeps freed memory, as the pool's workers do; without that every "
        "score matrix costs page faults, and speed-ups would pass the core count)"
    )
    for target in targets:
        print(
            f"target head_pool >= {target['min_speedup']}x at {tuple(target['shape'])}: "
            f"{target['measured']:.2f}x (median) {'met' if target['met'] else 'MISSED'}; "
            f"best-of-repeats ratio {target['best']:.2f}x; over the same pieces on one core "
            f"{target['over_pieces']:.2f}x; ceiling (no_traffic) {target['ceiling']:.2f}x"
        )
