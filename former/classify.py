"""Train a transformer to classify IMDB reviews, or classify texts with a trained one::

python -m former.classify                          # train on IMDB (found or downloaded)
python -m former.classify --data synthetic -e 1    # the built-in generated corpus, offline
python -m former.classify --final --out runs/imdb  # report test accuracy, save the model
python -m former.classify --final --seeds 4        # four models, their probabilities averaged
python -m former.classify predict --model runs/imdb "A moving, clever film." "Dull."
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from former.classifier import (
    ClassifierConfig,
    Member,
    ensemble_accuracy,
    fit_seeds,
    load_model,
    predict,
    save_model,
)
from former.cli import UsageError, add_run_flags, as_usage_error, report_usage_errors, start_run
from former.loop import Log, format_metrics
from former.runs import RunMismatchError, holds_run

if TYPE_CHECKING:
    from former.data import ClassificationData

PROG = "python -m former.classify"
DATA_HELP = (
    "IMDB: aclImdb_v1.tar.gz, an aclImdb folder, a review,sentiment CSV, a folder holding "
    "one, or 'synthetic' (default: $FORMER_DATA_DIR, the per-user cache, then download)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a transformer classifier on IMDB (or the built-in generated corpus). "
        f"To classify texts with a saved model: {PROG} predict --model FOLDER TEXT...",
    )
    add_seeds_flag(add_run_flags(parser, ClassifierConfig, DATA_HELP)["training"])
    return parser


def add_seeds_flag(group: Any) -> None:
    """--seeds: an ensemble of runs, not a setting of any one of them."""
    group.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="train this many models, seeds -r, -r+1, ..., and report the accuracy of their "
        "averaged probabilities (ensemble_val_acc); --out saves each in seed-N/",
    )


def run_training(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1; got {args.seeds}.")
    if args.seeds > 1 and args.resume:
        raise UsageError("--resume continues one run; resume each seed-N/ folder on its own.")
    folders = member_folders(args.out, args.seed, args.seeds)
    args.out = folders[0]  # start_run checks the first member's folder
    config, device, options = start_run(ClassifierConfig, args)
    for folder in filter(None, folders[1:]):
        if holds_run(folder):
            raise UsageError(f"{folder} already holds a training run; choose another --out.")

    from former.data import ImdbFormatError, load_imdb

    with as_usage_error(FileNotFoundError, ImdbFormatError):
        data = load_imdb(
            args.data, final=config.final, vocab_size=config.vocab_size, seed=config.seed
        )
    log = options["log"]
    log(f"data: {data.source}")
    del options["checkpoint_dir"]  # one per member
    checkpoint_dirs = [None if folder is None else folder / "checkpoints" for folder in folders]
    members = []
    with as_usage_error(RunMismatchError):
        trained = fit_seeds(
            config, data, args.seeds, device=device, checkpoint_dirs=checkpoint_dirs, **options
        )
        for folder, member in zip(folders, trained, strict=True):
            keep_member(member, folder, data, log, alone=args.seeds == 1)
            members.append(member)
    if args.seeds > 1:
        accuracy = ensemble_accuracy(members, data.val)
        log(format_metrics(seeds=args.seeds, ensemble_val_acc=accuracy))
    return 0


def member_folders(out: Path | None, seed: int, seeds: int) -> list[Path | None]:
    """Where each model is saved: ``out`` for one, ``out/seed-N`` for several (None: nowhere)."""
    if out is None or seeds == 1:
        return [out] * seeds
    return [out / f"seed-{seed + i}" for i in range(seeds)]


def keep_member(
    member: Member, folder: Path | None, data: ClassificationData, log: Log, alone: bool
) -> None:
    """Save a trained model (with its config.json) in ``folder``; log its accuracy."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(member.config.to_dict(), indent=2) + "\n")
        path = save_model(folder, member.model, member.config, data.vocab, data.class_names)
        log(f"saved model to {path}")
    elif alone:
        log("not saved (pass --out FOLDER to keep the model)")
    log(format_metrics(final_val_acc=member.metrics.get("val_acc", float("nan"))))


def predict_texts(args: argparse.Namespace) -> int:
    texts = [line.rstrip("\n") for line in sys.stdin] if args.texts == ["-"] else args.texts
    try:
        loaded = [load_model(path, attention=args.attention) for path in args.model]
    except (FileNotFoundError, ValueError, ImportError) as error:
        raise UsageError(
            f"{error} (for a model trained with your own attention function, "
            "pass --attention sdpa or the function's module:function)"
        ) from None
    models = [model for model, _, _ in loaded]
    model, config, vocab = loaded[0]
    if any(other.itos != vocab.itos for _, _, other in loaded[1:]):
        raise UsageError(
            "the models were trained with different vocabularies; average only models of one "
            "run (--seeds N) or of runs with the same data and -V."
        )
    names, labelled = model.class_names, predict(models, vocab, texts, config.max_length)
    for text, (label, probability) in zip(texts, labelled, strict=True):
        name = names[label] if label < len(names) else str(label)
        print(f"label={name} probability={probability:.3f} text={json.dumps(text[:80])}")
    return 0


def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} predict", description="Classify texts with a model saved with --out."
    )
    parser.add_argument(
        "texts", nargs="+", metavar="TEXT", help="texts to classify ('-': lines of stdin)"
    )
    parser.add_argument(
        "--model",
        required=True,
        type=Path,
        action="append",
        help="model.pt or the --out folder holding it; repeated (models of one vocabulary, "
        "e.g. the seed-N/ folders of --seeds): their probabilities averaged",
    )
    parser.add_argument("--attention", help="override the saved attention function (e.g. sdpa)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["predict"]:
        parser = predict_parser()
        return report_usage_errors(PROG, lambda: predict_texts(parser.parse_args(argv[1:])))
    return report_usage_errors(PROG, lambda: run_training(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
