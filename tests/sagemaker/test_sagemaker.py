"""The SageMaker launcher, offline: real submissions through SDK v3 against moto, and dry runs."""

from __future__ import annotations

import json
import os
import re
from datetime import date
from pathlib import Path

import pytest
from aws_fakes import (  # noqa: F401
    REGION,
    ROLE,
    aws,
    channel,
    no_telemetry,
    run_notebook_sagemaker_cell,
    workdir,
)
from conftest import REPO_ROOT

pytest.importorskip("sagemaker.train")

from former import sagemaker as launcher  # noqa: E402
from former.sagemaker import account, errors, job  # noqa: E402
from former.sagemaker.__main__ import main, parse_hyperparameter_args  # noqa: E402

# The SDK warns about its own internal imports; nothing for this project to act on.
pytestmark = pytest.mark.filterwarnings(
    "ignore:sagemaker.train.configs has been moved:DeprecationWarning"
)


def s3_objects(session) -> dict[str, list[str]]:
    """Every object in the mocked account, by bucket."""
    s3 = session.client("s3")
    return {
        bucket["Name"]: [
            o["Key"] for o in s3.list_objects_v2(Bucket=bucket["Name"]).get("Contents", [])
        ]
        for bucket in s3.list_buckets()["Buckets"]
    }


def s3_text(session, uri_prefix: str, name: str) -> str:
    bucket, prefix = account.split_s3_uri(uri_prefix)
    body = session.client("s3").get_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{name}")
    return body["Body"].read().decode()


def test_multi_gpu_job_is_submitted_with_everything_it_needs(
    aws, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(
        job, "today", lambda: date(2026, 9, 1)
    )  # the clock: which images AWS still supports
    result = launcher.launch_training_job(
        workdir / "reviews.csv",
        role=ROLE,
        instance_type="ml.g5.12xlarge",
        hyperparameters={"epochs": 2, "batch_size": 16, "download": False},
        checkpoint_s3_uri="s3://sagemaker-us-east-1-123456789012/checkpoints/run-1",
        max_run_seconds=3600,
        max_wait_seconds=7200,
        dry_run=False,
        boto_session=aws,
    )
    assert result.submitted and result.region == REGION
    request = result.request
    spec = request["AlgorithmSpecification"]
    assert spec["TrainingImage"] == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.10.0-gpu-py313"
    )
    assert (
        f"Training image: PyTorch 2.10.0, py313: {spec['TrainingImage']}" in capsys.readouterr().err
    )
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.12xlarge"
    assert request["RoleArn"] == ROLE
    assert request["HyperParameters"] == {
        "attention": "my_transformer_model:multihead_attention",
        "epochs": "2",
        "batch-size": "16",
        "download": "false",
    }
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 3600,
        "MaxWaitTimeInSeconds": 7200,
    }
    assert request["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    metrics = {m["Name"]: m["Regex"] for m in spec["MetricDefinitions"]}
    line = "epoch=1.25 step=98 train_loss=0.41 val_acc=0.873 val_examples=2000"
    assert {n: re.search(r, line).group(1) for n, r in metrics.items()} == {
        "epoch": "1.25",
        "step": "98",
        "train_loss": "0.41",
        "val_acc": "0.873",
    }
    # The service (moto) holds the job as submitted.
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=result.job_name)
    assert described["ResourceConfig"]["InstanceType"] == "ml.g5.12xlarge"

    # The local CSV went to the default bucket of the job's region, under its digest.
    data = channel(request, "training")
    assert re.fullmatch(
        r"s3://sagemaker-us-east-1-123456789012/former/data/[0-9a-f]{16}/reviews\.csv", data
    )
    code_prefix = channel(request, "code")
    bucket, prefix = account.split_s3_uri(code_prefix)
    code = {
        k.removeprefix(prefix).lstrip("/") for k in s3_objects(aws)[bucket] if k.startswith(prefix)
    }
    assert {"model.py", "my_transformer_model.py", "former/__init__.py", "requirements.txt"} <= code
    assert "former/container.py" in code and "former/attention.py" in code
    assert not any(p.startswith(("solutions/", "notebooks/", "tests/", ".venv/")) for p in code)
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in code)
    # Four GPUs: torchrun starts one process per GPU.
    drivers = channel(request, "sm_drivers")
    assert json.loads(s3_text(aws, drivers, "distributed.json"))["process_count_per_node"] == 4
    assert "torchrun_driver.py" in s3_text(aws, drivers, "sm_train.sh")
    assert json.loads(s3_text(aws, drivers, "sourcecode.json"))["entry_script"] == "model.py"


