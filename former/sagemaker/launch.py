"""Submit a training job: stage the data and code, build the request with the SDK, send it once.

The SDK stages the code and builds the request on a private copy of the
session; the request is then sent here, once, so what is reported is what AWS
accepted. A dry run answers every AWS call locally and sends nothing.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from former.sagemaker.account import (
    DATA_PREFIX,
    aws_session,
    check_same_region,
    credentials_configured,
    file_digest,
    local_training_file,
    resolve_region,
    resolve_role,
    upload_once,
)
from former.sagemaker.errors import (
    CREDENTIALS_HELP,
    SDK_REQUIREMENT,
    SageMakerError,
    aws_errors,
    sdk_missing,
)
from former.sagemaker.job import (
    DEFAULT_ATTENTION,
    DEFAULT_INSTANCE_TYPE,
    JobSettings,
    build_model_trainer,
    learner_module_path,
    processes_per_instance,
    stage_source,
)

EXAMPLE_ROLE = "arn:aws:iam::123456789012:role/SageMakerExecutionRole"
EXAMPLE_REGION = "us-east-1"

# The SDK's settings in a dry run: no telemetry, nothing read from the user's SDK config files.
DRY_RUN_SDK_CONFIG = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}


@dataclass
class LaunchResult:
    """What :func:`launch_training_job` did: the request, and whether AWS accepted it."""

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


def sdk_installed() -> bool:
    """Whether the SageMaker SDK (the ``[sagemaker]`` extra) can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(name) for name in ("sagemaker", "sagemaker.train"))


def install_sdk() -> str:
    """pip-install the SDK into this interpreter's environment (a notebook's kernel)."""
    import importlib
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", SDK_REQUIREMENT], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SageMakerError(
            f"pip could not install {SDK_REQUIREMENT}: {done.stderr.strip()[-500:]}"
        )
    importlib.invalidate_caches()
    return done.stdout.strip().splitlines()[-1]


class _RequestCaptured(Exception):
    """Raised where the SDK would send CreateTrainingJob; carries the request."""

    def __init__(self, request: dict[str, Any]) -> None:
        super().__init__("CreateTrainingJob captured")
        self.request = request


def _capture_request(params: dict[str, Any], **_: Any) -> None:
    raise _RequestCaptured(copy.deepcopy(params))


def _offline_answers(account: str) -> Any:
    """A botocore handler answering every AWS call of a dry run here: nothing leaves the machine."""
    from botocore.awsrequest import AWSResponse

    answers: dict[str, dict[str, Any]] = {
        "GetCallerIdentity": {"Account": account, "Arn": f"arn:aws:sts::{account}:dry-run"},
        "ListBuckets": {"Buckets": []},
        "CreateMultipartUpload": {"UploadId": "dry-run"},
        "UploadPart": {"ETag": '"dry-run"'},
        "SimulatePrincipalPolicy": {"EvaluationResults": []},
        "GetRole": {"Role": {}},
    }

    def answer(model: Any, **_: Any) -> tuple[Any, dict[str, Any]]:
        parsed = {**answers.get(model.name, {}), "ResponseMetadata": {"HTTPStatusCode": 200}}
        return AWSResponse("https://dry-run.invalid", 200, {}, None), parsed

    return answer


def _sdk_boto_session(session: Any, region: str, account: str) -> Any:
    """A boto3 session of the SDK's own (``session`` None: a dry run's, answered offline).

    The SDK caches its clients per session; a fresh one per launch means no
    client of an earlier launch, with its event handlers, is ever reused.
    """
    import boto3

    if session is None:
        keys = {"aws_access_key_id": "dry-run", "aws_secret_access_key": "dry-run"}
    else:
        frozen = session.get_credentials().get_frozen_credentials()
        keys = {
            "aws_access_key_id": frozen.access_key,
            "aws_secret_access_key": frozen.secret_key,
            "aws_session_token": frozen.token,
        }
    sdk = boto3.Session(region_name=region, **keys)
    if session is None:
        sdk.events.register("before-call", _offline_answers(account))
    sdk.events.register("before-parameter-build.sagemaker.CreateTrainingJob", _capture_request)
    return sdk


def _or_example(resolve: Any, dry_run: bool, example: str, what: str) -> str:
    """``resolve()``; in a dry run, when nothing is configured, an example instead, with a notice."""
    try:
        return resolve()
    except SageMakerError:
        if not dry_run:
            raise
        print(f"No {what} configured: the dry run shows {example}.", file=sys.stderr)
        return example


