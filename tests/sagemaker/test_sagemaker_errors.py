"""AWS failures reach the learner as one line that says what to do.

moto answers what it can; an error AWS would send and moto cannot (expired
token, denied action, quota) is stubbed at the boto level with botocore's
Stubber, on the one client and call it concerns.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aws_fakes import (  # noqa: F401
    REGION,
    ROLE,
    JobTimeline,
    aws,
    no_telemetry,
    run_notebook_sagemaker_cell,
    workdir,
)

pytest.importorskip("sagemaker.train")

from former import sagemaker  # noqa: E402
from former.sagemaker.__main__ import main  # noqa: E402
from former.sagemaker.errors import explain  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:sagemaker.train.configs has been moved:DeprecationWarning"
)
DENIED = (
    "User: arn:aws:sts::123456789012:assumed-role/Learner/alice is not authorized to perform: "
    "sagemaker:CreateTrainingJob on resource: arn:aws:sagemaker:us-east-1:123456789012:"
    "training-job/former-classify-1 because no identity-based policy allows the "
    "sagemaker:CreateTrainingJob action"
)
SPOT_QUOTA = (
    "The account-level service limit 'ml.g5.xlarge for spot training job usage' is 0 Instances, "
    "with current utilization of 0 Instances and a request delta of 1 Instances. Please use AWS "
    "Service Quotas to request an increase for this quota."
)


def stub(session, monkeypatch, service: str, *errors: tuple[str, str, str, int]):
    """Answer these calls of ``session``'s ``service`` client with errors: (method, code, message, status)."""
    from botocore.stub import Stubber

    client = session.client(service)
    stubber = Stubber(client)
    for method, code, message, status in errors:
        stubber.add_client_error(method, code, message, status)
    stubber.activate()
    make_client = session.client
    monkeypatch.setattr(
        session, "client", lambda name, **kw: client if name == service else make_client(name, **kw)
    )
    return stubber


def launch(session, data, **kwargs):
    return sagemaker.launch_training_job(
        data, role=ROLE, hyperparameters={"attention": "sdpa"}, dry_run=False,
        boto_session=session, **kwargs,
    )  # fmt: skip


def test_no_credentials(workdir: Path, no_telemetry) -> None:
    with pytest.raises(sagemaker.SageMakerError) as raised:
        launch(None, workdir / "reviews.csv", region=REGION)
    assert str(raised.value).startswith("No AWS credentials found: run `aws configure`")
    with pytest.raises(sagemaker.SageMakerError, match="^No AWS credentials found: .*AWS_PROFILE"):
        sagemaker.job_status("former-classify-1", region=REGION)


def test_expired_token(aws, monkeypatch) -> None:
    stub(aws, monkeypatch, "sagemaker",
         ("describe_training_job", "ExpiredTokenException",
          "The security token included in the request is expired", 400))  # fmt: skip
    with pytest.raises(sagemaker.SageMakerError) as raised:
        sagemaker.follow("former-classify-1", boto_session=aws)
    assert str(raised.value).startswith("Your AWS credentials have expired: run `aws sso login`")
    from botocore.exceptions import TokenRetrievalError

    sso = TokenRetrievalError(provider="sso", error_msg="the SSO session has expired")
    assert explain(sso).startswith("Your AWS credentials have expired")


def test_access_denied_names_the_action(aws, workdir: Path, monkeypatch) -> None:
    stub(aws, monkeypatch, "sagemaker",
         ("create_training_job", "AccessDeniedException", DENIED, 400))  # fmt: skip
    with pytest.raises(sagemaker.SageMakerError) as raised:
        launch(aws, workdir / "reviews.csv")
    assert str(raised.value).startswith(
        "AWS denied sagemaker:CreateTrainingJob to arn:aws:sts::123456789012:assumed-role/"
        "Learner/alice: ask your account administrator to allow sagemaker:CreateTrainingJob"
    )


def test_access_denied_on_the_data_upload_names_the_s3_action(
    aws, workdir: Path, monkeypatch
) -> None:
    """S3 says only "Access Denied": the action comes from the call that failed."""
    stub(aws, monkeypatch, "s3",
         ("head_object", "404", "Not Found", 404),
         ("put_object", "AccessDenied", "Access Denied", 403))  # fmt: skip
    with pytest.raises(sagemaker.SageMakerError, match=r"^AWS denied s3:PutObject: ask your"):
        launch(aws, workdir / "reviews.csv")


