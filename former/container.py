"""Train a CTransformer on IMDB inside a SageMaker training container (``model.py`` runs this).

The SageMaker training-container contract, as honoured here:

- hyperparameters arrive as ``--key value`` (unknown keys are reported and ignored;
  booleans accept true/false in any case; ``--batch-size`` and ``--batch_size`` both work);
- data come from the ``training`` channel (``SM_CHANNEL_TRAINING``): the IMDB tarball,
  an extracted ``aclImdb`` folder or the ``review,sentiment`` CSV, or a folder holding
  one of them. Nothing is downloaded inside a job unless ``--download true``;
- the model (state dict, config, vocabulary in one file) goes to ``SM_MODEL_DIR``,
  metrics to ``SM_OUTPUT_DATA_DIR``, checkpoints to ``/opt/ml/checkpoints`` (synced to
  S3, so managed spot training resumes where it stopped);
- metric lines such as ``epoch=1 train_loss=0.52 val_acc=0.861`` go to stdout, where
  the launcher's metric definitions pick them up;
- on failure the reason goes to ``/opt/ml/output/failure`` (SageMaker shows it as the
  job's failure reason) and the exit status is non-zero;
- under ``torchrun`` (``WORLD_SIZE > 1``) it trains with DistributedDataParallel: nccl on
  GPUs, gloo on CPUs, every rank on its own shard of each epoch, logging and saving on
  rank 0 only.

Outside a job, paths fall back to ``./sagemaker-local/``; without ``--data`` the data
loader's own lookup applies (``$FORMER_DATA_DIR``, the per-user cache, else the
generated corpus with a notice).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
from torch import nn

from former.loop import data_parallel, main_process_first, process_rank
from former.runs import RunMismatchError
from former.training import ClassifierConfig, build_classifier, fit_classifier, save_model

PROG = "model.py"
LOCAL_ROOT = Path("sagemaker-local")
JOB_CHECKPOINT_DIR = Path("/opt/ml/checkpoints")
JOB_FAILURE_FILE = Path("/opt/ml/output/failure")
DEFAULT_ATTENTION = "my_transformer_model:multihead_attention"
CONFIG_FLAG_NAMES = {"emb": "embedding"}  # flags named differently from ClassifierConfig fields
FAILURE_REASON_LIMIT = 1000  # SageMaker shows about the first 1 KiB of the failure file


class JobInputError(Exception):
    """Something the job was given is wrong; the message says what to change."""


def in_sagemaker_job() -> bool:
    """True inside a SageMaker training container (the container sets these variables)."""
    return "SM_TRAINING_ENV" in os.environ or "SM_MODEL_DIR" in os.environ


def str2bool(value: str) -> bool:
    """``true``/``false`` in any case (also yes/no, 1/0), as SageMaker passes booleans."""
    lowered = str(value).strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


class _HyperparameterParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise JobInputError(f"bad hyperparameter: {message}. See `python {PROG} --help`.")


def default_path(variable: str, job_default: Path | None, local: Path) -> str | None:
    """``$variable``, else ``job_default`` inside a job, else ``local``."""
    if os.environ.get(variable):
        return os.environ[variable]
    if in_sagemaker_job():
        return str(job_default) if job_default else None
    return str(local)


def build_parser() -> argparse.ArgumentParser:
    """All hyperparameters and paths; model settings left unset use ClassifierConfig's defaults."""
    parser = _HyperparameterParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )

    def option(name: str, group: Any = parser, **kwargs: Any) -> None:
        # SageMaker passes hyperparameter keys verbatim: accept batch-size and batch_size.
        aliases = [f"--{name.replace('-', '_')}"] if "-" in name else []
        group.add_argument(f"--{name}", *aliases, **kwargs)

    # One flag per ClassifierConfig setting, so the two never drift apart.
    model = parser.add_argument_group("model and training (defaults: ClassifierConfig)")
    defaults = ClassifierConfig()
    for setting in dataclasses.fields(ClassifierConfig):
        if setting.name == "attention":
            continue
        default = getattr(defaults, setting.name)
        name = CONFIG_FLAG_NAMES.get(setting.name, setting.name.replace("_", "-"))
        kind = str2bool if isinstance(default, bool) else type(default)
        metavar = "true|false" if kind is str2bool else None
        option(
            name, model, dest=setting.name, type=kind, metavar=metavar, help=f"(default: {default})"
        )
        if setting.name in CONFIG_FLAG_NAMES:
            model.add_argument(
                f"--{setting.name}", dest=setting.name, type=kind, help=argparse.SUPPRESS
            )
    option(
        "attention",
        default=DEFAULT_ATTENTION,
        help="'sdpa' or 'module:function' (default: the learner's %(default)s)",
    )
    option("device", default="auto", help="auto, cuda, mps or cpu (default: %(default)s)")
    option(
        "download",
        type=str2bool,
        default=False,
        metavar="true|false",
        help="download IMDB when no data are given (default: false)",
    )
    option(
        "checkpoint-dir",
        default=str(JOB_CHECKPOINT_DIR) if in_sagemaker_job() else str(LOCAL_ROOT / "checkpoints"),
        help="resume from and write checkpoints here (default: %(default)s)",
    )
    option("checkpoint-every", type=int, default=200, help="optimizer steps between checkpoints")
    option(
        "data",
        default=os.environ.get("SM_CHANNEL_TRAINING"),
        help="IMDB tarball, aclImdb folder, CSV, a folder holding one, or 'synthetic' "
        "(default: $SM_CHANNEL_TRAINING)",
    )
    option("model-dir", default=default_path("SM_MODEL_DIR", None, LOCAL_ROOT / "model"))
    option(
        "output-data-dir",
        default=default_path("SM_OUTPUT_DATA_DIR", None, LOCAL_ROOT / "output" / "data"),
    )
    option("failure-file", default=failure_file_default())
    return parser


