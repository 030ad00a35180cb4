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

import torch

from former.attention import resolve_attention
from former.training import (
    LR_DECAYS,
    MODEL_FILE,
    ClassifierConfig,
    RunMismatchError,
    UsageError,
    add_runtime_arguments,
    build_classifier,
    check_same_run,
    checkpoint_paths,
    fit_classifier,
    format_metrics,
    load_model,
    metric_logger,
    open_tensorboard,
    pick_device,
    predict,
    report_usage_errors,
    save_model,
    set_threads,
)

PROG = "python -m former.classify"
DEFAULTS = ClassifierConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a transformer classifier on IMDB (or the built-in generated corpus). "
        f"To classify texts with a saved model: {PROG} predict --model FOLDER TEXT...",
    )

    def add(group, *flags: str, help: str, **kwargs) -> None:
        dest = kwargs.get("dest") or flags[-1].lstrip("-").replace("-", "_")
        default = getattr(DEFAULTS, dest, None)
        kwargs.setdefault("default", default)
        group.add_argument(*flags, help=f"{help} (default: {default})", **kwargs)

    model = parser.add_argument_group("model")
    add(model, "-E", "--embedding", dest="emb", type=int, help="embedding size")
    add(model, "-H", "--heads", type=int, help="attention heads")
    add(model, "-d", "--depth", type=int, help="transformer blocks")
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
    pooling.add_argument(
        "--max-pool",
        dest="max_pool",
        action="store_true",
        default=DEFAULTS.max_pool,
        help="max-pool over positions (default: mean pooling)",
    )
    pooling.add_argument(
        "--mean-pool",
        dest="max_pool",
        action="store_false",
        help="mean-pool over positions (the default)",
    )
    add(model, "--dropout", type=float, help="dropout rate")
    add(model, "--wide", action="store_true", help="wide attention: every head sees all of emb")
    add(
        model,
        "--attention",
        help="the attention function: 'sdpa' (PyTorch's fused kernel) "
        "or your own as 'module:function', e.g. my_transformer_model:multihead_attention",
    )
    training = parser.add_argument_group("training")
    add(training, "-e", "--num-epochs", dest="epochs", type=int, help="epochs")
    add(training, "-b", "--batch-size", type=int, help="reviews per batch")
    add(training, "-l", "--learn-rate", dest="lr", type=float, help="peak learning rate (AdamW)")
    add(training, "--lr-warmup", type=int, help="linear warm-up length, in training examples")
    add(
        training,
        "--lr-decay",
        choices=LR_DECAYS,
        help="decay after the warm-up, to zero at the end",
    )
    add(training, "--weight-decay", type=float, help="AdamW weight decay (weight matrices only)")
    add(training, "--gradient-clipping", type=float, help="clip the gradient norm to this (0: off)")
    add(
        training,
        "-r",
        "--random-seed",
        dest="seed",
        type=int,
        help="seed for weights, split and order",
    )
    add(
        training,
        "-f",
        "--final",
        action="store_true",
        help="validate on the test split, not on 20%% of train",
    )
    add(training, "--evals-per-epoch", type=int, help="evaluations per epoch")
    add(
        training,
        "--eval-subset",
        type=int,
        help="validation examples per evaluation during training (0: all); the last uses all",
    )
    data = parser.add_argument_group("data and output")
    data.add_argument(
        "--data",
        default=None,
        help="IMDB: aclImdb_v1.tar.gz, an aclImdb folder, a review,sentiment CSV, a folder holding "
        "one, or 'synthetic' (default: $FORMER_DATA_DIR, the per-user cache, then download)",
    )
    data.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for checkpoints and the trained model.pt (default: not saved)",
    )
    data.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    data.add_argument(
        "--checkpoint-every",
        type=int,
        default=200,
        help="optimizer steps between checkpoints, 0: epoch ends only (default: 200)",
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


def config_from_args(args: argparse.Namespace) -> ClassifierConfig:
    names = [name for name in ClassifierConfig.__dataclass_fields__ if hasattr(args, name)]
    try:
        return ClassifierConfig(**{name: getattr(args, name) for name in names})
    except ValueError as error:
        raise UsageError(str(error)) from None


def check_output_folder(out: Path, config: ClassifierConfig, resume: bool) -> None:
    """Refuse to mix runs: an --out holding another run is an error, never overwritten."""
    holds_run = bool(checkpoint_paths(out / "checkpoints")) or (out / MODEL_FILE).exists()
    if holds_run and not resume:
        raise UsageError(
            f"{out} already holds a training run; pass --resume to continue it, or choose "
            "another --out."
        )
    if (out / MODEL_FILE).exists():
        saved = torch.load(out / MODEL_FILE, map_location="cpu", weights_only=True)
        try:
            check_same_run(saved.get("config", {}), config, out / MODEL_FILE)
        except RunMismatchError as error:
            raise UsageError(str(error)) from None


def train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    try:
        resolve_attention(config.attention)
    except (ValueError, ImportError, TypeError) as error:
        raise UsageError(str(error)) from None
    if args.out is not None:
        check_output_folder(args.out, config, args.resume)
    elif args.resume:
        raise UsageError("--resume needs --out, the folder of the run to continue.")
    device = pick_device_or_fail(args.device)
    set_threads(args.threads)

    from former.data import ImdbFormatError, load_imdb

    try:
        data = load_imdb(
            args.data, final=config.final, vocab_size=config.vocab_size, seed=config.seed
        )
    except (FileNotFoundError, ImdbFormatError) as error:
        raise UsageError(str(error)) from None
    log = metric_logger()
    log(f"data: {data.source}")
    model = build_classifier(config, len(data.vocab), data.num_classes)
    parameters = sum(p.numel() for p in model.parameters())
    log(f"model: {parameters:,} parameters, attention={config.attention}, device={device}")

    checkpoints = args.out / "checkpoints" if args.out is not None else None
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    tensorboard = open_tensorboard(args.tb_dir)
    try:
        metrics = fit_classifier(
            model,
            data,
            config,
            device=device,
            checkpoint_dir=checkpoints,
            checkpoint_every=args.checkpoint_every,
            log=log,
            progress=False if args.no_progress else None,
            tensorboard=tensorboard,
        )
    except RunMismatchError as error:
        raise UsageError(str(error)) from None
    finally:
        if tensorboard is not None:
            tensorboard.close()
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


def pick_device_or_fail(name: str) -> torch.device:
    try:
        return pick_device(name)
    except ValueError as error:
        raise UsageError(str(error)) from None


@report_usage_errors(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["predict"]:
        return predict_texts(build_predict_parser().parse_args(argv[1:]))
    return train(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
