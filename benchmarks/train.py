"""Training benchmark: the classifier's default and headline configurations on real IMDB,
side by side: wall-clock, training tokens/s and TEST accuracy (``final=True``).

    python -m benchmarks.train                      # (make bench-train) both configurations
    python -m benchmarks.train --only default -r 2  # one configuration, another seed
    python -m benchmarks.train --only default -M 256 --bigrams 0   # the default row, changed

default: ``ClassifierConfig()``, what ``python -m former.classify`` trains (its flags change
this row). headline: HEADLINE's settings, HEADLINE_SEEDS models (seeds -r, -r+1, ...) whose
probabilities are averaged: the best accuracy found within 5 minutes on a 2-core CPU. Both
train on the full training split of ``../shared/data/aclImdb-labelled.tar.gz`` and are tested
on all 24,960 test reviews. Wall-clock counts from a warm per-user cache: data load, bigram
choice, training, final evaluation. Also measured: padding's effect on the default model's
predictions (a test review alone against the same review in a batch with the longest ones).
Targets (2 cores): default 88% within 120 s, headline 90.5% within 300 s. Prints a table and
writes ``bench-results/train.json``. Machines are shared: the load average is recorded.
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

from former.classify import add_classifier_settings
from former.data import ClassificationData, load_imdb
from former.data.batching import make_batch
from former.training import (
    ClassifierConfig,
    accuracy,
    classifier_for,
    ensemble_probabilities,
    fit_classifier,
)
from former.transformers import CTransformer

REPO_ROOT = Path(__file__).resolve().parent.parent
IMDB_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "aclImdb-labelled.tar.gz"
RESULTS = REPO_ROOT / "bench-results" / "train.json"
HEADLINE = {"max_length": 512, "bigrams": 100_000}
HEADLINE_SEEDS = 3  # 4 take about 6 minutes here (one seed: ~90 s on an idle 2-core CPU)
TARGETS = {"default": (0.88, 120.0), "headline": (0.905, 300.0)}  # (test accuracy, seconds)
PADDING_REVIEWS = 200  # test reviews checked alone and in a padded batch
CPU = torch.device("cpu")


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def load_data(config: ClassifierConfig, cache: bool = True) -> ClassificationData:
    return load_imdb(
        IMDB_ARCHIVE, final=True, vocab_size=config.vocab_size, seed=config.seed, cache=cache
    )


def padding_effect(model: CTransformer, data: ClassificationData, max_length: int) -> dict:
    """The largest change padding makes to a probability, and how many labels it flips: the
    first PADDING_REVIEWS test reviews shorter than the three longest, alone and batched
    with them."""
    split = data.val
    lengths = split.lengths().clamp(max=max_length)
    longest = torch.argsort(lengths, descending=True)[:3]
    shorter = torch.nonzero(lengths < lengths[longest[-1]]).flatten()[:PADDING_REVIEWS]
    changes, flips = [], 0
    model.eval()
    with torch.no_grad():
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
    members = [dataclasses.replace(config, seed=config.seed + i) for i in range(seeds)]
    models, runs = [], []
    for member in members:
        model = classifier_for(member, data)
        metrics = fit_classifier(model, data, member, device=CPU, progress=False, log=print)
        models.append(model)
        runs.append({"seed": member.seed, "test_acc": metrics["val_acc"], **metrics})
        print(f"{name}: seed {member.seed} test_acc={metrics['val_acc']:.4f}", flush=True)
    if seeds > 1:
        batch_size = max(config.batch_size, 256)
        probabilities = ensemble_probabilities(models, data.val, batch_size, config.max_length, CPU)
        test_acc = accuracy(probabilities, data.val)
    else:
        test_acc = runs[0]["test_acc"]
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
        "padding": padding_effect(models[0], data, config.max_length),
    }


def print_table(results: list[dict]) -> None:
    header = ("configuration", "seeds", "wall s", "tokens/s", "test acc", "each seed", "target")
    rows = [header]
    for r in results:
        target = f"{r['target']['test_acc']:.1%} in {r['target']['seconds']:.0f} s"
        rows.append(
            (
                r["name"],
                str(r["seeds"]) + (" (averaged)" if r["seeds"] > 1 else ""),
                f"{r['wall_s']:.0f}",
                f"{r['tokens_per_s']:,.0f}",
                f"{r['test_acc']:.4f}",
                " ".join(f"{run['test_acc']:.4f}" for run in r["runs"]),
                f"{target}: {'met' if r['target_met'] else 'NOT met'}",
            )
        )
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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_classifier_settings(parser)
    parser.add_argument("--only", choices=sorted(TARGETS), help="run one configuration")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    return parser.parse_args(argv)


def configurations(args: argparse.Namespace) -> dict[str, tuple[ClassifierConfig, int]]:
    """name -> (settings, seeds): the default row from the flags, the headline from HEADLINE."""
    flags = {k: v for k, v in vars(args).items() if k in ClassifierConfig.__dataclass_fields__}
    default = ClassifierConfig(**{**flags, "final": True})
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