def failure_file_default() -> str | None:
    return default_path("SM_OUTPUT_FAILURE", JOB_FAILURE_FILE, LOCAL_ROOT / "output" / "failure")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Known options, and the unknown ones (reported, then ignored: SageMaker may add its own)."""
    return build_parser().parse_known_args(argv)


def make_config(args: argparse.Namespace) -> ClassifierConfig:
    """ClassifierConfig from the hyperparameters that were given (its defaults for the rest)."""
    given = {
        setting.name: getattr(args, setting.name)
        for setting in dataclasses.fields(ClassifierConfig)
        if getattr(args, setting.name, None) is not None
    }
    try:
        return ClassifierConfig(**given)
    except ValueError as error:
        raise JobInputError(f"bad hyperparameters: {error}") from error


# --------------------------------------------------------------------------- inputs


def check_attention(spec: str, heads: int, emb: int) -> None:
    """Import the attention function and run it once on a tiny input, before any data load.

    A typo, an unimportable learner module or an unfinished Task 1 then costs
    seconds, not a GPU job's start-up.
    """
    from former.attention import check_attention_output, resolve_attention

    # `python model.py` puts model.py's folder on sys.path (where the launcher ships the
    # learner's file); the working folder is where a notebook writes it locally.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        fn = resolve_attention(spec)
        head_size = max(emb // heads, 1)
        queries, keys, values = torch.randn(3, 2, 5, heads * head_size).unbind(0)
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


def locate_data(args: argparse.Namespace) -> str | None:
    """The data path to load; None lets the loader search (and download only if asked)."""
    if args.data:
        if args.data.strip().lower() != "synthetic" and not Path(args.data).exists():
            raise JobInputError(
                f"training data {args.data!r} does not exist. In a job, launch with "
                "--data (a local IMDB tarball/folder/CSV or an s3:// URI) so the 'training' "
                "channel is filled; locally, pass --data PATH."
            )
        return args.data
    if in_sagemaker_job() and not args.download:
        channels = os.environ.get("SM_CHANNELS", "[]")
        raise JobInputError(
            f"this job has no 'training' channel (channels: {channels}). Launch it with --data "
            "(python -m former.sagemaker launch --data ...) or let it download IMDB with "
            "--download true."
        )
    return None


def load_data(args: argparse.Namespace, config: ClassifierConfig):
    """Load and encode the data; rank 0 first, so the others read its cached encoding."""
    from former.data import ImdbFormatError, load_imdb

    path = locate_data(args)
    with main_process_first():
        try:
            return load_imdb(
                path,
                final=config.final,
                vocab_size=config.vocab_size,
                seed=config.seed,
                download=args.download,
            )
        except (ImdbFormatError, OSError, ValueError) as error:
            raise JobInputError(f"cannot read training data {path or ''}: {error}") from error


# --------------------------------------------------------------------------- the job


def run_job(args: argparse.Namespace, unknown: list[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Train as ``args`` say; every rank returns its trained model, rank 0 also the metrics."""
    config = make_config(args)
    with data_parallel(args.device) as device:
        rank, world_size = process_rank()
        log = print if rank == 0 else (lambda *_, **__: None)
        if unknown:
            log(f"{PROG}: ignoring unknown arguments {' '.join(unknown)}", file=sys.stderr)
        check_attention(config.attention, config.heads, config.emb)
        data = load_data(args, config)
        log(f"data: {data.source}")
        log(f"training on {world_size} process(es), device {device}, attention {config.attention}")
        # build_classifier seeds torch from config.seed: identical initial weights on every rank.
        model = build_classifier(config, len(data.vocab), data.num_classes)
        try:
            metrics = fit_classifier(
                model,
                data,
                config,
                device=device,
                checkpoint_dir=args.checkpoint_dir,
                checkpoint_every=args.checkpoint_every,
                log=log,
            )
            if rank == 0:
                saved = save_model(args.model_dir, model, config, data.vocab, data.class_names)
        except RunMismatchError as error:
            raise JobInputError(str(error)) from error
        if rank == 0:
            write_json(Path(args.output_data_dir) / "metrics.json", metrics)
            log(f"saved model to {saved}")
    return model, metrics


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=float) + "\n")


