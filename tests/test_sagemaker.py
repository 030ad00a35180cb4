"""The SageMaker launcher, offline: real submissions through SDK v3 against moto, and dry runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("sagemaker")
moto = pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")

from former import sagemaker as launcher  # noqa: E402

# The SDK warns about its own internal imports; nothing for this project to act on.
pytestmark = pytest.mark.filterwarnings(
    "ignore:sagemaker.train.configs has been moved:DeprecationWarning"
)

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
REGION = "us-east-1"
LEARNER_SOURCE = (
    "def multihead_attention(queries, keys, values, heads, mask=False):\n"
    "    raise NotImplementedError\n"
)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A notebook folder: the learner's module, a small CSV, no AWS configuration at all."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_transformer_model.py").write_text(LEARNER_SOURCE)
    rows = ["review,sentiment"] + [
        f'"a {"good" if i % 2 else "bad"} film number {i}",{"positive" if i % 2 else "negative"}'
        for i in range(20)
    ]
    (tmp_path / "reviews.csv").write_text("\n".join(rows) + "\n")
    for name in list(__import__("os").environ):
        if name.startswith(("AWS_", "SAGEMAKER_ROLE")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


@pytest.fixture
def no_telemetry(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record (and suppress) the SDK's telemetry requests; they go over HTTP, not botocore."""
    from sagemaker.core.telemetry import telemetry_logging

    sent: list = []
    monkeypatch.setattr(
        telemetry_logging, "_send_telemetry_request", lambda *a, **k: sent.append(a)
    )
    return sent


