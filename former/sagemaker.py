"""Launch ``model.py`` as an Amazon SageMaker training job (SageMaker Python SDK v3).

The launcher builds a v3 ``ModelTrainer``: the PyTorch 2.x training image for
the region (py312), ``ml.g5.xlarge`` by default, managed spot training with
checkpoints in S3, metric definitions that match the metric lines ``model.py``
prints (``epoch=2 train_loss=0.41 val_acc=0.873``), hyperparameters, and
``Torchrun()`` when the job has more than one GPU in total. The code it ships is
a clean staging folder holding the entry point ``model.py`` (an adapter over
:mod:`former.container`), the installed ``former`` package and the learner's
``my_transformer_model.py``, nothing else.

From a shell::

    python -m former.sagemaker launch --data ../shared/data/aclImdb-labelled.tar.gz \\
        --role arn:aws:iam::123456789012:role/SageMakerRole --region us-east-1 \\
        --instance-type ml.g5.12xlarge --epochs 3 --dry-run

Any ``--key value`` the launcher does not know itself becomes a hyperparameter
of ``model.py``. ``--dry-run`` prints the full CreateTrainingJob request as
JSON and touches nothing in AWS: every AWS call the SDK makes on the way is
answered locally.

From the notebook, :func:`launch_training_job` does the same and returns the
request; it submits only when AWS credentials are configured.

``sagemaker`` (``pip install 'transformers-from-scratch[sagemaker]'``) is
imported only when a job is built, so ``former`` never needs it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENTRY_SCRIPT = "model.py"
# The entry point the job runs: the container contract lives in the package.
ENTRY_SCRIPT_SOURCE = """\
\"\"\"SageMaker training entry point, written by former.sagemaker: see former.container.\"\"\"

import sys

from former.container import main

if __name__ == "__main__":
    sys.exit(main())
