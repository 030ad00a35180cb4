"""When do processes pay off for attention heads?  ``python -m benchmarks.parallel``

Times multi-head attention on each shape (b, h, t, s) by each method below and prints its
speed-up over ``serial``. Every method but the SDPA ones maps the Task 2 reference head
(bmm, softmax, bmm) from ``solutions/attention.py``. Timings are medians over repeats, the
methods taking turns in a new random order each repeat, so that load from other processes
hits them alike. Writes ``bench-results/parallel.json`` and ``bench-results/parallel.png``.
"""

from __future__ import annotations

import argparse
import json
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

from benchmarks.parallel_report import plot, print_report, shape_of
from former.attention import sdpa_attention
from former.parallel import PoolAttention, SerialPool, available_cpus, make_pool, use_one_thread
from former.parallel.pool import default_start_method
from former.parallel.pool_attention import InPieces, head_slices, rows_per_piece
from former.parallel.speedups import interleaved_timings, random_inputs
from former.parallel.worker import keep_freed_memory
from former.threads import torch_threads
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
Method = tuple[int, Callable[[], Any]]  # (torch threads, zero-argument call)

# no_traffic: the caller and one worker each compute half the heads, in head_pool's pieces,
# from copies they already hold, and nothing comes back. A pool computing the same pieces
# cannot beat it: it is what two processes get out of this machine's cores.
_HELD: dict[str, list[tuple[torch.Tensor, ...]]] = {}


def stash_heads(args: tuple[str, list[tuple[torch.Tensor, ...]]]) -> None:
    """Keep private copies of some heads' (q, k, v), each (b, t, s), in this process."""
    key, heads = args
    _HELD[key] = [tuple(x.clone() for x in head) for head in heads]


def compute_held(args: tuple[str, bool]) -> torch.Tensor | None:
    """Attention of the heads held under ``key``, in pieces; (b, t, heads * s) if asked for."""
    key, give_back = args
    head = InPieces(attention_function, rows_per_piece(_HELD[key][0][0].size(1)))
    outputs = [head((q, k, v, False)) for q, k, v in _HELD[key]]
    return torch.cat(outputs, dim=2) if give_back else None


def no_traffic(q, k, v, heads: int, pool: Any) -> tuple[Method, Method]:
    """no_traffic on a caller-plus-one-worker pool, which sends the first item to the worker
    and keeps the last: (timed call, checked output). q, k, v: (b, t, heads * s)."""
    per_head = list(zip(*(head_slices(x, heads, SerialPool()) for x in (q, k, v)), strict=True))
    half = (heads + 1) // 2
    pool.map(stash_heads, [("worker", per_head[:half]), ("caller", per_head[half:])])

    def run(give_back: bool) -> list[torch.Tensor | None]:
        return pool.map(compute_held, [("worker", give_back), ("caller", give_back)])

    return (1, lambda: run(False)), (1, lambda: torch.cat(run(True), dim=2))


def parse_shape(text: str) -> tuple[int, int, int, int]:
    if len(parts := tuple(int(x) for x in text.split(","))) != 4:
        raise argparse.ArgumentTypeError(f"a shape is b,h,t,s (four integers), got {text!r}")
    return parts


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.parallel",
        description=__doc__,
        epilog="methods:\n" + "\n".join(f"  {name:<11} {text}" for name, text in METHODS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=None, help="fixed repeats per method")
    parser.add_argument("--output-dir", type=Path, default=Path("bench-results"))
    return parser.parse_args(argv)


def methods_for(q, k, v, heads: int, pools: dict[str, Any]) -> tuple[dict, dict]:
    """The timed methods, and the same returning their (b, t, h*s) output to check. A pool's
    caller only hands out work and gathers it: one thread leaves the cores to the workers."""
    cores = available_cpus()
    held, held_output = no_traffic(q, k, v, heads, pools["head_pool"])

    def on(pool: Any, split_batch: bool) -> Callable[[], torch.Tensor]:
        attention = PoolAttention(pool, attention_function, split_batch=split_batch)
        return lambda: attention(q, k, v, heads, False)

    methods = {
        "serial": (1, on(SerialPool(), split_batch=False)),
        "pool_map": (1, on(pools["pool_map"], split_batch=False)),
        "pieces": (1, on(SerialPool(), split_batch=True)),
        "workers": (1, on(pools["workers"], split_batch=True)),
        "head_pool": (1, on(pools["head_pool"], split_batch=True)),
        "no_traffic": held,
        "threads": (cores, on(SerialPool(), split_batch=False)),
        "sdpa_1": (1, lambda: sdpa_attention(q, k, v, heads, False)),
        "sdpa": (cores, lambda: sdpa_attention(q, k, v, heads, False)),
    }
    return methods, {**methods, "no_traffic": held_output}


