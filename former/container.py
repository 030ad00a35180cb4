"""Train a CTransformer on IMDB inside a SageMaker training container (``model.py`` runs this).

Hyperparameters come as ``--key value`` (unknown ones reported and ignored), data from the
``training`` channel (nothing downloaded unless ``--download true``); checkpoints in
``/opt/ml/checkpoints`` let spot jobs resume. A failure is one line in the failure file and exit
status 1. Under torchrun, rank 0 logs and saves. Outside a job, paths are under
``./sagemaker-local/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
from torch import nn

from former.classifier import ClassifierConfig, classifier_for, fit_classifier, save_model
from former.devices import data_parallel, main_process_first, process_rank
from former.runs import RunMismatchError
from former.settings import JOB, RunOptions, add_flags, read_flags

PROG = "model.py"
DEFAULT_ATTENTION = "my_transformer_model:multihead_attention"
# Where a job keeps things unless told: (option, path under /opt/ml, variable that overrides it)
JOB_PATHS = (
    ("checkpoint_dir", "checkpoints", ""),
    ("model_dir", "model", "SM_MODEL_DIR"),
    ("output_data_dir", "output/data", "SM_OUTPUT_DATA_DIR"),
    ("failure_file", "output/failure", "SM_OUTPUT_FAILURE"),
)
FAILURE_REASON_LIMIT = 1000  # SageMaker shows about the first 1 KiB of the failure file


class JobInputError(Exception):
    """Something the job was given is wrong; the message says what to change."""


def in_sagemaker_job() -> bool:
    """True inside a SageMaker training container (the container sets these variables)."""
    return "SM_TRAINING_ENV" in os.environ or "SM_MODEL_DIR" in os.environ


class HyperparameterParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise JobInputError(f"bad hyperparameter: {message}. See `python {PROG} --help`.")


def default_path(relative: str, variable: str = "") -> str:
    """``$variable``, else ``<relative>`` under /opt/ml in a job, else under sagemaker-local/."""
    root = "/opt/ml" if in_sagemaker_job() else "sagemaker-local"
    return os.environ.get(variable) or f"{root}/{relative}"


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The options (a flag for every ClassifierConfig setting and the job's
    :class:`RunOptions`), and the unknown ones: SageMaker may add its own."""
    parser = HyperparameterParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_flags(parser, ClassifierConfig, JOB, attention=DEFAULT_ATTENTION)
    run = add_flags(parser, RunOptions, JOB)["data and run"]
    channel = os.environ.get("SM_CHANNEL_TRAINING")
    run.add_argument(
        "--data", default=channel, help="IMDB tarball, aclImdb folder or CSV, or 'synthetic'"
    )
    args, unknown = parser.parse_known_args(argv)
    for name, relative, variable in JOB_PATHS:
        setattr(args, name, getattr(args, name) or default_path(relative, variable))
    return args, unknown


