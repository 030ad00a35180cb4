"""When do processes pay off for attention heads?  ``python -m benchmarks.parallel``

For each input shape (b, h, t, s) it times multi-head attention computed

- ``serial``:    head after head in this process, one torch thread (the baseline); every
                 method but the two SDPA ones runs the Task 2 reference head (bmm,
                 softmax, bmm) from ``solutions/attention.py``;
- ``pool_map``:  on a plain ``multiprocessing.Pool`` (2 workers, one thread each),
                 one item per head, tensors pickled through pipes: a first attempt;
- ``pieces``:    in this process, one thread, the heads cut into the pieces
                 ``head_pool`` maps (a few batch entries each, so the scores stay in
                 cache): what the cutting alone gains, with no second core;
- ``workers``:   those pieces on ``former.parallel.make_pool(2)``: two worker
                 processes, tensors in shared memory, the caller waiting for them;
- ``head_pool``: the same with ``include_caller=True``: the caller computes half
                 the heads itself and one worker process the other half, so only
                 that half travels; ``head_pool`` / ``pieces`` is what the second
                 core adds;
- ``no_traffic``: the caller and one worker each compute half the heads, in the same
                 pieces, from copies they already hold, and nothing comes back: no
                 tensor crosses a process boundary. A pool computing the same pieces
                 cannot beat it: it shows what two processes get out of this machine's
                 two cores;
- ``threads``:   head after head, torch intra-op threads on all cores;
- ``sdpa_1``, ``sdpa``: PyTorch's fused ``scaled_dot_product_attention``, one thread
                 and all cores;

and reports each method's speed-up over ``serial``. The baseline process keeps freed
memory as the pool's workers do; the same loop in a fresh process with the default
allocator, as a learner would time it, is reported after the table. Timings are medians over
repeats, the methods taking turns in a new random order each repeat so that load from other
processes on a shared machine hits them alike. It prints a table, writes
``bench-results/parallel.json`` and a plot, ``bench-results/parallel.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from former.attention import sdpa_attention
from former.parallel import PoolAttention, SerialPool, available_cpus, make_pool
from former.parallel.attention import InPieces, rows_per_piece
from former.parallel.pool import default_start_method
from former.parallel.speedups import interleaved_timings, random_inputs, with_threads
from former.parallel.worker import keep_freed_memory, limit_threads
from solutions.attention import attention_function

SHAPES = ((4, 8, 128, 16), (4, 8, 512, 16), (4, 8, 1024, 64), (8, 8, 1024, 64))
TARGETS = {(4, 8, 512, 16): 1.6, (8, 8, 1024, 64): 1.9}  # head_pool over serial, 2 cores
PROCESSES = 2
METHODS = {
    "serial": "serial loop over heads, 1 thread",
    "pool_map": f"multiprocessing.Pool.map, {PROCESSES} workers, a head per item, pickled",
    "pieces": "serial loop over cache-sized pieces of heads, 1 thread",
    "workers": f"former.parallel.make_pool({PROCESSES}): {PROCESSES} workers, caller waits",
    "head_pool": f"former.parallel.make_pool({PROCESSES}, include_caller=True): caller + "
    f"{PROCESSES - 1} worker",
    "no_traffic": "caller + 1 worker on halves they hold, nothing moved (ceiling)",
    "threads": "serial loop over heads, torch intra-op threads on all cores",
    "sdpa_1": "F.scaled_dot_product_attention, 1 thread",
    "sdpa": "F.scaled_dot_product_attention, all cores",
}
TIME_PER_SHAPE = 20.0  # seconds of serial time to aim for when choosing repeats


# Heads each process of the no_traffic method holds, by key; filled by stash_heads.
_HELD: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}


def stash_heads(args: tuple[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]) -> None:
    """Keep private copies of some heads' (q, k, v), each (b, t, s), in this process."""
    key, heads = args
    _HELD[key] = [tuple(x.clone() for x in head) for head in heads]


def compute_held(args: tuple[str, bool]) -> torch.Tensor | None:
    """Attention of the heads held under ``key``, in pieces; (b, t, heads * s) if asked for."""
    key, give_back = args
    heads = _HELD[key]
    head = InPieces(attention_function, rows_per_piece(heads[0][0].size(1)))
    outputs = [head((q, k, v, False)) for q, k, v in heads]
    return torch.cat(outputs, dim=2) if give_back else None