"""
TRAINING_CHANNEL = "training"
DEFAULT_INSTANCE_TYPE = "ml.g5.xlarge"
DEFAULT_FRAMEWORK_VERSION = "2.8"
PY_VERSION = "py312"
DEFAULT_ATTENTION = "my_transformer_model:multihead_attention"
DEFAULT_BASE_JOB_NAME = "former-classify"
DEFAULT_MAX_RUN_SECONDS = 3 * 3600
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
# AWS Deep Learning Containers registry, used when the SDK cannot resolve the image itself.
DLC_ACCOUNT = "763104351884"
IMAGE_URI_PATTERN = (
    "{account}.dkr.ecr.{region}.amazonaws.com/pytorch-training:{version}-{device}-" + PY_VERSION
)
ROLE_ENV_VARS = ("SAGEMAKER_ROLE", "SAGEMAKER_ROLE_ARN")
REGION_ENV_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")
SAGEMAKER_METADATA_FILE = Path("/opt/ml/metadata/resource-metadata.json")

# Regexes over the lines model.py prints, e.g. "epoch=2 train_loss=0.41 val_acc=0.873"
# (evaluations within an epoch print fractional epochs: "epoch=1.25 step=...").
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
METRIC_DEFINITIONS: tuple[dict[str, str], ...] = (
    {"Name": "epoch", "Regex": r"\bepoch=" + _NUMBER},
    {"Name": "train_loss", "Regex": r"\btrain_loss=" + _NUMBER},
    {"Name": "val_acc", "Regex": r"\bval_acc=" + _NUMBER},
)

# GPUs per instance for the types a course is likely to use. The SDK ships a
# table too, but it misses some (ml.g5.xlarge among them), so ours comes first.
GPUS_PER_INSTANCE: dict[str, int] = {
    **{f"ml.g4dn.{size}": 1 for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "ml.g4dn.12xlarge": 4,
    **{f"ml.g5.{size}": 1 for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "ml.g5.12xlarge": 4,
    "ml.g5.24xlarge": 4,
    "ml.g5.48xlarge": 8,
    **{f"ml.g6.{size}": 1 for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "ml.g6.12xlarge": 4,
    "ml.g6.24xlarge": 4,
    "ml.g6.48xlarge": 8,
    **{f"ml.g6e.{size}": 1 for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "ml.g6e.12xlarge": 4,
    "ml.g6e.24xlarge": 4,
    "ml.g6e.48xlarge": 8,
    "ml.p3.2xlarge": 1,
    "ml.p3.8xlarge": 4,
    "ml.p3.16xlarge": 8,
    "ml.p3dn.24xlarge": 8,
    "ml.p4d.24xlarge": 8,
    "ml.p4de.24xlarge": 8,
    "ml.p5.48xlarge": 8,
    "ml.p5e.48xlarge": 8,
    "ml.p5en.48xlarge": 8,
}
CPU_INSTANCE_FAMILIES = ("ml.m", "ml.c", "ml.r", "ml.t")

# What model.py needs beyond the training image (which brings torch and numpy); pip finds
# these already satisfied offline, or installs them when the image lacks them.
RUNTIME_REQUIREMENTS = ("tqdm>=4.60",)
REQUIREMENTS_FILE = "requirements.txt"

# Files and folders that never belong in the shipped code.
_IGNORED_IN_SOURCE = ("__pycache__", "*.pyc", ".ipynb_checkpoints", ".DS_Store")


class LaunchError(RuntimeError):
    """A job could not be built or submitted; the message says what to change."""


@dataclass
class JobSettings:
    """Everything that describes one training job, with the launcher's defaults.

    ``data`` is a local folder or file (IMDB tarball, extracted ``aclImdb`` or
    the CSV; uploaded to S3 at submission) or an ``s3://`` URI used as is. It
    may be None only when the hyperparameters ask ``model.py`` to download.
    """

    data: str | Path | None
    role: str | None = None
    region: str | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    gpus_per_instance: int | None = None
    spot: bool = True
    max_run_seconds: int = DEFAULT_MAX_RUN_SECONDS
    max_wait_seconds: int | None = None
    checkpoint_s3_uri: str | None = None
    output_s3_uri: str | None = None
    bucket: str | None = None
    framework_version: str = DEFAULT_FRAMEWORK_VERSION
    image_uri: str | None = None
    learner_module: str | Path | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    base_job_name: str = DEFAULT_BASE_JOB_NAME
    volume_size_gb: int = 30


@dataclass
class LaunchResult:
    """What :func:`launch_training_job` did: the request and whether it was sent."""

    request: dict[str, Any]
    job_name: str
    region: str
    submitted: bool
    processes_per_instance: int = 1
    shipped_files: list[str] = field(default_factory=list)

    @property
    def console_url(self) -> str:
        return (
            f"https://{self.region}.console.aws.amazon.com/sagemaker/home"
            f"?region={self.region}#/jobs/{self.job_name}"
        )

    def to_json(self) -> str:
        return json.dumps(self.request, indent=2, sort_keys=True, default=str)


# --------------------------------------------------------------------------- settings


def resolve_role(role: str | None) -> str:
    """The execution role ARN: the argument, else $SAGEMAKER_ROLE, else (in SageMaker) the notebook's.

    Outside SageMaker there is no role to discover, so a missing role is an
    error that says how to give one; ``get_execution_role`` is only asked
    inside a SageMaker notebook or Studio space.
    """
    role = role or next((os.environ[v] for v in ROLE_ENV_VARS if os.environ.get(v)), None)
    if not role and SAGEMAKER_METADATA_FILE.exists():
        from sagemaker.core.helper.session_helper import get_execution_role

        role = get_execution_role()
    if not role:
        raise LaunchError(
            "No IAM execution role for the training job. Pass --role "
            "arn:aws:iam::<account>:role/<name> (role= in Python) or set SAGEMAKER_ROLE; the "
            "role needs SageMaker training permissions and access to your S3 bucket."
        )
    if not re.fullmatch(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/.+", role):
        raise LaunchError(
            f"Role {role!r} is not an IAM role ARN. Pass the full ARN, e.g. "
            "arn:aws:iam::123456789012:role/SageMakerExecutionRole (IAM console, Roles)."
        )
    return role


def resolve_region(region: str | None) -> str:
    """The AWS region: the argument, else $AWS_REGION / $AWS_DEFAULT_REGION, else the AWS config."""
    region = region or next((os.environ[v] for v in REGION_ENV_VARS if os.environ.get(v)), None)
    if not region:
        import boto3

        region = boto3.Session().region_name
    if not region:
        raise LaunchError(
            "No AWS region. Pass --region us-east-1 (region= in Python), set AWS_DEFAULT_REGION, "
            "or add 'region = ...' to ~/.aws/config."
        )
    return region


def gpus_per_instance(instance_type: str) -> int:
    """Number of GPUs on one instance of ``instance_type`` (0 for CPU instances)."""
    if instance_type in GPUS_PER_INSTANCE:
        return GPUS_PER_INSTANCE[instance_type]
    if instance_type.startswith(CPU_INSTANCE_FAMILIES):
        return 0
    try:
        from sagemaker.core import instance_types_gpu_info

        for region_table in _all_gpu_tables(instance_types_gpu_info):
            if instance_type in region_table:
                return int(region_table[instance_type]["Count"])
    except ImportError:
        pass
    raise LaunchError(
        f"Unknown instance type {instance_type!r}: pass --gpus-per-instance N so the launcher "
        "knows whether to start one process per GPU."
    )


def _all_gpu_tables(module: Any) -> Iterator[dict]:
    for region in ("us-east-1", "us-west-2", "eu-west-1"):
        yield module.retrieve(region)


def training_image_uri(region: str, framework_version: str, instance_type: str) -> str:
    """ECR URI of the AWS PyTorch training image (py312) for ``region``.

    Resolved through the SDK's ``image_uris`` table; without it, falls back to
    ``763104351884.dkr.ecr.<region>.amazonaws.com/pytorch-training:<version>-<gpu|cpu>-py312``
    (the Deep Learning Containers registry of most commercial regions).
    """
    try:
        from sagemaker.core import image_uris
    except ImportError:
        device = "gpu" if gpus_per_instance(instance_type) else "cpu"
        return IMAGE_URI_PATTERN.format(
            account=DLC_ACCOUNT, region=region, version=framework_version, device=device
        )
    try:
        return image_uris.retrieve(
            "pytorch",
            region=region,
            version=framework_version,
            py_version=PY_VERSION,
            instance_type=instance_type,
            image_scope="training",
        )
    except ValueError as error:
        raise LaunchError(
            f"No PyTorch {framework_version} {PY_VERSION} training image for region {region!r} "
            f"({error}). Pick another --framework-version or pass --image-uri explicitly."
        ) from error


def normalise_hyperparameters(hyperparameters: Mapping[str, Any]) -> dict[str, str]:
    """``model.py`` flags: keys as ``batch-size``, booleans as ``true``/``false``, all strings."""
    normalised = {}
    for key, value in hyperparameters.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        normalised[key.lstrip("-").replace("_", "-")] = str(value)
    return normalised


def _is_s3_uri(value: str | Path | None) -> bool:
    return isinstance(value, str) and value.startswith("s3://")


def _resolve_data(data: str | Path | None, hyperparameters: Mapping[str, str]) -> str | None:
    if data is None:
        if hyperparameters.get("download", "false").lower() == "true":
            return None
        raise LaunchError(
            "No training data. Pass --data with a local IMDB tarball, aclImdb folder or CSV "
            "(uploaded for you) or an s3:// URI; or let the job download IMDB with --download true."
        )
    if _is_s3_uri(data):
        return str(data)
    path = Path(data).expanduser()
    if not path.exists():
        raise LaunchError(
            f"Training data {str(path)!r} does not exist. Pass an existing IMDB tarball, aclImdb "
            "folder or CSV, or an s3:// URI."
        )
    return str(path.resolve())


def _learner_module_path(learner_module: str | Path | None, attention: str) -> Path | None:
    """The learner's attention module to ship, checked against the attention string."""
    module_name = attention.partition(":")[0] if ":" in attention else None
    path = Path(learner_module) if learner_module else Path.cwd() / "my_transformer_model.py"
    if module_name and module_name.split(".")[0] not in ("former", "torch"):
        expected = module_name.replace(".", "/") + ".py"
        if learner_module is None:
            path = Path.cwd() / expected
        if not path.is_file():
            raise LaunchError(
                f"attention {attention!r} needs {expected}, but {str(path)!r} does not exist. "
                "Run the notebook cell that writes it (%%writefile my_transformer_model.py), "
                "pass --learner-module PATH, or train with --attention sdpa."
            )
        if path.name != Path(expected).name:
            raise LaunchError(
                f"attention {attention!r} imports module {module_name!r}, but the learner module "
                f"is {path.name!r}; name the file {Path(expected).name} or change --attention."
            )
        return path
    return path if path.is_file() else None


