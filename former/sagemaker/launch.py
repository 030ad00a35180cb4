"""Submit a training job: stage the data and code, have the SDK build the request, and send
it here, once, so what is reported is what AWS accepted. A dry run answers AWS calls locally."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from former.container import DEFAULT_ATTENTION
from former.sagemaker import account, errors, job
from former.sagemaker.errors import SDK_REQUIREMENT, SageMakerError, aws_errors

EXAMPLE_ROLE = "arn:aws:iam::123456789012:role/SageMakerExecutionRole"
# The SDK's settings in a dry run: no telemetry, nothing read from the user's SDK config files.
DRY_RUN_SDK_CONFIG = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}
# What a dry run answers to the calls the SDK makes while it stages code and builds the request.
DRY_RUN_ANSWERS: dict[str, dict[str, Any]] = {
    "ListBuckets": {"Buckets": []},
    "CreateMultipartUpload": {"UploadId": "dry-run"},
    "UploadPart": {"ETag": '"dry-run"'},
    "SimulatePrincipalPolicy": {"EvaluationResults": []},
    "GetRole": {"Role": {}},
}


@dataclass
class LaunchResult:
    """What :func:`launch_training_job` did: the request, and whether AWS accepted it."""

    request: dict[str, Any]
    job_name: str
    region: str
    submitted: bool
    processes_per_instance: int
    shipped_files: list[str]


def sdk_installed() -> bool:
    """Whether the SageMaker SDK (the ``[sagemaker]`` extra) can be imported."""
    return all(importlib.util.find_spec(name) for name in ("sagemaker", "sagemaker.train"))


def install_sdk() -> str:
    """pip-install the SDK into this interpreter's environment (a notebook's kernel)."""
    command = [sys.executable, "-m", "pip", "install", SDK_REQUIREMENT]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SageMakerError(f"pip could not install {SDK_REQUIREMENT}: {done.stderr[-500:]}")
    importlib.invalidate_caches()
    return done.stdout.strip().splitlines()[-1]


class _RequestCaptured(Exception):
    """Raised where the SDK would send CreateTrainingJob; its argument is the request."""


def _capture_request(params: dict[str, Any], **_: Any) -> None:
    raise _RequestCaptured(copy.deepcopy(params))


def _sdk_boto_session(session: Any, region: str, account_id: str) -> Any:
    """A fresh boto3 session for the SDK (``session`` None: a dry run's, answered offline), so
    no client of an earlier launch, with its event handlers, is ever reused."""
    import boto3
    from botocore.awsrequest import AWSResponse

    keys = ("dry-run", "dry-run", None)  # access key, secret key, session token
    if session is not None:
        keys = session.get_credentials().get_frozen_credentials()[:3]
    sdk = boto3.Session(*keys, region_name=region)
    if session is None:
        identity = {"Account": account_id, "Arn": f"arn:aws:sts::{account_id}:dry-run"}
        answers = {**DRY_RUN_ANSWERS, "GetCallerIdentity": identity}

        def answer(model: Any, **_: Any) -> tuple[Any, dict[str, Any]]:
            parsed = {**answers.get(model.name, {}), "ResponseMetadata": {"HTTPStatusCode": 200}}
            return AWSResponse("https://dry-run.invalid", 200, {}, None), parsed

        sdk.events.register("before-call", answer)
    sdk.events.register("before-parameter-build.sagemaker.CreateTrainingJob", _capture_request)
    return sdk


def _or_example(dry_run: bool, example: str, what: str, resolve: Callable, *args: Any) -> str:
    """``resolve(*args)``; in a dry run with nothing configured, ``example``, with a notice."""
    try:
        return resolve(*args)
    except SageMakerError:
        if not dry_run:
            raise
        print(f"No {what} configured: the dry run shows {example}.", file=sys.stderr)
        return example


def training_data_uri(settings: job.JobSettings, sdk: Any, s3: Any, region: str) -> str | None:
    """The training channel's S3 URI: the given one (checked), or the local file uploaded once;
    ``s3`` None (a dry run) checks and uploads nothing."""
    data = settings.data
    if data is None and str(settings.hyperparameters.get("download", "")).lower() == "true":
        return None  # model.py downloads IMDB inside the job
    if isinstance(data, str) and data.startswith("s3://"):
        if s3 is not None:
            account.check_same_region(s3, data, region)
        return data
    source = account.local_imdb(data, "upload (data may also be an s3:// URI)")
    if source.kind == "folder":
        raise SageMakerError(
            f"{source.path} is an extracted aclImdb folder (50,000 small uploads): pass the "
            "aclImdb_v1.tar.gz archive or the CSV instead, or an s3:// URI."
        )
    return account.upload_once(s3, source.path, sdk.default_bucket())


def launch_training_job(
    data: str | Path | None = None,
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    dry_run: bool | None = None,
    boto_session: Any = None,
    **options: Any,
) -> LaunchResult:
    """Build a SageMaker training job that runs ``model.py`` and, unless a dry run, submit it.
    ``hyperparameters``: ``model.py``'s flags; other keyword arguments: :class:`JobSettings`
    fields. ``dry_run`` None: submit when AWS credentials are configured."""
    hyperparameters = {"attention": DEFAULT_ATTENTION, **(hyperparameters or {})}
    settings = job.JobSettings(data, hyperparameters=hyperparameters, **options)
    region, role = settings.region, settings.role
    with aws_errors(region):
        dry_run = decide_dry_run(dry_run, boto_session)
        region = _or_example(
            dry_run, "us-east-1", "AWS region", account.resolve_region, region, boto_session
        )
    with aws_errors(region):
        session = None if dry_run else account.aws_session(region, boto_session)
        example = dry_run and not role
        role = _or_example(example, EXAMPLE_ROLE, "role", account.resolve_role, role, session)
        attention = str(settings.hyperparameters["attention"])
        learner = learner_module_path(settings.learner_module, attention)
        if not sdk_installed():
            raise SageMakerError(errors.sdk_missing())
        from sagemaker.core.helper.session_helper import Session

        sdk = Session(
            boto_session=_sdk_boto_session(session, region, role.split(":")[4]),
            default_bucket=settings.bucket,
            sagemaker_config=DRY_RUN_SDK_CONFIG if dry_run else None,
        )
        s3 = None if dry_run else session.client("s3")
        data_uri = training_data_uri(settings, sdk, s3, region)
        for uri in filter(None, (settings.output_s3_uri, settings.checkpoint_s3_uri) if s3 else ()):
            account.check_same_region(s3, uri, region, "The output location")
        request, shipped = build_request(settings, learner, data_uri, sdk, role)
        if not dry_run:
            session.client("sagemaker").create_training_job(**request)
    name, processes = request["TrainingJobName"], settings.processes_per_instance
    return LaunchResult(request, name, region, not dry_run, processes, shipped)


def decide_dry_run(dry_run: bool | None, boto_session: Any) -> bool:
    """``dry_run`` None: a dry run, with a notice, when no AWS credentials are configured."""
    if not dry_run and not account.credentials_configured(boto_session):
        if dry_run is not None:
            raise SageMakerError(f"No AWS credentials found: {errors.CREDENTIALS_HELP}.")
        print(
            "No AWS credentials found, so this is a dry run: nothing was sent. To submit, "
            f"{errors.CREDENTIALS_HELP}.",
            file=sys.stderr,
        )
        return True
    return bool(dry_run)


def build_request(
    settings: job.JobSettings, learner: Path | None, data_uri: str | None, sdk: Any, role: str
) -> tuple[dict[str, Any], list[str]]:
    """The CreateTrainingJob request the SDK builds (sending nothing), and the files shipped."""
    with tempfile.TemporaryDirectory(prefix="former-sagemaker-") as tmp:
        source_dir = job.stage_source(Path(tmp) / "source", learner)
        files = filter(Path.is_file, source_dir.rglob("*"))
        shipped = sorted(path.relative_to(source_dir).as_posix() for path in files)
        trainer, inputs = job.build_model_trainer(settings, data_uri, source_dir, sdk, role)
        try:
            trainer.train(input_data_config=inputs or None, wait=False, logs=False)
        except _RequestCaptured as captured:
            return captured.args[0], shipped
    raise SageMakerError("The SageMaker SDK built no CreateTrainingJob request.")


def learner_module_path(learner_module: str | Path | None, attention: str) -> Path | None:
    """The learner's attention module to ship, checked against the attention string."""
    module = attention.partition(":")[0] if ":" in attention else ""
    if not module or module.split(".")[0] in ("former", "torch"):
        path = Path.cwd() / (learner_module or "my_transformer_model.py")
        return path if path.is_file() else None  # shipped all the same, for the learner's use
    expected = Path(module.replace(".", "/") + ".py")
    path = Path.cwd() / (learner_module or expected)
    if not path.is_file():
        raise SageMakerError(
            f"attention {attention!r} needs {expected}, but {str(path)!r} does not exist: run "
            "the notebook cell that writes it (%%writefile my_transformer_model.py), pass "
            "--learner-module PATH, or train with --attention sdpa."
        )
    if path.name != expected.name:
        raise SageMakerError(
            f"attention {attention!r} imports module {module!r}, but the learner module "
            f"is {path.name!r}: name the file {expected.name} or change --attention."
        )
    return path