def no_traffic(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, pool: Any
) -> tuple[Callable[[], None], Callable[[], torch.Tensor]]:
    """The no_traffic method on a caller-plus-one-worker pool: (timed call, checked output).

    q, k, v: (b, t, heads * s). The first half of the heads is handed to the
    worker once, the second half stays with the caller.
    """
    s = q.size(-1) // heads
    per_head = [tuple(x[:, :, i * s : (i + 1) * s] for x in (q, k, v)) for i in range(heads)]
    half = (heads + 1) // 2
    # A caller-plus-one-worker pool sends the first item to the worker, keeps the last.
    pool.map(stash_heads, [("worker", per_head[:half]), ("caller", per_head[half:])])

    def timed() -> None:
        pool.map(compute_held, [("worker", False), ("caller", False)])

    def output() -> torch.Tensor:
        return torch.cat(pool.map(compute_held, [("worker", True), ("caller", True)]), dim=2)

    return timed, output


def parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = tuple(int(x) for x in text.split(","))
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"a shape is b,h,t,s (four integers), got {text!r}")
    return parts


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.parallel", description=__doc__)
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=None, help="fixed repeats per method")
    parser.add_argument("--output-dir", type=Path, default=Path("bench-results"))
    parser.add_argument("--start-method", default=None, help="for both pools")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 when a target is missed"
    )
    return parser.parse_args(argv)


def methods_for(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, pools: dict[str, Any]
) -> tuple[dict[str, Callable[[], Any]], dict[str, Callable[[], torch.Tensor]]]:
    """Two dicts of zero-argument callables, by method: the timed calls, and calls
    returning the method's (b, t, h*s) output to check (the same but for no_traffic)."""
    cores = available_cpus()
    held, held_output = no_traffic(q, k, v, heads, pools["head_pool"])

    # Every pool maps the Task 2 reference head (bmm, softmax, bmm): the work a
    # learner's attention_function does, not PyTorch's fused kernel.
    def on(pool: Any, split_batch: bool) -> Callable[[], torch.Tensor]:
        attention = PoolAttention(pool, attention_function, split_batch=split_batch)
        return lambda: attention(q, k, v, heads, False)

    # The parent of a pool only hands out work and gathers it: one thread for it
    # leaves the cores to the workers.
    methods = {
        "serial": with_threads(1, on(SerialPool(), split_batch=False)),
        "pool_map": with_threads(1, on(pools["pool_map"], split_batch=False)),
        "pieces": with_threads(1, on(SerialPool(), split_batch=True)),
        "workers": with_threads(1, on(pools["workers"], split_batch=True)),
        "head_pool": with_threads(1, on(pools["head_pool"], split_batch=True)),
        "no_traffic": with_threads(1, held),
        "threads": with_threads(cores, on(SerialPool(), split_batch=False)),
        "sdpa_1": with_threads(1, lambda: sdpa_attention(q, k, v, heads, False)),
        "sdpa": with_threads(cores, lambda: sdpa_attention(q, k, v, heads, False)),
    }
    return methods, {**methods, "no_traffic": with_threads(1, held_output)}


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds a (single-threaded) process has run so far; None where /proc is missing.

    /proc/PID/schedstat counts nanoseconds, where /proc/PID/stat counts 10 ms ticks.
    """
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def worker_pids(pool: Any) -> list[int]:
    if hasattr(pool, "pids"):
        return pool.pids
    return [process.pid for process in pool._pool]  # multiprocessing.Pool keeps them there


def cpu_bound_speedups(
    methods: dict[str, Callable[[], Any]], pools: dict[str, Any], calls: int
) -> dict[str, float] | None:
    """Speed-up each pool would reach if this machine were otherwise idle.

    On a shared machine, wall-clock ratios depend on how much CPU other people's
    processes leave us; CPU time depends on it much less. Per call, the serial
    loop's CPU time divided by the parent's CPU time plus the busiest worker's
    estimates the speed-up on an idle machine (wake-up latencies ignored); for a
    pool whose caller computes too, the larger of the two. The methods take turns
    call by call, and the medians are compared.
    """
    if process_cpu_seconds(os.getpid()) is None:
        return None
    samples: dict[str, list[float]] = {"serial": [], **{name: [] for name in pools}}
    for _ in range(calls):
        start = time.process_time()
        methods["serial"]()
        samples["serial"].append(time.process_time() - start)
        for name, pool in pools.items():
            pids = worker_pids(pool)
            before = [process_cpu_seconds(pid) or 0.0 for pid in pids]
            start = time.process_time()
            methods[name]()
            parent = time.process_time() - start
            after = [process_cpu_seconds(pid) or 0.0 for pid in pids]
            busiest = max(b - a for a, b in zip(before, after, strict=True))
            computing_together = getattr(pool, "include_caller", False)
            samples[name].append(max(parent, busiest) if computing_together else parent + busiest)
    serial = statistics.median(samples["serial"])
    return {name: serial / statistics.median(samples[name]) for name in pools}


def plain_serial_seconds(shape: tuple[int, int, int, int], repeats: int) -> float:
    """Median seconds of the serial baseline in this process, as it is: run it in a fresh one.

    A fresh Python process has the default allocator, which returns every freed
    score matrix to the system and pays page faults to get it back: the loop a
    learner times in a notebook. It is reported beside the baseline, not used as it.
    """
    torch.set_num_threads(1)
    b, h, t, s = shape
    q, k, v = random_inputs(b, h, t, s)
    attention = PoolAttention(SerialPool(), attention_function, split_batch=False)
    with torch.inference_mode():
        samples = interleaved_timings({"serial": lambda: attention(q, k, v, h, False)}, repeats)
    return statistics.median(samples["serial"])


def measure_plain_serial(rows: list[dict[str, Any]]) -> None:
    """Add ``serial_plain_seconds`` to each row, timed in one fresh spawned process."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as fresh:
        for row in rows:
            shape = (row["b"], row["h"], row["t"], row["s"])
            repeats = max(3, min(21, int(4.0 / max(row["seconds"]["serial"], 1e-3))))
            row["serial_plain_seconds"] = fresh.submit(
                plain_serial_seconds, shape, repeats
            ).result()