def stage_source(destination: Path, learner_module: Path | None) -> Path:
    """Write exactly what the job runs into ``destination``: model.py, former/, the learner file.

    ``former/`` is the package this launcher was imported from (an editable
    install, a wheel or the bundle), plus a ``requirements.txt`` for the few
    pure-Python packages it needs. Nothing else (solutions, notebooks, .venv,
    data) is shipped.
    """
    import former

    destination.mkdir(parents=True, exist_ok=True)
    (destination / ENTRY_SCRIPT).write_text(ENTRY_SCRIPT_SOURCE)
    shutil.copytree(
        Path(former.__file__).resolve().parent,
        destination / "former",
        ignore=shutil.ignore_patterns(*_IGNORED_IN_SOURCE),
        dirs_exist_ok=True,
    )
    if learner_module is not None:
        shutil.copy2(learner_module, destination / learner_module.name)
    (destination / REQUIREMENTS_FILE).write_text("\n".join(RUNTIME_REQUIREMENTS) + "\n")
    return destination


# --------------------------------------------------------------------------- the job


def build_model_trainer(
    settings: JobSettings,
    source_dir: Path,
    sagemaker_session: Any,
    *,
    role: str,
    region: str,
) -> tuple[Any, list[Any]]:
    """A v3 ``ModelTrainer`` for ``settings`` and the input channels to train it with."""
    from sagemaker.core.shapes import MetricDefinition
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        InputData,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
    )
    from sagemaker.train import ModelTrainer
    from sagemaker.train.distributed import Torchrun

    hyperparameters = normalise_hyperparameters(settings.hyperparameters)
    data = _resolve_data(settings.data, hyperparameters)
    gpus = (
        settings.gpus_per_instance
        if settings.gpus_per_instance is not None
        else gpus_per_instance(settings.instance_type)
    )
    if settings.instance_count < 1:
        raise LaunchError(f"instance count must be at least 1, got {settings.instance_count}.")
    max_wait = None
    if settings.spot:
        max_wait = settings.max_wait_seconds or 2 * settings.max_run_seconds
        if max_wait < settings.max_run_seconds:
            raise LaunchError(
                f"max wait ({max_wait}s) must be at least the max run time "
                f"({settings.max_run_seconds}s) for managed spot training."
            )
    image = settings.image_uri or training_image_uri(
        region, settings.framework_version, settings.instance_type
    )
    # One process per GPU across all hosts; a single GPU or CPU host runs plain python.
    distributed = (
        Torchrun(process_count_per_node=max(gpus, 1))
        if gpus * settings.instance_count > 1
        else None
    )

    trainer = ModelTrainer(
        sagemaker_session=sagemaker_session,
        role=role,
        base_job_name=settings.base_job_name,
        training_image=image,
        source_code=SourceCode(
            source_dir=str(source_dir), entry_script=ENTRY_SCRIPT, requirements=REQUIREMENTS_FILE
        ),
        distributed=distributed,
        compute=Compute(
            instance_type=settings.instance_type,
            instance_count=settings.instance_count,
            volume_size_in_gb=settings.volume_size_gb,
            enable_managed_spot_training=settings.spot,
        ),
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=settings.max_run_seconds,
            max_wait_time_in_seconds=max_wait,
        ),
        checkpoint_config=CheckpointConfig(
            s3_uri=settings.checkpoint_s3_uri, local_path=CHECKPOINT_LOCAL_PATH
        ),
        output_data_config=(
            OutputDataConfig(s3_output_path=settings.output_s3_uri)
            if settings.output_s3_uri
            else None
        ),
        hyperparameters=hyperparameters,
        # Unbuffered output so metric lines reach CloudWatch (and the metric regexes) at once.
        environment={"PYTHONUNBUFFERED": "1"},
    ).with_metric_definitions([MetricDefinition(**_snake(m)) for m in METRIC_DEFINITIONS])
    inputs = [InputData(channel_name=TRAINING_CHANNEL, data_source=data)] if data else []
    return trainer, inputs