def training_data_uri(job: JobSettings, sdk: Any, s3: Any, region: str) -> str | None:
    """The training channel's S3 URI: the given one (checked), or the local file uploaded once."""
    if job.data is None and str(job.hyperparameters.get("download", "")).lower() == "true":
        return None  # model.py downloads IMDB inside the job
    if isinstance(job.data, str) and job.data.startswith("s3://"):
        if s3 is not None:
            check_same_region(s3, job.data, region)
        return job.data
    path = local_training_file(job.data)
    bucket = sdk.default_bucket()
    if s3 is None:  # dry run: where it would go
        return f"s3://{bucket}/{DATA_PREFIX}/{file_digest(path)[:16]}/{path.name}"
    return upload_once(s3, path, bucket)


def launch_training_job(
    data: str | Path | None = None,
    *,
    role: str | None = None,
    region: str | None = None,
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    instance_count: int = 1,
    hyperparameters: Mapping[str, Any] | None = None,
    dry_run: bool | None = None,
    boto_session: Any = None,
    **settings: Any,
) -> LaunchResult:
    """Build, and unless it is a dry run submit, a SageMaker training job that runs ``model.py``.

    ``hyperparameters``: flags for ``model.py`` (``epochs``, ``batch_size``,
    ``attention``, defaulting to the learner's ``my_transformer_model:multihead_attention``).
    ``dry_run``: True sends nothing; False submits; None submits when AWS
    credentials are configured, and otherwise returns the request with a notice.
    Other keyword arguments are fields of :class:`JobSettings`. Each call
    submits at most one job, and ``submitted`` says whether AWS accepted it.
    """
    job = JobSettings(data, role, region, instance_type, instance_count, **settings)
    job.hyperparameters = {"attention": DEFAULT_ATTENTION, **dict(hyperparameters or {})}
    with aws_errors(region):
        if dry_run is None:
            dry_run = not credentials_configured(boto_session)
            if dry_run:
                print(
                    "No AWS credentials found, so this is a dry run: nothing was sent. To "
                    f"submit, {CREDENTIALS_HELP}.",
                    file=sys.stderr,
                )
        elif not dry_run and not credentials_configured(boto_session):
            raise SageMakerError(f"No AWS credentials found: {CREDENTIALS_HELP}.")
        region = _or_example(
            lambda: resolve_region(job.region, boto_session), dry_run, EXAMPLE_REGION, "AWS region"
        )
    with aws_errors(region):
        session = None if dry_run else aws_session(region, boto_session)
        role = _or_example(
            lambda: resolve_role(job.role, session), dry_run and not job.role, EXAMPLE_ROLE, "role"
        )
        learner = learner_module_path(job.learner_module, str(job.hyperparameters["attention"]))
        if not sdk_installed():
            raise SageMakerError(sdk_missing())
        from sagemaker.core.helper.session_helper import Session

        sdk = Session(
            boto_session=_sdk_boto_session(session, region, role.split(":")[4]),
            default_bucket=job.bucket,
            sagemaker_config=DRY_RUN_SDK_CONFIG if dry_run else None,
        )
        s3 = None if dry_run else session.client("s3")
        data_uri = training_data_uri(job, sdk, s3, region)
        for uri in filter(None, (job.output_s3_uri, job.checkpoint_s3_uri) if s3 else ()):
            check_same_region(s3, uri, region, "The output location")
        with tempfile.TemporaryDirectory(prefix="former-sagemaker-") as tmp:
            source_dir = stage_source(Path(tmp) / "source", learner)
            shipped = sorted(
                p.relative_to(source_dir).as_posix() for p in source_dir.rglob("*") if p.is_file()
            )
            trainer, inputs = build_model_trainer(job, data_uri, source_dir, sdk, role)
            try:
                trainer.train(input_data_config=inputs or None, wait=False, logs=False)
                raise SageMakerError("The SageMaker SDK built no CreateTrainingJob request.")
            except _RequestCaptured as captured:
                request = captured.request
        if not dry_run:
            session.client("sagemaker").create_training_job(**request)
    return LaunchResult(
        request=request,
        job_name=request["TrainingJobName"],
        region=region,
        submitted=not dry_run,
        processes_per_instance=processes_per_instance(job),
        shipped_files=shipped,
    )