# --------------------------------------------------------------------------- failure


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, JobInputError) else f"{type(error).__name__}: {text}"


def write_failure(failure_file: str | None, reason: str) -> None:
    """Record why the job failed where SageMaker looks; the first writer wins (as SageMaker's)."""
    if not failure_file:
        return
    path = Path(failure_file)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(reason[:FAILURE_REASON_LIMIT] + "\n")
    except OSError as error:
        print(f"{PROG}: could not write failure file {path}: {error}", file=sys.stderr)


def failure_file_before_parsing(argv: list[str]) -> str | None:
    """Where to report a failure even when the arguments themselves do not parse."""
    for i, item in enumerate(argv):
        name, equals, value = item.partition("=")
        if name in ("--failure-file", "--failure_file"):
            if equals:
                return value
            if i + 1 < len(argv):
                return argv[i + 1]
    return failure_file_default()


def main(argv: list[str] | None = None) -> int:
    """Run the job; on failure, one line to stderr and the failure file, exit status 1."""
    sys.stdout.reconfigure(line_buffering=True)  # metric lines reach the logs as they happen
    failure_file = failure_file_before_parsing(sys.argv[1:] if argv is None else argv)
    try:
        args, unknown = parse_args(argv)
        failure_file = args.failure_file
        run_job(args, unknown)
    except JobInputError as error:
        reason = one_line(error)
    except Exception as error:  # anything else: keep the traceback for whoever debugs it
        traceback.print_exc()
        reason = one_line(error)
    else:
        return 0
    print(f"{PROG}: error: {reason}", file=sys.stderr)
    write_failure(failure_file, reason)
    return 1


if __name__ == "__main__":
    sys.exit(main())