def test_launching_twice_on_one_session_submits_two_jobs_and_uploads_the_data_once(
    aws, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The second launch finds the same file itself ($FORMER_DATA_DIR) and reuses its upload."""
    options = {"role": ROLE, "dry_run": False, "boto_session": aws}
    first = launcher.launch_training_job(workdir / "reviews.csv", **options)
    monkeypatch.setenv("FORMER_DATA_DIR", str(workdir))
    second = launcher.launch_training_job(**options)
    assert capsys.readouterr().out.count("uploading reviews.csv") == 1
    assert first.submitted and second.submitted and first.job_name != second.job_name
    sagemaker = aws.client("sagemaker")
    for result in (first, second):
        assert sagemaker.describe_training_job(TrainingJobName=result.job_name)["TrainingJobName"]
    assert channel(first.request, "training") == channel(second.request, "training")
    data_keys = [
        k for keys in s3_objects(aws).values() for k in keys if k.startswith("former/data/")
    ]
    assert len(data_keys) == 1


@pytest.mark.parametrize(
    ("instance_type", "count", "per_instance", "driver"),
    [
        ("ml.g5.xlarge", 1, None, "basic_script_driver.py"),
        ("ml.g5.xlarge", 2, 1, "torchrun_driver.py"),  # two hosts, one GPU each: one job
        ("ml.m5.xlarge", 3, 1, "torchrun_driver.py"),  # CPU hosts too, gloo across them
    ],
)
def test_every_multi_instance_job_runs_as_one_torchrun_job(
    aws, workdir: Path, instance_type: str, count: int, per_instance: int | None, driver: str
) -> None:
    aws.client("s3").create_bucket(Bucket="course-bucket")
    result = launcher.launch_training_job(
        "s3://course-bucket/imdb/",
        role=ROLE,
        instance_type=instance_type,
        instance_count=count,
        hyperparameters={"attention": "sdpa"},
        spot=False,
        dry_run=False,
        boto_session=aws,
    )
    request = result.request
    assert request["ResourceConfig"]["InstanceCount"] == count
    assert request["EnableManagedSpotTraining"] is False
    assert "MaxWaitTimeInSeconds" not in request["StoppingCondition"]
    assert channel(request, "training") == "s3://course-bucket/imdb/"  # used in place
    drivers = channel(request, "sm_drivers")
    config = json.loads(s3_text(aws, drivers, "distributed.json"))
    assert config.get("process_count_per_node") == per_instance
    assert driver in s3_text(aws, drivers, "sm_train.sh")


def test_dry_run_prints_the_request_and_touches_no_aws(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys, no_telemetry: list
) -> None:
    import botocore.endpoint

    def no_network(*args, **kwargs):
        raise AssertionError("a dry run sent a request to AWS")

    monkeypatch.setattr(botocore.endpoint.Endpoint, "make_request", no_network)
    code = main(
        ["launch", "--data", str(workdir / "reviews.csv"), "--role", ROLE, "--region",
         "eu-west-1", "--instance-type", "ml.g5.12xlarge", "--epochs", "3", "--attention=sdpa",
         "--dry-run"]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    request = json.loads(out.out)
    image = request["AlgorithmSpecification"]["TrainingImage"]
    assert image.startswith("763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.")
    assert re.search(r":2\.\d+\.\d+-gpu-py3\d+$", image)
    assert request["HyperParameters"] == {"attention": "sdpa", "epochs": "3"}
    assert channel(request, "training").startswith(
        "s3://sagemaker-eu-west-1-123456789012/former/data/"
    )
    assert "4 process(es) per instance" in out.err
    assert "my_transformer_model.py" in out.err and "solutions" not in out.err
    assert no_telemetry == []


def test_without_credentials_the_notebook_call_falls_back_to_a_dry_run(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys, no_telemetry: list
) -> None:
    monkeypatch.setenv("SAGEMAKER_ROLE", ROLE)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    result = launcher.launch_training_job(workdir / "reviews.csv")
    assert not result.submitted
    assert result.request["RoleArn"] == ROLE
    assert "No AWS credentials found, so this is a dry run" in capsys.readouterr().err


def test_a_role_that_is_no_arn_is_a_clear_error(workdir: Path) -> None:
    with pytest.raises(launcher.SageMakerError, match="not an IAM role ARN"):
        launcher.launch_training_job(workdir / "reviews.csv", role="SageMakerRole", dry_run=True)


def test_without_a_role_or_region_only_a_dry_run_goes_ahead(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys, no_telemetry: list
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(launcher.SageMakerError, match="^No AWS region: .*AWS_DEFAULT_REGION"):
        launcher.launch_training_job(workdir / "reviews.csv", dry_run=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with pytest.raises(launcher.SageMakerError, match="^No IAM execution role .* SAGEMAKER_ROLE"):
        launcher.launch_training_job(workdir / "reviews.csv", dry_run=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    result = launcher.launch_training_job(workdir / "reviews.csv", dry_run=True)
    assert result.request["RoleArn"] == "arn:aws:iam::123456789012:role/SageMakerExecutionRole"
    assert result.region == "us-east-1"
    err = capsys.readouterr().err
    assert "No AWS region configured: the dry run shows us-east-1." in err
    assert "No role configured: the dry run shows arn:aws:iam::" in err


def test_region_comes_from_the_argument_the_environment_then_the_profile(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "no-aws-config").write_text("[profile course]\nregion = eu-central-1\n")
    monkeypatch.setenv("AWS_PROFILE", "course")
    assert account.resolve_region() == "eu-central-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert account.resolve_region() == "us-west-2"
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert account.resolve_region() == "ap-south-1"
    assert account.resolve_region("eu-west-1") == "eu-west-1"


def test_inside_sagemaker_the_execution_role_is_found(
    aws, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Studio writes the role in its metadata; a notebook instance is asked for its own."""
    metadata = workdir / "resource-metadata.json"
    monkeypatch.setattr(account, "SAGEMAKER_METADATA_FILE", metadata)
    studio_role = "arn:aws:iam::123456789012:role/service-role/StudioExecutionRole"
    metadata.write_text(json.dumps({"ExecutionRoleArn": studio_role, "DomainId": "d-1"}))
    assert account.resolve_role(None, aws) == studio_role

    aws.client("sagemaker").create_notebook_instance(
        NotebookInstanceName="lab", InstanceType="ml.t3.medium", RoleArn=ROLE
    )
    metadata.write_text(json.dumps({"ResourceName": "lab"}))
    assert account.resolve_role(None, aws) == ROLE
    monkeypatch.setenv("SAGEMAKER_ROLE", studio_role)
    assert account.resolve_role(None, aws) == studio_role  # the environment comes first


def test_missing_learner_module_or_data_is_caught_before_anything_is_built(
    workdir: Path, no_telemetry: list
) -> None:
    (workdir / "my_transformer_model.py").unlink()
    with pytest.raises(launcher.SageMakerError, match="%%writefile my_transformer_model.py"):
        launcher.launch_training_job(
            workdir / "reviews.csv", role=ROLE, region=REGION, dry_run=True
        )
    with pytest.raises(launcher.SageMakerError, match="does not exist"):
        launcher.launch_training_job(
            workdir / "nowhere.csv", role=ROLE, region=REGION, dry_run=True,
            hyperparameters={"attention": "sdpa"},
        )  # fmt: skip
    with pytest.raises(launcher.SageMakerError, match="No local IMDB data to upload"):
        launcher.launch_training_job(
            role=ROLE, region=REGION, dry_run=True, hyperparameters={"attention": "sdpa"}
        )


def test_unknown_launcher_arguments_become_hyperparameters() -> None:
    assert parse_hyperparameter_args(["--epochs", "3", "--attention=sdpa"]) == {
        "epochs": "3",
        "attention": "sdpa",
    }
    with pytest.raises(launcher.SageMakerError, match="needs a value"):
        parse_hyperparameter_args(["--epochs", "--lr", "0.1"])
    with pytest.raises(launcher.SageMakerError, match="--key value"):
        parse_hyperparameter_args(["stray"])
    assert job.normalise_hyperparameters({"batch_size": 8, "download": True}) == {
        "batch-size": "8",
        "download": "true",
    }


def test_gpu_counts_cover_the_default_and_multi_gpu_instances() -> None:
    assert job.gpus_per_instance("ml.g5.xlarge") == 1
    assert job.gpus_per_instance("ml.g5.12xlarge") == 4
    assert job.gpus_per_instance("ml.p4d.24xlarge") == 8
    assert job.gpus_per_instance("ml.m5.xlarge") == 0
    assert job.gpus_per_instance("ml.t3.medium") == 0
    assert job.gpus_per_instance("ml.c7i.2xlarge") == 0
    with pytest.raises(launcher.SageMakerError, match="--gpus-per-instance"):
        job.gpus_per_instance("ml.z9.mega")
    # Trainium starts with "ml.t" but is no CPU type, and the PyTorch image cannot use it.
    with pytest.raises(launcher.SageMakerError, match="Trainium/Inferentia .* pick a GPU type"):
        job.gpus_per_instance("ml.trn1.32xlarge")


@pytest.mark.parametrize(
    ("today", "local_torch", "chosen"),
    [
        (date(2026, 7, 1), "2.13.0", "2.10.0"),  # the newest supported
        (date(2026, 7, 1), "2.8.1", "2.8.0"),  # not newer than the torch that loads the model
        (date(2026, 9, 1), "2.8.1", "2.9.0"),  # 2.8 ended: the oldest supported
        (date(2026, 12, 4), "2.13.0", "2.10.0"),
        (date(2030, 1, 1), "2.13.0", "2.10.0"),  # none supported: the newest, flagged
    ],
)
def test_the_training_image_is_a_supported_one_for_the_local_torch(
    today: date, local_torch: str, chosen: str
) -> None:
    images = job.pytorch_training_images("us-east-1")  # the SDK's own image config
    assert job.choose_framework_version(local_torch, today, images) == chosen


def test_the_training_image_takes_its_python_version_from_the_sdk_and_says_what_it_chose(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from sagemaker.core import image_uris

    monkeypatch.setattr(job, "today", lambda: date(2026, 12, 4))
    config = image_uris.config_for_framework("pytorch")["training"]["versions"]
    uri = job.training_image("eu-west-1", "2.10", "ml.g5.xlarge")
    assert uri.endswith(f":2.10.0-gpu-{config['2.10.0']['py_versions'][-1]}")
    assert capsys.readouterr().err == f"Training image: PyTorch 2.10.0, py313: {uri}\n"
    job.training_image("eu-west-1", "2.8", "ml.m5.xlarge")
    assert "2.8.0, py312 (past its end of patch" in capsys.readouterr().err
    with pytest.raises(launcher.SageMakerError, match="No PyTorch 1.99 training image .* 2.10"):
        job.training_image("eu-west-1", "1.99", "ml.g5.xlarge")


def test_hyperparameters_reach_model_py_as_the_container_passes_them() -> None:
    """The SDK's container driver turns HyperParameters into argv; the entry point reads it back."""
    from sagemaker.train.container_drivers.common.utils import hyperparameters_to_cli_args

    from former import container

    sent = job.normalise_hyperparameters(
        {"epochs": 2, "batch_size": 16, "download": False, "final": True, "attention": "sdpa"}
    )
    args, unknown = container.parse_args(hyperparameters_to_cli_args(sent))
    assert unknown == []
    assert (args.epochs, args.batch_size, args.download, args.final) == (2, 16, False, True)
    assert args.attention == "sdpa"


def test_the_sdk_the_launcher_names_is_the_sagemaker_extra() -> None:
    """The line the notebook prints for a missing SDK installs what `make install` does."""
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert f'sagemaker = [\n    "{errors.SDK_REQUIREMENT}",\n]' in pyproject
    assert errors.SDK_REQUIREMENT in launcher.sdk_missing()


def test_without_credentials_the_notebook_cell_shows_the_job_it_would_submit(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys, no_telemetry: list
) -> None:
    monkeypatch.setenv("LAB_IMDB", str(workdir / "reviews.csv"))
    namespace = {
        "os": os,
        "GRADING": False,
        "QUICK": True,
        "MODULE": Path("my_transformer_model.py"),
    }
    run_notebook_sagemaker_cell(namespace)
    out = capsys.readouterr()
    assert re.fullmatch(
        r"dry run, nothing sent: former-classify-[0-9a-f]{4}-[0-9]+, 1 x ml\.g5\.xlarge, hyperparameters "
        r"\{'attention': 'my_transformer_model:multihead_attention', 'epochs': '1'\}\n",
        out.out,
    )
    assert "No AWS credentials found, so this is a dry run" in out.err