def _snake(metric: Mapping[str, str]) -> dict[str, str]:
    return {"name": metric["Name"], "regex": metric["Regex"]}


class _RequestCaptured(Exception):
    """Raised in a dry run at the moment the SDK would send CreateTrainingJob."""


def _record_request(captured: dict[str, Any]):
    def handler(params: dict[str, Any], **_: Any) -> None:
        captured.update(copy.deepcopy(params))

    return handler


def _offline_answer(account: str):
    """A botocore ``before-call`` handler that answers every AWS call locally (dry run)."""
    from botocore.awsrequest import AWSResponse

    def handler(model: Any, params: Any, **_: Any):
        operation = model.name
        if operation == "CreateTrainingJob":
            raise _RequestCaptured
        answers: dict[str, dict[str, Any]] = {
            "GetCallerIdentity": {
                "Account": account,
                "Arn": f"arn:aws:sts::{account}:assumed-role/dry-run/dry-run",
                "UserId": "dry-run",
            },
            "ListBuckets": {"Buckets": []},
            # Large local data go up in parts.
            "CreateMultipartUpload": {"UploadId": "dry-run"},
            "UploadPart": {"ETag": '"dry-run"'},
            # Role checks cannot be answered offline: report "nothing known".
            "SimulatePrincipalPolicy": {"EvaluationResults": []},
            "GetRole": {"Role": {}},
        }
        parsed = answers.get(operation, {})
        parsed["ResponseMetadata"] = {"HTTPStatusCode": 200, "HTTPHeaders": {}}
        return AWSResponse("https://dry-run.invalid", 200, {}, None), parsed

    return handler