def choose_repeats(serial_seconds: float) -> int:
    return int(min(61, max(5, TIME_PER_SHAPE / max(serial_seconds, 1e-4) / 3)))


def measure_shape(shape: tuple[int, int, int, int], pools: dict[str, Any], repeats: int | None):
    b, h, t, s = shape
    q, k, v = random_inputs(b, h, t, s)
    with torch.inference_mode():
        methods, outputs = methods_for(q, k, v, h, pools)
        reference = outputs["serial"]()
        errors = {name: (fn() - reference).abs().max().item() for name, fn in outputs.items()}
        start = time.perf_counter()
        methods["serial"]()
        serial_seconds = time.perf_counter() - start
        if repeats is None:
            repeats = choose_repeats(serial_seconds)
        samples = interleaved_timings(methods, repeats=repeats, warmup=0)  # warmed above
        cpu_calls = max(5, min(25, math.ceil(0.5 / max(serial_seconds, 1e-3))))
        cpu_estimates = cpu_bound_speedups(methods, pools, cpu_calls)
    seconds = {name: statistics.median(values) for name, values in samples.items()}
    best = {name: min(values) for name, values in samples.items()}
    return {
        "b": b,
        "h": h,
        "t": t,
        "s": s,
        "repeats": repeats,
        "seconds": seconds,
        "speedup": {name: seconds["serial"] / value for name, value in seconds.items()},
        "idle_machine_estimate": cpu_estimates,
        "best_seconds": best,
        "best_speedup": {name: best["serial"] / value for name, value in best.items()},
        "max_abs_error": errors,
    }


def format_table(rows: list[dict[str, Any]], key: str = "speedup") -> str:
    names = list(METHODS)
    header = f"{'(b, h, t, s)':<18}{'serial ms':>11}" + "".join(f"{n:>11}" for n in names[1:])
    lines = [header, "-" * len(header)]
    for row in rows:
        shape = f"({row['b']}, {row['h']}, {row['t']}, {row['s']})"
        cells = "".join(f"{row[key][n]:>10.2f}x" for n in names[1:])
        lines.append(f"{shape:<18}{row['seconds']['serial'] * 1e3:>11.1f}{cells}")
    return "\n".join(lines)


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    for row in rows:
        shape = (row["b"], row["h"], row["t"], row["s"])
        if shape in TARGETS:
            measured = row["speedup"]["head_pool"]
            results.append(
                {
                    "shape": list(shape),
                    "method": "head_pool",
                    "min_speedup": TARGETS[shape],
                    "measured": measured,
                    "best": row["best_speedup"]["head_pool"],
                    # The cutting into pieces helps one core too: this is the second core's share.
                    "over_pieces": measured / row["speedup"]["pieces"],
                    # What two processes reach here with nothing to move: the ceiling.
                    "ceiling": row["speedup"]["no_traffic"],
                    "met": measured >= TARGETS[shape],
                }
            )
    return results


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    names = [n for n in METHODS if n != "serial"]
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(10, 6), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(rows))]
        bars = axes.bar(
            xs, [row["speedup"][name] for row in rows], width, label=f"{name}: {METHODS[name]}"
        )
        axes.bar_label(bars, fmt="%.2g", fontsize=7)
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.axhline(PROCESSES, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xticks(range(len(rows)))
    axes.set_xticklabels([f"b={r['b']} h={r['h']}\nt={r['t']} s={r['s']}" for r in rows])
    axes.annotate(
        f"ideal for {PROCESSES} processes",
        (0.01, PROCESSES),
        fontsize=7,
        xycoords=("axes fraction", "data"),
        va="bottom",
    )
    axes.set_yscale("log", base=2)
    axes.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.2g}x"))
    axes.set_ylabel("speed-up over serial, 1 thread (log scale)")
    axes.set_title(f"Multi-head attention on {available_cpus()} cores: who wins, and when")
    figure.legend(fontsize=7, loc="outside lower center", ncols=2)
    figure.savefig(path, dpi=120)