def call(method: Method) -> Any:
    with torch_threads(method[0]):
        return method[1]()


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds a single-threaded process has run (ns in /proc/PID/schedstat); None if absent."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def idle_machine_speedups(methods: dict, pools: dict[str, Any], calls: int) -> dict | None:
    """Speed-up each pool would reach on an otherwise idle machine, from CPU time (which other
    processes' load changes much less than wall-clock time): the serial loop's CPU time over
    the caller's plus the busiest worker's (the larger when the caller computes too)."""
    if process_cpu_seconds(os.getpid()) is None:
        return None
    samples: dict[str, list[float]] = {"serial": [], **{name: [] for name in pools}}
    for _ in range(calls):
        start = time.process_time()
        call(methods["serial"])
        samples["serial"].append(time.process_time() - start)
        for name, pool in pools.items():
            pids = pool.pids if hasattr(pool, "pids") else [p.pid for p in pool._pool]
            before = [process_cpu_seconds(pid) or 0.0 for pid in pids]
            start = time.process_time()
            call(methods[name])
            caller = time.process_time() - start
            after = [process_cpu_seconds(pid) or 0.0 for pid in pids]
            busiest = max(b - a for a, b in zip(before, after, strict=True))
            together = getattr(pool, "include_caller", False)
            samples[name].append(max(caller, busiest) if together else caller + busiest)
    serial = statistics.median(samples["serial"])
    return {name: serial / statistics.median(samples[name]) for name in pools}


def plain_serial_seconds(shape: tuple[int, int, int, int], repeats: int) -> float:
    """Median seconds of the serial baseline, run in a fresh process with its default
    allocator (every freed score matrix returned to the system): as a learner times it."""
    b, h, t, s = shape
    q, k, v = random_inputs(b, h, t, s)
    attention = PoolAttention(SerialPool(), attention_function, split_batch=False)
    with torch.inference_mode():
        timed = interleaved_timings({"serial": (1, lambda: attention(q, k, v, h, False))}, repeats)
    return statistics.median(timed["serial"])


def measure_shape(shape: tuple[int, int, int, int], pools: dict[str, Any], repeats: int | None):
    b, h, t, s = shape
    q, k, v = random_inputs(b, h, t, s)
    with torch.inference_mode():
        methods, outputs = methods_for(q, k, v, h, pools)
        reference = call(outputs["serial"])
        errors = {name: (call(m) - reference).abs().max().item() for name, m in outputs.items()}
        start = time.perf_counter()
        call(methods["serial"])
        serial_seconds = time.perf_counter() - start
        if repeats is None:
            repeats = int(min(61, max(5, TIME_PER_SHAPE / max(serial_seconds, 1e-4) / 3)))
        samples = interleaved_timings(methods, repeats=repeats, warmup=0)  # warmed above
        calls = max(5, min(25, int(0.5 / max(serial_seconds, 1e-3)) + 1))
        estimates = idle_machine_speedups(methods, pools, calls)
    seconds = {name: statistics.median(values) for name, values in samples.items()}
    best = {name: min(values) for name, values in samples.items()}
    return {
        **dict(zip("bhts", shape, strict=True)),
        "repeats": repeats,
        "seconds": seconds,
        "speedup": {name: seconds["serial"] / value for name, value in seconds.items()},
        "idle_machine_estimate": estimates,
        "best_seconds": best,
        "best_speedup": {name: best["serial"] / value for name, value in best.items()},
        "max_abs_error": errors,
    }


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """head_pool's speed-up at each target shape, beside what the second core adds over the
    same pieces on one core (over_pieces) and the ceiling (no_traffic)."""
    return [
        {
            "shape": list(shape_of(row)),
            "method": "head_pool",
            "min_speedup": TARGETS[shape_of(row)],
            "measured": row["speedup"]["head_pool"],
            "best": row["best_speedup"]["head_pool"],
            "over_pieces": row["speedup"]["head_pool"] / row["speedup"]["pieces"],
            "ceiling": row["speedup"]["no_traffic"],
            "met": row["speedup"]["head_pool"] >= TARGETS[shape_of(row)],
        }
        for row in rows
        if shape_of(row) in TARGETS
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    start_method = default_start_method()
    info = {
        "cpus": available_cpus(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "start_method": start_method,
        "load_average_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    print(f"{info['cpus']} cores, torch {info['torch']}, start method {start_method}")
    print(f"load average before: {info['load_average_before']}")
    # The head pool's workers keep freed memory between calls; so does this process (the
    # serial, threads and SDPA baselines), or the baseline alone would pay page faults.
    keep_freed_memory()
    rows = []
    context = multiprocessing.get_context(start_method)
    with (
        context.Pool(PROCESSES, initializer=use_one_thread) as pool_map,
        make_pool(PROCESSES) as workers,
        make_pool(PROCESSES, include_caller=True) as head_pool,
    ):
        pools = {"pool_map": pool_map, "workers": workers, "head_pool": head_pool}
        for shape in args.shapes:
            rows.append(measure_shape(shape, pools, args.repeats))
            print(f"measured {shape}: {rows[-1]['repeats']} repeats", flush=True)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
        for row in rows:
            repeats = max(3, min(21, int(4.0 / max(row["seconds"]["serial"], 1e-3))))
            timing = fresh.submit(plain_serial_seconds, shape_of(row), repeats)
            row["serial_plain_seconds"] = timing.result()
    info["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    targets = check_targets(rows)
    print_report(rows, targets, list(METHODS)[1:])
    print(f"load average after: {info['load_average_after']}")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "methods": METHODS, "shapes": rows, "targets": targets}
    (args.output_dir / "parallel.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, METHODS, PROCESSES, args.output_dir / "parallel.png")
    print(f"wrote {args.output_dir / 'parallel.json'} and {args.output_dir / 'parallel.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
