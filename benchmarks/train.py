"""Training benchmark: the classifier's default and headline configurations on real IMDB,
side by side: wall-clock (warm cache: data load, bigram choice, training, final evaluation),
training tokens/s and TEST accuracy on all 24,960 test reviews.

    python -m benchmarks.train                      # (make bench-train) both configurations
    python -m benchmarks.train --only default -r 2  # one configuration, another seed
    python -m benchmarks.train --only default -M 256 --bigrams 0   # the default row, changed

default: what ``python -m former.classify`` trains (its flags change this row). headline:
HEADLINE's settings, HEADLINE_SEEDS models with their probabilities averaged. Also measured:
padding's effect on the default model (a test review alone, and batched with the longest).
Targets (2 cores): default 88% within 120 s, headline 90.5% within 300 s. Writes
``bench-results/train.json``; the load average is recorded, as machines are shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from former.classifier import ClassifierConfig, ensemble_accuracy, fit_seeds
from former.classify import add_seeds_flag
from former.data import ClassificationData, load_imdb
from former.data.batching import make_batch
from former.loop import evaluating
from former.settings import CLI, add_flags, read_flags
from former.transformers import CTransformer

REPO_ROOT = Path(__file__).resolve().parent.parent
IMDB_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "aclImdb-labelled.tar.gz"
RESULTS = REPO_ROOT / "bench-results" / "train.json"
HEADLINE = {"max_length": 512, "bigrams": 100_000}
HEADLINE_SEEDS = 3  # as many as fit in the headline target's time on a 2-core CPU
TARGETS = {"default": (0.88, 120.0), "headline": (0.905, 300.0)}  # (test accuracy, seconds)
PADDING_REVIEWS = 200  # test reviews checked alone and in a padded batch
CPU = torch.device("cpu")


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def load_data(config: ClassifierConfig) -> ClassificationData:
    return load_imdb(IMDB_ARCHIVE, final=True, vocab_size=config.vocab_size, seed=config.seed)


def padding_effect(model: CTransformer, data: ClassificationData, max_length: int) -> dict:
    """The largest change padding makes to a probability, and how many labels it flips, over
    the first PADDING_REVIEWS test reviews shorter than the three longest (batched with them)."""
    split = data.val
    lengths = split.lengths().clamp(max=max_length)
    longest = torch.argsort(lengths, descending=True)[:3]
    shorter = torch.nonzero(lengths < lengths[longest[-1]]).flatten()[:PADDING_REVIEWS]
    changes, flips = [], 0
    with evaluating(model) as model:
        for index in shorter.tolist():
            alone = make_batch(split, torch.tensor([index]), max_length)
            batched = make_batch(split, torch.cat([torch.tensor([index]), longest]), max_length)
            p_alone = model(alone.tokens, alone.padding_mask).exp()[0]
            p_batched = model(batched.tokens, batched.padding_mask).exp()[0]
            changes.append(float((p_alone - p_batched).abs().max()))
            flips += int(p_alone.argmax() != p_batched.argmax())
    return {"reviews": len(changes), "max_abs_change": max(changes), "label_flips": flips}


def run_configuration(name: str, config: ClassifierConfig, seeds: int) -> dict[str, Any]:
    """Train ``seeds`` models of ``config`` (seeds config.seed, +1, ...) on a warm cache;
    their test accuracies, and that of their averaged probabilities."""
    load_data(config)  # make sure the cache is warm
    load_before = load_average()
    started = time.perf_counter()
    data = load_data(config)
    members, runs = [], []
    for member in fit_seeds(config, data, seeds, device=CPU, progress=False, log=print):
        members.append(member)
        metrics, seed = member.metrics, member.config.seed
        runs.append({"seed": seed, "test_acc": metrics["val_acc"], **metrics})
        print(f"{name}: seed {seed} test_acc={metrics['val_acc']:.4f}", flush=True)
    test_acc = ensemble_accuracy(members, data.val)
    wall = time.perf_counter() - started
    target_acc, target_s = TARGETS[name]
    return {
        "name": name,
        "config": config.to_dict(),
        "seeds": seeds,
        "data": data.source,
        "runs": runs,
        "test_acc": test_acc,
        "test_examples": len(data.val),
        "tokens_per_s": sum(run["tokens_per_s"] for run in runs) / len(runs),
        "wall_s": wall,
        "target": {"test_acc": target_acc, "seconds": target_s},
        "target_met": test_acc >= target_acc and wall <= target_s,
        "load_before": load_before,
        "load_after": load_average(),
        "padding": padding_effect(members[0].model, data, config.max_length),
    }


def print_table(results: list[dict]) -> None:
    header = ("configuration", "seeds", "wall s", "tokens/s", "test acc", "each seed", "target")
    rows = [header, *map(table_row, results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    for r in results:
        padding = r["padding"]
        print(
            f"{r['name']}: load average {r['load_before']} -> {r['load_after']}; padding: "
            f"max change of a probability {padding['max_abs_change']:.2g}, "
            f"{padding['label_flips']} of {padding['reviews']} labels flipped"
        )


def table_row(r: dict) -> tuple[str, ...]:
    target = f"{r['target']['test_acc']:.1%} in {r['target']['seconds']:.0f} s"
    return (
        r["name"],
        str(r["seeds"]) + (" (averaged)" if r["seeds"] > 1 else ""),
        f"{r['wall_s']:.0f}",
        f"{r['tokens_per_s']:,.0f}",
        f"{r['test_acc']:.4f}",
        " ".join(f"{run['test_acc']:.4f}" for run in r["runs"]),
        f"{target}: {'met' if r['target_met'] else 'NOT met'}",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_seeds_flag(add_flags(parser, ClassifierConfig, CLI)["training"])
    parser.add_argument("--only", choices=sorted(TARGETS), help="run one configuration")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    return parser.parse_args(argv)


def configurations(args: argparse.Namespace) -> dict[str, tuple[ClassifierConfig, int]]:
    """name -> (settings, seeds): the default row from the flags, the headline from HEADLINE."""
    default = dataclasses.replace(read_flags(ClassifierConfig, args), final=True)
    headline = ClassifierConfig(**{**HEADLINE, "seed": args.seed, "final": True})
    every = {"default": (default, args.seeds), "headline": (headline, HEADLINE_SEEDS)}
    return {name: every[name] for name in every if args.only in (None, name)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not IMDB_ARCHIVE.exists():
        print(
            f"benchmarks.train: error: {IMDB_ARCHIVE} is missing (see its README)", file=sys.stderr
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load_average()}",
        flush=True,
    )
    results = []
    for name, (config, seeds) in configurations(args).items():
        print(f"{name}: {config.to_dict()}, {seeds} seed(s)", flush=True)
        results.append(run_configuration(name, config, seeds))
    print_table(results)
    machine = {"cpus": os.cpu_count(), "threads": torch.get_num_threads()}
    summary = {
        "machine": {**machine, "torch": torch.__version__, "platform": platform.platform()},
        "configurations": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