@pytest.mark.parametrize("spot", [True, False])
def test_resource_limit_names_the_quota_and_how_to_get_more(
    aws, workdir: Path, monkeypatch, spot: bool
) -> None:
    message = SPOT_QUOTA if spot else SPOT_QUOTA.replace(" for spot training", " for training")
    stub(aws, monkeypatch, "sagemaker",
         ("create_training_job", "ResourceLimitExceeded", message, 400))  # fmt: skip
    with pytest.raises(sagemaker.SageMakerError) as raised:
        launch(aws, workdir / "reviews.csv", spot=spot)
    text = str(raised.value)
    quota = (
        "ml.g5.xlarge for spot training job usage"
        if spot
        else "ml.g5.xlarge for training job usage"
    )
    assert text.startswith(
        f"Your account may run 0 instance(s) under the SageMaker quota '{quota}'"
    )
    assert "servicequotas/home/services/sagemaker/quotas" in text
    if spot:
        assert "This is the spot quota: launch with spot=False (--no-spot)" in text
        assert "on-demand quota 'ml.g5.xlarge for training job usage'" in text
    else:
        assert "This is the on-demand quota: try spot=True" in text


def test_validation_exception_says_what_was_rejected(aws, workdir: Path, monkeypatch) -> None:
    reason = "Could not assume role arn:aws:iam::123456789012:role/SageMakerRole."
    stub(aws, monkeypatch, "sagemaker",
         ("create_training_job", "ValidationException", reason, 400))  # fmt: skip
    with pytest.raises(sagemaker.SageMakerError) as raised:
        launch(aws, workdir / "reviews.csv")
    assert str(raised.value).startswith(f"SageMaker rejected CreateTrainingJob: {reason} Change")


