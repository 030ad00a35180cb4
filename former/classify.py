"""Train a transformer to classify IMDB reviews, or classify texts with a trained one::

python -m former.classify                          # train on IMDB (found or downloaded)
python -m former.classify --data synthetic -e 1    # the built-in generated corpus, offline
python -m former.classify --final --out runs/imdb  # report test accuracy, save the model
python -m former.classify predict --model runs/imdb "A moving, clever film." "Dull."
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

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
from former.runs import RunMismatchError
from former.training import (
    ClassifierConfig,
    build_classifier,
    fit_classifier,
    load_model,
    predict,
    save_model,
)

PROG = "python -m former.classify"
DEFAULTS = ClassifierConfig()
MODEL_FLAGS: Flags = (
    (("-M", "--max"), "reviews are cut to this many tokens", {"dest": "max_length", "type": int}),
    (("-V", "--vocab-size"), "vocabulary size, <pad> and <unk> included", {"type": int}),
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
PREDICT_FLAGS: Flags = (
    (("texts",), "texts to classify ('-': lines of stdin)", {"nargs": "+", "metavar": "TEXT"}),
    (("--model",), "model.pt or the --out folder holding it", {"required": True, "type": Path}),
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
    config, device, options = start_run(ClassifierConfig, args)

    from former.data import ImdbFormatError, load_imdb

    with as_usage_error(FileNotFoundError, ImdbFormatError):
        data = load_imdb(
            args.data, final=config.final, vocab_size=config.vocab_size, seed=config.seed
        )
    log = options["log"]
    log(f"data: {data.source}")
    model = build_classifier(config, len(data.vocab), data.num_classes)
    parameters = sum(p.numel() for p in model.parameters())
    log(f"model: {parameters:,} parameters, attention={config.attention}, device={device}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    with as_usage_error(RunMismatchError):
        metrics = fit_classifier(model, data, config, device=device, **options)
    if args.out is not None:
        path = save_model(args.out, model, config, data.vocab, class_names=data.class_names)
        log(f"saved model to {path}")
    else:
        log("not saved (pass --out FOLDER to keep the model)")
    log(format_metrics(final_val_acc=metrics.get("val_acc", float("nan"))))
    return 0


def predict_texts(args: argparse.Namespace) -> int:
    texts = [line.rstrip("\n") for line in sys.stdin] if args.texts == ["-"] else args.texts
    try:
        model, config, vocab = load_model(args.model, attention=args.attention)
    except (FileNotFoundError, ValueError, ImportError) as error:
        raise UsageError(
            f"{error} (for a model trained with your own attention function, "
            "pass --attention sdpa or the function's module:function)"
        ) from None
    names = model.class_names
    for text, (label, probability) in zip(
        texts, predict(model, vocab, texts, config.max_length), strict=True
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
