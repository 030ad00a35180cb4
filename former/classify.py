"""Train a transformer to classify IMDB reviews, or classify texts with a trained one::

python -m former.classify                          # train on IMDB (found or downloaded)
python -m former.classify --data synthetic -e 1    # the built-in generated corpus, offline
python -m former.classify --final --out runs/imdb  # report test accuracy, save the model
python -m former.classify --final --seeds 4        # four models, their probabilities averaged
python -m former.classify predict --model runs/imdb "A moving, clever film." "Dull."
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from former.cli import (
    Flags,
    UsageError,
    add_flags,
    add_run_flags,
    add_settings,
    as_usage_error,
    report_usage_errors,
    start_run,
)
from former.loop import format_metrics
from former.runs import RunMismatchError, holds_run
from former.training import (
    ClassifierConfig,
    accuracy,
    classifier_for,
    ensemble_probabilities,
    fit_classifier,
    load_model,
    predict,
    save_model,
)

if TYPE_CHECKING:
    import torch

    from former.data import ClassificationData
    from former.transformers import CTransformer

PROG = "python -m former.classify"
DEFAULTS = ClassifierConfig()
MODEL_FLAGS: Flags = (
    (("-M", "--max"), "reviews are cut to this many tokens", {"dest": "max_length", "type": int}),
    (("-V", "--vocab-size"), "vocabulary size, <pad> and <unk> included", {"type": int}),
    (
        ("--bigrams",),
        "embed the K most frequent word pairs of the training reviews, added to their second "
        "word's embedding (0: none)",
        {"type": int, "metavar": "K"},
    ),
)
TRAINING_FLAGS: Flags = (
    (("-e", "--num-epochs"), "epochs", {"dest": "epochs", "type": int}),
    (("--evals-per-epoch",), "evaluations per epoch", {"type": int}),
    (
        ("--eval-subset",),
        "validation examples per evaluation (0, and the last: all)",
        {"type": int},
    ),
)
ENSEMBLE_FLAGS: Flags = (
    (
        ("--seeds",),
        "train this many models, seeds -r, -r+1, ..., and report the accuracy of their "
        "averaged probabilities (ensemble_val_acc); --out saves each in seed-N/",
        {"type": int, "default": 1, "metavar": "N"},
    ),
)
PREDICT_FLAGS: Flags = (
    (("texts",), "texts to classify ('-': lines of stdin)", {"nargs": "+", "metavar": "TEXT"}),
    (
        ("--model",),
        "model.pt or the --out folder holding it; repeated (models of one vocabulary, "
        "e.g. the seed-N/ folders of --seeds): their probabilities averaged",
        {"required": True, "type": Path, "action": "append"},
    ),
    (("--attention",), "override the saved attention function (e.g. sdpa)", {}),
)
DATA_HELP = (
    "IMDB: aclImdb_v1.tar.gz, an aclImdb folder, a review,sentiment CSV, a folder holding "
    "one, or 'synthetic' (default: $FORMER_DATA_DIR, the per-user cache, then download)"
)


def add_classifier_settings(parser: argparse.ArgumentParser) -> None:
    """A flag for every :class:`ClassifierConfig` setting, its default shown."""
    groups = add_settings(parser, DEFAULTS, model=MODEL_FLAGS, training=TRAINING_FLAGS)
    pooling = groups["model"].add_mutually_exclusive_group()
    add_flags(
        pooling, ((("--max-pool",), "max-pool positions", {"action": "store_true"}),), DEFAULTS
    )
    pooling.add_argument("--mean-pool", dest="max_pool", action="store_false", help="mean-pool")
    add_flags(groups["training"], ENSEMBLE_FLAGS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a transformer classifier on IMDB (or the built-in generated corpus). "
        f"To classify texts with a saved model: {PROG} predict --model FOLDER TEXT...",
    )
    add_classifier_settings(parser)
    add_run_flags(parser, DATA_HELP)
    return parser


def run_training(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1; got {args.seeds}.")
    if args.seeds > 1 and args.resume:
        raise UsageError("--resume continues one run; resume each seed-N/ folder on its own.")
    out = args.out
    if args.seeds > 1 and out is not None:
        args.out = out / f"seed-{args.seed}"  # start_run checks the first member's folder
    config, device, options = start_run(ClassifierConfig, args)

    from former.data import ImdbFormatError, load_imdb

    with as_usage_error(FileNotFoundError, ImdbFormatError):
        data = load_imdb(
            args.data, final=config.final, vocab_size=config.vocab_size, seed=config.seed
        )
    log = options["log"]
    log(f"data: {data.source}")
    members = [dataclasses.replace(config, seed=config.seed + i) for i in range(args.seeds)]
    models = []
    for member in members:
        folder = out if args.seeds == 1 or out is None else out / f"seed-{member.seed}"
        if folder is not None and args.seeds > 1:
            options["checkpoint_dir"] = folder / "checkpoints"
        models.append(train_one(member, data, device, options, folder, args.seeds > 1))
    if args.seeds > 1:
        probabilities = ensemble_probabilities(
            models, data.val, max(config.batch_size, 256), config.max_length, device
        )
        log(format_metrics(seeds=args.seeds, ensemble_val_acc=accuracy(probabilities, data.val)))
    return 0


def train_one(
    config: ClassifierConfig,
    data: ClassificationData,
    device: torch.device,
    options: dict[str, Any],
    out: Path | None,
    member: bool,
) -> CTransformer:
    """Train (and with ``out`` save) one model of ``config`` on ``data``; logs its accuracy."""
    log = options["log"]
    model = classifier_for(config, data)
    parameters = sum(p.numel() for p in model.parameters())
    log(
        f"model: {parameters:,} parameters, attention={config.attention}, "
        f"bigrams={model.num_bigrams:,}, seed={config.seed}, device={device}"
    )
    if out is not None:
        if member and holds_run(out):
            raise UsageError(f"{out} already holds a training run; choose another --out.")
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    with as_usage_error(RunMismatchError):
        metrics = fit_classifier(model, data, config, device=device, **options)
    if out is not None:
        path = save_model(out, model, config, data.vocab, class_names=data.class_names)
        log(f"saved model to {path}")
    elif not member:
        log("not saved (pass --out FOLDER to keep the model)")
    log(format_metrics(final_val_acc=metrics.get("val_acc", float("nan"))))
    return model


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
    names = model.class_names
    for text, (label, probability) in zip(
        texts, predict(models, vocab, texts, config.max_length), strict=True
    ):
        name = names[label] if label < len(names) else str(label)
        print(f"label={name} probability={probability:.3f} text={json.dumps(text[:80])}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["predict"]:
        parser = argparse.ArgumentParser(
            prog=f"{PROG} predict", description="Classify texts with a model saved with --out."
        )
        add_flags(parser, PREDICT_FLAGS)
        return report_usage_errors(PROG, lambda: predict_texts(parser.parse_args(argv[1:])))
    return report_usage_errors(PROG, lambda: run_training(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