def machine_info(start_method: str) -> dict[str, Any]:
    return {
        "cpus": available_cpus(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "start_method": start_method,
        "load_average_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    start_method = args.start_method or default_start_method()
    info = machine_info(start_method)
    print(
        f"{info['cpus']} cores, torch {info['torch']}, start method {start_method}, "
        f"load average {info['load_average_before']}"
    )
    context = multiprocessing.get_context(start_method)
    # The head pool's workers keep freed memory between calls; give this process
    # (the serial, threads and SDPA baselines) the same allocator, or the baseline
    # pays page faults the workers do not, and speed-ups pass the core count.
    keep_freed_memory()
    rows = []
    with (
        context.Pool(PROCESSES, initializer=limit_threads) as pool_map,
        make_pool(PROCESSES, start_method) as workers,
        make_pool(PROCESSES, start_method, include_caller=True) as head_pool,
    ):
        pools = {"pool_map": pool_map, "workers": workers, "head_pool": head_pool}
        for shape in args.shapes:
            row = measure_shape(shape, pools, args.repeats)
            rows.append(row)
            print(f"measured {shape}: {row['repeats']} repeats", flush=True)
    measure_plain_serial(rows)
    if hasattr(os, "getloadavg"):
        info["load_average_after"] = list(os.getloadavg())

    table = format_table(rows)
    targets = check_targets(rows)
    print()
    print("speed-up over serial (1 thread), medians; serial in milliseconds")
    print(table)
    print()
    print("the same from the fastest repeat of each method (less sensitive to other load)")
    print(format_table(rows, key="best_speedup"))
    if all(row["idle_machine_estimate"] for row in rows):
        print()
        print("pool speed-ups estimated for an idle machine from CPU time (see cpu_bound_speedups)")
        for row in rows:
            estimate = row["idle_machine_estimate"]
            print(
                f"({row['b']}, {row['h']}, {row['t']}, {row['s']}): "
                + ", ".join(f"{name} {value:.2f}x" for name, value in estimate.items())
            )
    print()
    print(
        "the serial loop in a fresh process, default allocator (timed after the table, not "
        "interleaved):"
    )
    for row in rows:
        plain, serial = row["serial_plain_seconds"], row["seconds"]["serial"]
        print(
            f"({row['b']}, {row['h']}, {row['t']}, {row['s']}): {plain * 1e3:.1f} ms, "
            f"{plain / serial:.2f}x the baseline's time; head_pool over it "
            f"{plain / row['seconds']['head_pool']:.2f}x"
        )
    print(
        "(the baseline keeps freed memory, as the pool's workers do; without that every "
        "score matrix costs page faults, and speed-ups would pass the core count)"
    )
    for target in targets:
        verdict = "met" if target["met"] else "MISSED"
        print(
            f"target head_pool >= {target['min_speedup']}x at {tuple(target['shape'])}: "
            f"{target['measured']:.2f}x (median) {verdict}; best-of-repeats ratio "
            f"{target['best']:.2f}x; over the same pieces on one core {target['over_pieces']:.2f}x; "
            f"ceiling (no_traffic) {target['ceiling']:.2f}x"
        )
    print(f"load average after: {info.get('load_average_after')}")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "methods": METHODS, "shapes": rows, "targets": targets}
    json_path = args.output_dir / "parallel.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, args.output_dir / "parallel.png")
    print(f"wrote {json_path} and {args.output_dir / 'parallel.png'}")
    return 1 if args.check and not all(t["met"] for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
