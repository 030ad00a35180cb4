"""Train a CTransformer on IMDB sentiment: the SageMaker training entry point, also runnable locally.

    python model.py --epochs 1 --attention sdpa --data ../shared/data/imdb_sample.csv
    torchrun --nproc_per_node=2 model.py --attention sdpa          # data parallel, one machine
    python -m former.sagemaker launch --data aclImdb_v1.tar.gz     # as a SageMaker training job

The SageMaker training-container contract, as this script honours it:

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
import hashlib
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

LOCAL_ROOT = Path("sagemaker-local")
JOB_CHECKPOINT_DIR = Path("/opt/ml/checkpoints")
JOB_FAILURE_FILE = Path("/opt/ml/output/failure")
DEFAULT_ATTENTION = "my_transformer_model:multihead_attention"
CONFIG_FLAG_NAMES = {"emb": "embedding"}  # flags named differently from ClassifierConfig fields
# Set to a folder to make every rank write a digest of its parameters there after training
# (how the tests check that data-parallel replicas stay identical).
PARAM_DIGEST_VARIABLE = "FORMER_PARAM_DIGEST_DIR"
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
        raise JobInputError(f"bad hyperparameter: {message}. See `python model.py --help`.")


def _default_path(variable: str, job_default: str | Path | None, local: Path) -> str | None:
    if os.environ.get(variable):
        return os.environ[variable]
    if in_sagemaker_job():
        return str(job_default) if job_default else None
    return str(local)


def build_parser() -> argparse.ArgumentParser:
    """All hyperparameters and paths; model settings left unset use ClassifierConfig's defaults."""
    parser = _HyperparameterParser(
        prog="model.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )

    def option(name: str, group: Any = parser, **kwargs: Any) -> None:
        # SageMaker passes hyperparameter keys verbatim: accept batch-size and batch_size.
        aliases = [f"--{name.replace('-', '_')}"] if "-" in name else []
        group.add_argument(f"--{name}", *aliases, **kwargs)

    # One flag per ClassifierConfig setting, so the two never drift apart; unset flags keep
    # ClassifierConfig's defaults.
    from former.training import ClassifierConfig

    model = parser.add_argument_group("model and training (defaults: ClassifierConfig)")
    defaults = ClassifierConfig()
    for setting in dataclasses.fields(ClassifierConfig):
        if setting.name == "attention":
            continue
        default = getattr(defaults, setting.name)
        name = CONFIG_FLAG_NAMES.get(setting.name, setting.name.replace("_", "-"))
        kind = str2bool if isinstance(default, bool) else type(default)
        option(
            name,
            model,
            dest=setting.name,
            type=kind,
            default=None,
            metavar="true|false" if kind is str2bool else None,
            help=f"(default: {default})",
        )
        if name != setting.name.replace("_", "-"):
            model.add_argument(
                f"--{setting.name}",
                dest=setting.name,
                type=kind,
                default=None,
                help=argparse.SUPPRESS,
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
    option("model-dir", default=_default_path("SM_MODEL_DIR", None, LOCAL_ROOT / "model"))
    option(
        "output-data-dir",
        default=_default_path("SM_OUTPUT_DATA_DIR", None, LOCAL_ROOT / "output" / "data"),
    )
    option(
        "failure-file",
        default=_default_path(
            "SM_OUTPUT_FAILURE", JOB_FAILURE_FILE, LOCAL_ROOT / "output" / "failure"
        ),
    )
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Known options, and the unknown ones (reported, then ignored: SageMaker may add its own)."""
    return build_parser().parse_known_args(argv)


# --------------------------------------------------------------------------- distributed


@dataclass
class Replica:
    """Where this process sits in a (possibly single-process) data-parallel job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start_replica(device_name: str) -> Replica:
    """Join the process group when torchrun started several processes; pick this one's device."""
    from former.training import pick_device

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if world_size > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            # MPS has no collective backend; data-parallel runs off a GPU use gloo on CPU.
            device = torch.device("cpu")
            backend = "gloo"
        dist.init_process_group(backend=backend)
    return Replica(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def stop_replica(replica: Replica, *, finished: bool) -> None:
    """Leave the process group; wait for the other ranks only after a run that finished."""
    if replica.world_size > 1 and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


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


def load_data(args: argparse.Namespace, replica: Replica, vocab_size: int, seed: int, final: bool):
    """Load and encode the data; rank 0 first, so the others read its cached encoding."""
    from former.data import ImdbFormatError, load_imdb

    path = locate_data(args)

    def load():
        try:
            return load_imdb(
                path, final=final, vocab_size=vocab_size, seed=seed, download=args.download
            )
        except (ImdbFormatError, OSError, ValueError) as error:
            raise JobInputError(f"cannot read training data {path or ''}: {error}") from error

    if replica.world_size > 1 and not replica.is_main:
        dist.barrier()
        data = load()
    else:
        data = load()
        if replica.world_size > 1:
            dist.barrier()
    return data


# --------------------------------------------------------------------------- training


def make_config(args: argparse.Namespace):
    """ClassifierConfig from the hyperparameters that were given (its defaults for the rest)."""
    from former.training import ClassifierConfig

    given = {
        setting.name: getattr(args, setting.name)
        for setting in dataclasses.fields(ClassifierConfig)
        if getattr(args, setting.name, None) is not None
    }
    try:
        return ClassifierConfig(**given)
    except ValueError as error:
        raise JobInputError(f"bad hyperparameters: {error}") from error


def parameter_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter, in order: equal digests mean identical replicas."""
    digest = hashlib.sha256()
    for name, parameter in model.state_dict().items():
        digest.update(name.encode())
        digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train(args: argparse.Namespace, unknown: list[str]) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel

    from former.training import RunMismatchError, build_classifier, fit_classifier, save_model

    config = make_config(args)
    replica = start_replica(args.device)
    log = print if replica.is_main else (lambda *a, **k: None)
    finished = False
    try:
        if unknown:
            log(f"model.py: ignoring unknown arguments {' '.join(unknown)}", file=sys.stderr)
        check_attention(config.attention, config.heads, config.emb)
        data = load_data(args, replica, config.vocab_size, config.seed, config.final)
        log(f"data: {data.source}")
        log(
            f"training on {replica.world_size} process(es), device {replica.device}, "
            f"attention {config.attention}"
        )

        # build_classifier seeds torch from config.seed: identical initial weights on every rank.
        model = build_classifier(config, len(data.vocab), data.num_classes).to(replica.device)
        trained = model
        if replica.world_size > 1:
            device_ids = [replica.device.index] if replica.device.type == "cuda" else None
            trained = DistributedDataParallel(model, device_ids=device_ids)
        try:
            metrics = fit_classifier(
                trained,
                data,
                config,
                device=replica.device,
                rank=replica.rank,
                world_size=replica.world_size,
                checkpoint_dir=args.checkpoint_dir,
                checkpoint_every=args.checkpoint_every,
                log=log,
            )
            saved = None
            if replica.is_main:
                saved = save_model(args.model_dir, model, config, data.vocab)
        except RunMismatchError as error:
            raise JobInputError(str(error)) from error
        if replica.is_main:
            write_json(Path(args.output_data_dir) / "metrics.json", metrics)
            log(f"saved model to {saved}")
        if os.environ.get(PARAM_DIGEST_VARIABLE):
            digest = {
                "rank": replica.rank,
                "world_size": replica.world_size,
                "params_sha256": parameter_digest(model),
                "saved_model": saved is not None,
                "metrics": metrics,
            }
            write_json(Path(os.environ[PARAM_DIGEST_VARIABLE]) / f"rank{replica.rank}.json", digest)
        finished = True
        return metrics
    finally:
        stop_replica(replica, finished=finished)


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
        print(f"model.py: could not write failure file {path}: {error}", file=sys.stderr)


def _failure_file_before_parsing(argv: list[str]) -> str | None:
    """Where to report a failure even when the arguments themselves do not parse."""
    for i, item in enumerate(argv):
        name, equals, value = item.partition("=")
        if name in ("--failure-file", "--failure_file"):
            if equals:
                return value
            if i + 1 < len(argv):
                return argv[i + 1]
    return _default_path("SM_OUTPUT_FAILURE", JOB_FAILURE_FILE, LOCAL_ROOT / "output" / "failure")


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # metric lines reach the logs as they happen
    failure_file = _failure_file_before_parsing(sys.argv[1:] if argv is None else argv)
    try:
        args, unknown = parse_args(argv)
        failure_file = args.failure_file
        train(args, unknown)
    except JobInputError as error:
        reason = one_line(error)
    except Exception as error:  # anything else: keep the traceback for whoever debugs it
        traceback.print_exc()
        reason = one_line(error)
    else:
        return 0
    print(f"model.py: error: {reason}", file=sys.stderr)
    write_failure(failure_file, reason)
    return 1


if __name__ == "__main__":
    sys.exit(main())