def check_attention(spec: str, heads: int, emb: int) -> None:
    """Import the attention function and run it on a tiny input: a typo or an unfinished Task 1
    costs seconds, not a GPU job's start-up."""
    from former.attention import check_attention_output, resolve_attention

    # `python model.py` puts model.py's folder on sys.path (where the launcher ships the
    # learner's file); the working folder is where a notebook writes it locally.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        fn = resolve_attention(spec)
        queries, keys, values = torch.randn(3, 2, 5, heads * max(emb // heads, 1)).unbind(0)
        check_attention_output(fn(queries, keys, values, heads), queries, heads, fn)
    except NotImplementedError as error:
        raise JobInputError(
            f"attention {spec!r} is not implemented yet ({error}). Finish Task 1 and re-run the "
            "cell that writes my_transformer_model.py, or train with --attention sdpa."
        ) from error
    except (ImportError, ValueError, TypeError) as error:
        raise JobInputError(f"attention {spec!r}: {error}") from error
    except Exception as error:  # the learner's module failed while importing or running
        raise JobInputError(
            f"attention {spec!r} failed on a tiny test input: {type(error).__name__}: {error}. "
            "Fix the function (the notebook's checks show where) or train with --attention sdpa."
        ) from error


def load_data(args: argparse.Namespace, config: ClassifierConfig):
    """Load and encode the data; rank 0 of each host first, so the others read its cache."""
    from former.data import ImdbFormatError, load_imdb

    if args.data and args.data.strip().lower() != "synthetic" and not Path(args.data).exists():
        raise JobInputError(
            f"training data {args.data!r} does not exist. In a job, launch with "
            "--data (a local IMDB tarball/folder/CSV or an s3:// URI) so the 'training' "
            "channel is filled; locally, pass --data PATH."
        )
    if not args.data and in_sagemaker_job() and not args.download:
        raise JobInputError(
            f"this job has no 'training' channel (channels: {os.environ.get('SM_CHANNELS', '[]')}"
            "). Launch it with --data (python -m former.sagemaker launch --data ...) or let it "
            "download IMDB with --download true."
        )
    settings = {"final": config.final, "vocab_size": config.vocab_size, "seed": config.seed}
    with main_process_first():
        try:
            return load_imdb(args.data or None, download=args.download, **settings)
        except (ImdbFormatError, OSError, ValueError) as error:
            raise JobInputError(f"cannot read training data {args.data or ''}: {error}") from error


def run_job(args: argparse.Namespace, unknown: list[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Train as ``args`` say; every rank returns its trained model, rank 0 also the metrics."""
    try:
        config = read_flags(ClassifierConfig, args)
    except ValueError as error:
        raise JobInputError(f"bad hyperparameters: {error}") from error
    with data_parallel(args.device) as device:
        rank, world_size = process_rank()
        log = print if rank == 0 else (lambda *_, **__: None)
        if unknown:
            log(f"{PROG}: ignoring unknown arguments {' '.join(unknown)}", file=sys.stderr)
        check_attention(config.attention, config.heads, config.emb)
        data = load_data(args, config)
        log(f"data: {data.source}")
        log(f"training on {world_size} process(es), device {device}, attention {config.attention}")
        model = classifier_for(config, data)  # seeded by config.seed: the same on every rank
        checkpoints = {name: vars(args)[name] for name in ("checkpoint_dir", "checkpoint_every")}
        try:
            metrics = fit_classifier(model, data, config, device=device, log=log, **checkpoints)
            if rank == 0:
                saved = save_model(args.model_dir, model, config, data.vocab, data.class_names)
                log(f"saved model to {saved}")
                metrics_file = Path(args.output_data_dir) / "metrics.json"
                metrics_file.parent.mkdir(parents=True, exist_ok=True)
                metrics_file.write_text(json.dumps(metrics, indent=2, default=float) + "\n")
        except RunMismatchError as error:
            raise JobInputError(str(error)) from error
    return model, metrics


def write_failure(failure_file: str, reason: str) -> None:
    """Record why the job failed where SageMaker looks; the first writer wins (as SageMaker's)."""
    path = Path(failure_file)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(reason[:FAILURE_REASON_LIMIT] + "\n")
    except OSError as error:
        print(f"{PROG}: could not write failure file {path}: {error}", file=sys.stderr)


def failure_file_before_parsing(argv: list[str]) -> str:
    """Where to report a failure even when the arguments themselves do not parse."""
    for i, item in enumerate(argv):
        name, equals, value = item.partition("=")
        if name in ("--failure-file", "--failure_file") and (equals or i + 1 < len(argv)):
            return value if equals else argv[i + 1]
    return default_path("output/failure", "SM_OUTPUT_FAILURE")


def main(argv: list[str] | None = None) -> int:
    """Run the job; on failure, one line to stderr and the failure file, exit status 1."""
    sys.stdout.reconfigure(line_buffering=True)  # metric lines reach the logs as they happen
    failure_file = failure_file_before_parsing(sys.argv[1:] if argv is None else argv)
    try:
        args, unknown = parse_args(argv)
        failure_file = args.failure_file
        run_job(args, unknown)
        return 0
    except JobInputError as error:
        reason = " ".join(str(error).split())
    except Exception as error:  # keep the traceback for whoever debugs it
        traceback.print_exc()
        reason = f"{type(error).__name__}: {' '.join(str(error).split())}"
    print(f"{PROG}: error: {reason}", file=sys.stderr)
    write_failure(failure_file, reason)
    return 1
