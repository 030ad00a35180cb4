"""Train a transformer to classify IMDB reviews, or classify texts with a trained one::

    python -m former.classify                          # train on IMDB (found or downloaded)
    python -m former.classify --data synthetic -e 1    # the built-in generated corpus, offline
    python -m former.classify --final --out runs/imdb  # report test accuracy, save the model
    python -m former.classify predict --model runs/imdb "A moving, clever film." "Dull."

Training prints a metric line per evaluation on stdout, a progress bar on a terminal.
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
    add_data_and_output_arguments,
    add_flags,
    add_runtime_arguments,
    add_setting,
    add_shared_settings,
    as_usage_error,
    loop_options,
    metric_logger,
    report_usage_errors,
    start_run,
    tensorboard_writer,
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
    (("-f", "--final"), "validate on the test split", {"action": "store_true"}),
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


def add_classifier_settings(parser: argparse.ArgumentParser) -> None:
    """A flag for every :class:`ClassifierConfig` setting, its default shown."""
    model, training = add_shared_settings(parser, DEFAULTS)
    add_flags(model, MODEL_FLAGS, DEFAULTS)
    pooling = model.add_mutually_exclusive_group()
    add_setting(pooling, DEFAULTS, "--max-pool", action="store_true", help="max-pool positions")
    pooling.add_argument("--mean-pool", dest="max_pool", action="store_false", help="mean-pool")
    add_flags(training, TRAINING_FLAGS, DEFAULTS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a transformer classifier on IMDB (or the built-in generated corpus). "
        f"To classify texts with a saved model: {PROG} predict --model FOLDER TEXT...",
    )
    add_classifier_settings(parser)
    add_data_and_output_arguments(
        parser,
        "IMDB: aclImdb_v1.tar.gz, an aclImdb folder, a review,sentiment CSV, a folder holding "
        "one, or 'synthetic' (default: $FORMER_DATA_DIR, the per-user cache, then download)",
        checkpoint_every=200,
    )
    add_runtime_arguments(parser)
    return parser


def build_predict_parser() -> argparse.ArgumentParser:
    description = "Classify texts with a model saved by training with --out."
    parser = argparse.ArgumentParser(prog=f"{PROG} predict", description=description)
    add_flags(parser, PREDICT_FLAGS)
    return parser


def train(args: argparse.Namespace) -> int:
    config, device = start_run(ClassifierConfig, args)

    from former.data import ImdbFormatError, load_imdb

    with as_usage_error(FileNotFoundError, ImdbFormatError):
        data = load_imdb(
            args.data, final=config.final, vocab_size=config.vocab_size, seed=config.seed
        )
    log = metric_logger()
    log(f"data: {data.source}")
    model = build_classifier(config, len(data.vocab), data.num_classes)
    parameters = sum(p.numel() for p in model.parameters())
    log(f"model: {parameters:,} parameters, attention={config.attention}, device={device}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    with tensorboard_writer(args.tb_dir) as tensorboard, as_usage_error(RunMismatchError):
        options = loop_options(args, log, tensorboard)
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
    names = getattr(model, "class_names", ()) or ()
    results = predict(model, vocab, texts, config.max_length)
    for text, (label, probability) in zip(texts, results, strict=True):
        name = names[label] if label < len(names) else str(label)
        print(
            f"label={name} probability={probability:.3f} text={json.dumps(text[:80])}", flush=True
        )
    return 0


@report_usage_errors(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["predict"]:
        return predict_texts(build_predict_parser().parse_args(argv[1:]))
    return train(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