# The SDK's configuration for a dry run: no telemetry, nothing read from the user's files.
_DRY_RUN_SDK_CONFIG = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}


@contextmanager
def _staged_source(learner_module: Path | None) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="former-sagemaker-") as tmp:
        yield stage_source(Path(tmp) / "source", learner_module)


def credentials_configured(boto_session: Any = None) -> bool:
    """Whether boto3 finds AWS credentials (environment, ~/.aws, SSO, instance role)."""
    import boto3

    session = boto_session or boto3.Session()
    return session.get_credentials() is not None


def launch_training_job(
    data: str | Path | None,
    *,
    role: str | None = None,
    region: str | None = None,
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    instance_count: int = 1,
    hyperparameters: Mapping[str, Any] | None = None,
    dry_run: bool | None = None,
    wait: bool = False,
    boto_session: Any = None,
    **settings: Any,
) -> LaunchResult:
    """Build (and maybe submit) a SageMaker training job that runs ``model.py``.

    ``data``: local IMDB tarball / aclImdb folder / CSV (uploaded) or an ``s3://`` URI.
    ``hyperparameters``: flags for ``model.py`` (``epochs``, ``batch_size``, ``attention``...);
    ``attention`` defaults to the learner's ``my_transformer_model:multihead_attention``.
    ``dry_run``: True never submits and touches no AWS service; False submits;
    None (the default) submits when AWS credentials are configured and otherwise
    returns the request with a note on how to configure them.
    Other keyword arguments are fields of :class:`JobSettings` (``spot``,
    ``max_run_seconds``, ``checkpoint_s3_uri``, ``framework_version``...).
    Returns the CreateTrainingJob request as the API receives it.
    """
    hyperparameters = dict(hyperparameters or {})
    hyperparameters.setdefault("attention", DEFAULT_ATTENTION)
    job = JobSettings(
        data=data,
        role=role,
        region=region,
        instance_type=instance_type,
        instance_count=instance_count,
        hyperparameters=hyperparameters,
        **settings,
    )
    role = resolve_role(job.role)
    region = resolve_region(job.region)
    if dry_run is None:
        dry_run = not credentials_configured(boto_session)
        if dry_run:
            print(
                "No AWS credentials found, so this is a dry run: the request below was not sent. "
                "Configure credentials (aws configure / aws sso login) and call again to submit.",
                file=sys.stderr,
            )
    elif not dry_run and not credentials_configured(boto_session):
        raise LaunchError(
            "No AWS credentials found. Run `aws configure` or `aws sso login` (or set "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), or use --dry-run to see the request."
        )
    learner = _learner_module_path(job.learner_module, str(hyperparameters["attention"]))
    try:
        import boto3
        from sagemaker.core.helper.session_helper import Session
    except ImportError as error:
        raise LaunchError(
            "The SageMaker SDK is not installed: pip install 'transformers-from-scratch[sagemaker]' "
            "(or 'sagemaker>=3.27,<4')."
        ) from error

    captured: dict[str, Any] = {}
    if dry_run:
        account = role.split(":")[4]
        boto_session = boto3.Session(
            region_name=region, aws_access_key_id="dry-run", aws_secret_access_key="dry-run"
        )
        boto_session.events.register("before-call", _offline_answer(account))
        sdk_config: dict | None = _DRY_RUN_SDK_CONFIG
    else:
        boto_session = boto_session or boto3.Session(region_name=region)
        if boto_session.region_name != region:
            raise LaunchError(
                f"The boto3 session is for region {boto_session.region_name!r}, the job for "
                f"{region!r}; pass a session for the job's region."
            )
        sdk_config = None
    # Registered before the SDK creates its clients, which copy the session's handlers.
    record_event = "before-parameter-build.sagemaker.CreateTrainingJob"
    recorder = _record_request(captured)
    boto_session.events.register(record_event, recorder)
    try:
        session = Session(
            boto_session=boto_session, default_bucket=job.bucket, sagemaker_config=sdk_config
        )
        with _staged_source(learner) as source_dir:
            trainer, inputs = build_model_trainer(
                job, source_dir, session, role=role, region=region
            )
            shipped = sorted(
                p.relative_to(source_dir).as_posix() for p in source_dir.rglob("*") if p.is_file()
            )
            try:
                trainer.train(input_data_config=inputs or None, wait=wait, logs=wait)
            except _RequestCaptured:
                pass
    finally:
        boto_session.events.unregister(record_event, recorder)
    if not captured:
        raise LaunchError("The SageMaker SDK finished without sending a CreateTrainingJob request.")
    return LaunchResult(
        request=captured,
        job_name=captured["TrainingJobName"],
        region=region,
        submitted=not dry_run,
        processes_per_instance=(
            trainer.distributed.process_count_per_node if trainer.distributed else 1
        ),
        shipped_files=shipped,
    )