@pytest.fixture
def aws(workdir: Path, monkeypatch: pytest.MonkeyPatch, no_telemetry: list):
    """Fake credentials and a mocked AWS account."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    with moto.mock_aws():
        yield boto3.Session(region_name=REGION)


def s3_keys(session) -> dict[str, list[str]]:
    """Every object in the mocked account, grouped by channel folder (.../input/<channel>/...)."""
    s3 = session.client("s3")
    by_channel: dict[str, list[str]] = {}
    for bucket in s3.list_buckets()["Buckets"]:
        for item in s3.list_objects_v2(Bucket=bucket["Name"]).get("Contents", []):
            _, _, rest = item["Key"].partition("/input/")
            channel, _, path = rest.partition("/")
            by_channel.setdefault(channel, []).append(path)
    return by_channel


def s3_text(session, uri_prefix: str, name: str) -> str:
    bucket, _, prefix = uri_prefix.removeprefix("s3://").partition("/")
    body = session.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"]
    return body.read().decode()


def test_multi_gpu_job_is_submitted_with_everything_it_needs(aws, workdir: Path) -> None:
    result = launcher.launch_training_job(
        workdir / "reviews.csv",
        role=ROLE,
        region=REGION,
        instance_type="ml.g5.12xlarge",
        instance_count=1,
        hyperparameters={"epochs": 2, "batch_size": 16, "download": False},
        checkpoint_s3_uri="s3://course-bucket/checkpoints/run-1",
        max_run_seconds=3600,
        max_wait_seconds=7200,
        dry_run=False,
    )
    assert result.submitted
    request = result.request
    spec = request["AlgorithmSpecification"]
    assert spec["TrainingImage"] == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8-gpu-py312"
    )
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.12xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == 1
    assert request["RoleArn"] == ROLE
    assert request["HyperParameters"] == {
        "epochs": "2",
        "batch-size": "16",
        "download": "false",
        "attention": "my_transformer_model:multihead_attention",
    }
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 3600,
        "MaxWaitTimeInSeconds": 7200,
    }
    assert request["CheckpointConfig"] == {
        "S3Uri": "s3://course-bucket/checkpoints/run-1",
        "LocalPath": "/opt/ml/checkpoints",
    }
    metrics = {m["Name"]: m["Regex"] for m in spec["MetricDefinitions"]}
    assert set(metrics) == {"epoch", "train_loss", "val_acc"}
    line = "epoch=1.25 step=98 train_loss=0.41 val_acc=0.873 val_examples=2000"
    assert re.search(metrics["epoch"], line).group(1) == "1.25"
    assert re.search(metrics["train_loss"], line).group(1) == "0.41"
    assert re.search(metrics["val_acc"], line).group(1) == "0.873"

    # The service (moto) holds the job as submitted.
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=result.job_name)
    assert described["ResourceConfig"]["InstanceType"] == "ml.g5.12xlarge"
    assert described["AlgorithmSpecification"]["TrainingImage"] == spec["TrainingImage"]

    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    assert set(channels) == {"training", "code", "sm_drivers"}
    uploaded = s3_keys(aws)
    assert uploaded["training"] == ["reviews.csv"]
    code = set(uploaded["code"])
    assert {"model.py", "my_transformer_model.py", "former/__init__.py", "requirements.txt"} <= code
    assert "former/sagemaker.py" in code and "former/attention.py" in code
    assert not any(p.startswith(("solutions/", "notebooks/", "tests/", ".venv/")) for p in code)
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in code)

    # Four GPUs: torchrun starts one process per GPU.
    drivers = channels["sm_drivers"]["DataSource"]["S3DataSource"]["S3Uri"]
    assert json.loads(s3_text(aws, drivers, "distributed.json"))["process_count_per_node"] == 4
    train_script = s3_text(aws, drivers, "sm_train.sh")
    assert "torchrun_driver.py" in train_script
    assert "install_requirements.py requirements.txt" in train_script
    source_code = json.loads(s3_text(aws, drivers, "sourcecode.json"))
    assert source_code["entry_script"] == "model.py"


def test_single_gpu_on_demand_job_runs_plain_python(aws, workdir: Path) -> None:
    result = launcher.launch_training_job(
        "s3://course-bucket/imdb/",
        role=ROLE,
        region=REGION,
        hyperparameters={"attention": "sdpa", "epochs": 1},
        spot=False,
        dry_run=False,
    )
    request = result.request
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert request["EnableManagedSpotTraining"] is False
    assert "MaxWaitTimeInSeconds" not in request["StoppingCondition"]
    training = next(c for c in request["InputDataConfig"] if c["ChannelName"] == "training")
    assert training["DataSource"]["S3DataSource"]["S3Uri"] == "s3://course-bucket/imdb/"
    assert "training" not in s3_keys(aws)  # an S3 URI is used in place, never re-uploaded
    assert result.processes_per_instance == 1
    drivers = next(c for c in request["InputDataConfig"] if c["ChannelName"] == "sm_drivers")
    uri = drivers["DataSource"]["S3DataSource"]["S3Uri"]
    assert json.loads(s3_text(aws, uri, "distributed.json")) == {}
    assert "basic_script_driver.py" in s3_text(aws, uri, "sm_train.sh")


def test_dry_run_prints_the_request_and_touches_no_aws(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys, no_telemetry: list
) -> None:
    import botocore.endpoint

    def no_network(*args, **kwargs):
        raise AssertionError("a dry run sent a request to AWS")

    monkeypatch.setattr(botocore.endpoint.Endpoint, "make_request", no_network)
    archive = workdir / "aclImdb_v1.tar.gz"
    with archive.open("wb") as file:
        file.truncate(9 * 2**20)  # large enough for a multipart upload
    code = launcher.main(
        [
            "launch",
            "--data",
            str(archive),
            "--role",
            ROLE,
            "--region",
            "eu-west-1",
            "--instance-type",
            "ml.g5.12xlarge",
            "--epochs",
            "3",
            "--attention=sdpa",
            "--dry-run",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    request = json.loads(out.out)
    assert request["AlgorithmSpecification"]["TrainingImage"].startswith(
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2."
    )
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith("-gpu-py312")
    assert request["HyperParameters"] == {"epochs": "3", "attention": "sdpa"}
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.12xlarge"
    assert request["EnableManagedSpotTraining"] is True
    training = next(c for c in request["InputDataConfig"] if c["ChannelName"] == "training")
    assert training["DataSource"]["S3DataSource"]["S3Uri"].endswith("/training/aclImdb_v1.tar.gz")
    assert "4 process(es) per instance (torchrun)" in out.err
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
    assert "No AWS credentials found" in capsys.readouterr().err
    with pytest.raises(launcher.LaunchError, match="aws configure"):
        launcher.launch_training_job(workdir / "reviews.csv", dry_run=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"region": REGION}, "SAGEMAKER_ROLE"),
        ({"role": "SageMakerRole", "region": REGION}, "not an IAM role ARN"),
        ({"role": ROLE}, "AWS_DEFAULT_REGION"),
    ],
)
def test_missing_role_or_region_is_a_clear_error(workdir: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(launcher.LaunchError, match=message):
        launcher.launch_training_job(workdir / "reviews.csv", dry_run=True, **kwargs)


def test_missing_learner_module_or_data_is_caught_before_anything_is_built(
    workdir: Path, no_telemetry: list
) -> None:
    (workdir / "my_transformer_model.py").unlink()
    with pytest.raises(launcher.LaunchError, match="%%writefile my_transformer_model.py"):
        launcher.launch_training_job(
            workdir / "reviews.csv", role=ROLE, region=REGION, dry_run=True
        )
    with pytest.raises(launcher.LaunchError, match="does not exist"):
        launcher.launch_training_job(
            workdir / "nowhere.csv",
            role=ROLE,
            region=REGION,
            hyperparameters={"attention": "sdpa"},
            dry_run=True,
        )


def test_unknown_launcher_arguments_become_hyperparameters() -> None:
    assert launcher.parse_hyperparameter_args(["--epochs", "3", "--attention=sdpa"]) == {
        "epochs": "3",
        "attention": "sdpa",
    }
    with pytest.raises(launcher.LaunchError, match="needs a value"):
        launcher.parse_hyperparameter_args(["--epochs", "--lr", "0.1"])
    with pytest.raises(launcher.LaunchError, match="--key value"):
        launcher.parse_hyperparameter_args(["stray"])
    assert launcher.normalise_hyperparameters({"batch_size": 8, "download": True}) == {
        "batch-size": "8",
        "download": "true",
    }


def test_gpu_counts_cover_the_default_and_multi_gpu_instances() -> None:
    assert launcher.gpus_per_instance("ml.g5.xlarge") == 1
    assert launcher.gpus_per_instance("ml.g5.12xlarge") == 4
    assert launcher.gpus_per_instance("ml.p4d.24xlarge") == 8
    assert launcher.gpus_per_instance("ml.m5.xlarge") == 0
    with pytest.raises(launcher.LaunchError, match="--gpus-per-instance"):
        launcher.gpus_per_instance("ml.z9.mega")


def test_hyperparameters_reach_model_py_as_the_container_passes_them() -> None:
    """The SDK's container driver turns HyperParameters into argv; the entry point reads it back."""
    from sagemaker.train.container_drivers.common.utils import hyperparameters_to_cli_args

    from former import container

    sent = launcher.normalise_hyperparameters(
        {"epochs": 2, "batch_size": 16, "download": False, "final": True, "attention": "sdpa"}
    )
    args, unknown = container.parse_args(hyperparameters_to_cli_args(sent))
    assert unknown == []
    assert (args.epochs, args.batch_size, args.download, args.final) == (2, 16, False, True)
    assert args.attention == "sdpa"