def test_data_in_another_region_is_refused_before_submitting(aws) -> None:
    aws.client("s3", region_name="eu-west-1").create_bucket(
        Bucket="imdb-in-ireland", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    with pytest.raises(sagemaker.SageMakerError) as raised:
        launch(aws, "s3://imdb-in-ireland/imdb/")
    assert str(raised.value).startswith(
        "The training data s3://imdb-in-ireland/imdb/ is in region eu-west-1, the job in "
        "us-east-1: launch with region='eu-west-1' (--region eu-west-1), or copy the data"
    )
    assert aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_a_failed_job_shows_its_reason_and_last_log_lines(aws, workdir: Path, capsys) -> None:
    launched = launch(aws, workdir / "reviews.csv")
    reason = "AlgorithmError: model.py: error: attention 'flash': Unknown attention 'flash'"
    lines = ["data: IMDB (IMDB CSV /opt/ml/input/data/training/reviews.csv)", f"model.py: error: {reason[16:]}"]  # fmt: skip
    timeline = JobTimeline(aws, launched.job_name, lines, None, failure=reason)
    with pytest.raises(sagemaker.JobFailedError) as raised:
        sagemaker.follow(launched.job_name, boto_session=aws, sleep=timeline.advance)
    text = str(raised.value)
    assert text.startswith(f"Training job {launched.job_name} failed: {reason}. Fix what it names")
    assert text.endswith("\n    " + "\n    ".join(lines))
    assert "Failed after" in capsys.readouterr().out


def test_an_unknown_job_name_is_one_line_on_the_command_line(aws, capsys) -> None:
    with pytest.raises(sagemaker.SageMakerError, match="Check the job name and the region"):
        sagemaker.fetch_model("former-classify-nope", boto_session=aws)
    assert main(["status", "former-classify-nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Could not find training job") and err.count("\n") == 1
    assert "Traceback" not in err


def test_without_the_sdk_every_call_says_how_to_add_it(monkeypatch, capsys) -> None:
    """A `make lab` environment has neither the SDK nor boto3: one line, and the cell says it too."""
    import sys

    for name in ("boto3", "botocore", "sagemaker"):
        monkeypatch.setitem(sys.modules, name, None)  # `import boto3` now fails, as without it
    monkeypatch.setattr(sagemaker, "sdk_installed", lambda: False)
    with pytest.raises(sagemaker.SageMakerError) as raised:
        sagemaker.job_status("former-classify-1", region=REGION)
    assert str(raised.value) == sagemaker.sdk_missing()
    assert "pip install 'sagemaker-train>=1.27,<2'" in str(raised.value)

    run_notebook_sagemaker_cell({"GRADING": False})
    assert capsys.readouterr().out == (
        f"{sagemaker.sdk_missing()} Or set INSTALL_SAGEMAKER_SDK = True in this cell.\n"
    )


def test_a_role_the_sdk_refuses_is_one_line_before_anything_is_sent(
    aws, workdir: Path, monkeypatch
) -> None:
    """SDK v3 simulates the role's policies (IAM's SimulatePrincipalPolicy, which moto lacks:
    answered here as AWS answers for a role without the EC2 network-interface permissions)."""
    from botocore import handlers
    from botocore.awsrequest import AWSResponse

    def simulate(model, params, **_):
        body = params["body"]  # the query request's fields: ActionNames.member.N=...
        actions = [v for k, v in body.items() if k.startswith("ActionNames.member.")]
        results = [
            {"EvalActionName": a, "EvalDecision": "implicitDeny" if "ec2:" in a else "allowed"}
            for a in actions
        ]
        response = AWSResponse("https://iam.amazonaws.com/", 200, {}, None)
        return response, {"EvaluationResults": results, "IsTruncated": False}

    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "true")
    hook = ("before-call.iam.SimulatePrincipalPolicy", simulate)
    monkeypatch.setattr(handlers, "BUILTIN_HANDLERS", [*handlers.BUILTIN_HANDLERS, hook])
    with pytest.raises(sagemaker.SageMakerError) as raised:
        launch(aws, workdir / "reviews.csv")
    text = str(raised.value)
    assert text.startswith(f"The SageMaker SDK refused the role {ROLE} before sending anything: ")
    assert "ec2:CreateNetworkInterface" in text and "\n" not in text
    assert "--role, $SAGEMAKER_ROLE" in text
    assert aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_a_failed_or_stopped_job_says_there_is_no_model_to_wait_for(aws, workdir: Path) -> None:
    failed = launch(aws, workdir / "reviews.csv")
    reason = "AlgorithmError: model.py: error: out of memory"
    timeline = JobTimeline(aws, failed.job_name, [], None, failure=reason)
    for _ in timeline.STEPS:
        timeline.advance()
    with pytest.raises(sagemaker.SageMakerError) as raised:
        sagemaker.fetch_model(failed.job_name, workdir / "models", boto_session=aws)
    assert str(raised.value) == (
        f"Training job {failed.job_name} is Failed (Failed) and has no model ({reason}): it will "
        "not get one, so fix what stopped it and launch it again."
    )

    stopped = launch(aws, workdir / "reviews.csv")
    timeline = JobTimeline(aws, stopped.job_name, [], None)
    timeline.job.training_job_status, timeline.job.secondary_status = "Stopped", "Stopped"
    with pytest.raises(sagemaker.SageMakerError) as raised:
        sagemaker.fetch_model(stopped.job_name, workdir / "models", boto_session=aws)
    assert "is Stopped (Stopped) and has no model: it will not get one" in str(raised.value)
    assert "follow(" not in str(raised.value)


def test_log_lines_go_on_past_an_empty_page(aws) -> None:
    """CloudWatch may answer a page with no events in the middle of a stream; only a page that
    returns the token it was asked with is the end."""
    from botocore.stub import Stubber

    from former.sagemaker.progress import LOG_GROUP, new_log_lines

    logs = aws.client("logs")
    stubber = Stubber(logs)
    stream = "former-classify-1/algo-1-1700000000"
    stubber.add_response("describe_log_streams", {"logStreams": [{"logStreamName": stream}]})
    pages = [  # (events, the token asked with, the token handed back)
        (["epoch=0.5 step=10 train_loss=0.69 val_acc=0.55"], None, "f/1"),
        ([], "f/1", "f/2"),
        (["epoch=1 step=20 train_loss=0.5 val_acc=0.6"], "f/2", "f/3"),
        ([], "f/3", "f/3"),
    ]
    for events, asked, handed in pages:
        expected = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
        stubber.add_response(
            "get_log_events",
            {
                "events": [{"message": m + "\n", "timestamp": 0} for m in events],
                "nextForwardToken": handed,
            },
            {**expected, **({"nextToken": asked} if asked else {})},
        )
    with stubber:
        lines = list(new_log_lines(logs, "former-classify-1", {}))
    assert lines == [pages[0][0][0], pages[2][0][0]]
    stubber.assert_no_pending_responses()


def test_a_setting_the_sdk_rejects_is_one_line() -> None:
    """The SDK validates its request objects (pydantic) before sending anything."""
    from sagemaker.core.training import configs

    with pytest.raises(Exception) as raised:
        configs.Compute(instance_type="ml.g5.xlarge", instance_count="many")
    assert explain(raised.value) == (
        "The SageMaker SDK refused the job before sending it: Compute instance_count: Input "
        "should be a valid integer, unable to parse string as an integer. Change the setting it "
        "names (python -m former.sagemaker launch --help) and try again."
    )


def test_a_value_the_sdk_itself_rejects_is_one_line() -> None:
    from sagemaker.core import image_uris

    with pytest.raises(ValueError) as raised:
        image_uris.retrieve("pytorch", "us-east-1", "0.0.1", "py312", "ml.g5.xlarge")
    line = explain(raised.value)
    assert line.startswith("The SageMaker SDK refused the job before sending it: ")
    assert "\n" not in line
    assert explain(ValueError("raised by this project, not the SDK")) is None
