"""Train a transformer to classify IMDB reviews, or classify texts with a trained one.

    python -m former.classify                          # train on IMDB (found or downloaded)
    python -m former.classify --data synthetic -e 1    # the built-in generated corpus, offline
    python -m former.classify --final --out runs/imdb  # report test accuracy, save the model
    python -m former.classify predict --model runs/imdb "A moving, clever film." "Dull."

Training prints one metric line per evaluation on stdout, e.g.
``epoch=2 step=782 train_loss=0.41 val_acc=0.873 ...``, and a progress bar on
stderr when that is a terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from former.cli import (
    UsageError,
    add_data_and_output_arguments,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a transformer classifier on IMDB (or the built-in generated corpus). "
        f"To classify texts with a saved model: {PROG} predict --model FOLDER TEXT...",
    )

    model, training = add_shared_settings(parser, DEFAULTS)

    def add(group, *flags: str, help: str, **kwargs) -> None:
        add_setting(group, DEFAULTS, *flags, help=help, **kwargs)

    add(
        model,
        "-M",
        "--max",
        dest="max_length",
        type=int,
        help="reviews are cut to this many tokens",
    )
    add(model, "-V", "--vocab-size", type=int, help="vocabulary size, <pad> and <unk> included")
    pooling = model.add_mutually_exclusive_group()
    add(pooling, "--max-pool", action="store_true", help="max-pool over positions, not mean-pool")
    pooling.add_argument("--mean-pool", dest="max_pool", action="store_false", help="mean-pool")
    add(training, "-e", "--num-epochs", dest="epochs", type=int, help="epochs")
    add(training, "-f", "--final", action="store_true", help="validate on the test split")
    add(training, "--evals-per-epoch", type=int, help="evaluations per epoch")
    add(
        training,
        "--eval-subset",
        type=int,
        help="validation examples per evaluation during training (0: all); the last uses all",
    )
    add_data_and_output_arguments(
        parser,
        "IMDB: aclImdb_v1.tar.gz, an aclImdb folder, a review,sentiment CSV, a folder holding "
        "one, or 'synthetic' (default: $FORMER_DATA_DIR, the per-user cache, then download)",
        checkpoint_every=200,
    )
    add_runtime_arguments(parser)
    return parser


def build_predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} predict",
        description="Classify texts with a model saved by training with --out.",
    )
    parser.add_argument(
        "texts",
        nargs="+",
        metavar="TEXT",
        help="texts to classify ('-' reads one per line from stdin)",
    )
    parser.add_argument(
        "--model", required=True, type=Path, help="model.pt or the --out folder holding it"
    )
    parser.add_argument(
        "--attention", default=None, help="override the saved attention function (e.g. sdpa)"
    )
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
        metrics = fit_classifier(
            model,
            data,
            config,
            device=device,
            **loop_options(args, log, tensorboard),
        )
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
    for text, (label, probability) in zip(
        texts, predict(model, vocab, texts, config.max_length), strict=True
    ):
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