# --------------------------------------------------------------------------- command line


def _launch_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m former.sagemaker launch",
        description=(
            "Run model.py as a SageMaker training job. Options not listed here (--epochs 3, "
            "--batch-size 32, --attention sdpa, ...) are passed to model.py as hyperparameters."
        ),
    )
    parser.add_argument("--data", help="IMDB tarball, aclImdb folder or CSV; or an s3:// URI")
    parser.add_argument("--role", help="execution role ARN (default: $SAGEMAKER_ROLE)")
    parser.add_argument("--region", help="AWS region (default: $AWS_DEFAULT_REGION, ~/.aws)")
    parser.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE)
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--gpus-per-instance", type=int, help="for instance types not in the table")
    parser.add_argument(
        "--spot", action=argparse.BooleanOptionalAction, default=True, help="managed spot training"
    )
    parser.add_argument("--max-run", type=int, default=DEFAULT_MAX_RUN_SECONDS, help="seconds")
    parser.add_argument("--max-wait", type=int, help="seconds, spot only (default: 2 x max run)")
    parser.add_argument("--checkpoint-s3-uri", help="default: s3://<bucket>/<job>/checkpoints")
    parser.add_argument("--output-s3-uri", help="where model.tar.gz goes")
    parser.add_argument("--bucket", help="S3 bucket for code and data (default: SDK's)")
    parser.add_argument("--framework-version", default=DEFAULT_FRAMEWORK_VERSION)
    parser.add_argument("--image-uri", help="training image; overrides --framework-version")
    parser.add_argument(
        "--learner-module", help="the learner's attention file (default: ./my_transformer_model.py)"
    )
    parser.add_argument("--job-name", dest="base_job_name", default=DEFAULT_BASE_JOB_NAME)
    parser.add_argument("--wait", action="store_true", help="stream the job's logs until it ends")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the request as JSON; touch nothing in AWS"
    )
    return parser


def parse_hyperparameter_args(extra: Sequence[str]) -> dict[str, str]:
    """``["--epochs", "3", "--attention=sdpa"]`` -> ``{"epochs": "3", "attention": "sdpa"}``."""
    hyperparameters: dict[str, str] = {}
    items = list(extra)
    while items:
        item = items.pop(0)
        if not item.startswith("--") or item == "--":
            raise LaunchError(
                f"Unexpected argument {item!r}: hyperparameters for model.py go as --key value."
            )
        key, equals, value = item[2:].partition("=")
        if not equals:
            if not items or items[0].startswith("--"):
                raise LaunchError(f"Hyperparameter --{key} needs a value, e.g. --{key} 3.")
            value = items.pop(0)
        hyperparameters[key] = value
    return hyperparameters


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m former.sagemaker launch ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "launch":
        print(
            "usage: python -m former.sagemaker launch --data PATH|s3://... [--dry-run] "
            "[--instance-type ml.g5.xlarge] [--epochs 3 ...]  (launch --help for all options)",
            file=sys.stderr,
        )
        return 2
    args, extra = _launch_parser().parse_known_args(argv[1:])
    try:
        hyperparameters = parse_hyperparameter_args(extra)
        options = vars(args)
        dry_run, wait = options.pop("dry_run"), options.pop("wait")
        result = launch_training_job(
            options.pop("data"),
            role=options.pop("role"),
            region=options.pop("region"),
            instance_type=options.pop("instance_type"),
            instance_count=options.pop("instance_count"),
            hyperparameters=hyperparameters,
            dry_run=dry_run,
            wait=wait,
            max_run_seconds=options.pop("max_run"),
            max_wait_seconds=options.pop("max_wait"),
            **options,
        )
    except LaunchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if result.submitted:
        print(f"Submitted training job {result.job_name}")
        print(f"  console: {result.console_url}")
        print(
            "  logs:    aws logs tail /aws/sagemaker/TrainingJobs --follow "
            f"--log-stream-name-prefix {result.job_name}"
        )
    else:
        print(result.to_json())
        print(
            f"Dry run: nothing was sent. model.py would run as {result.processes_per_instance} "
            f"process(es) per instance ({'torchrun' if result.processes_per_instance > 1 else 'python'}); "
            f"code shipped: {', '.join(result.shipped_files)}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
