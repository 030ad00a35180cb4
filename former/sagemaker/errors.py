"""AWS failures as one line that says what to do: every public call runs inside aws_errors."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

SDK_REQUIREMENT = "sagemaker-train>=1.27,<2"  # the [sagemaker] extra of pyproject.toml
CREDENTIALS_HELP = (
    "run `aws configure` (access keys) or `aws sso login --profile NAME` and set AWS_PROFILE=NAME"
)
EXPIRED = (
    "Your AWS credentials have expired: run `aws sso login` (or fetch new temporary keys "
    "for AWS_SESSION_TOKEN) and run this again."
)
NO_REGION = (
    "No AWS region: pass region='us-east-1' (--region us-east-1), set AWS_DEFAULT_REGION, "
    "or add 'region = ...' to your profile in ~/.aws/config."
)
EXPIRED_CODES = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"}
UNKNOWN_KEY_CODES = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
}
DENIED_CODES = {"AccessDenied", "AccessDeniedException", "403", "Forbidden"}
VALIDATION_CODES = {"ValidationException", "ValidationError"}
# "The account-level service limit 'ml.g5.xlarge for spot training job usage' is 0 Instances"
QUOTA = re.compile(r"service limit '([^']+)' is (\d+)")


class SageMakerError(RuntimeError):
    """A SageMaker job could not be launched, followed or fetched; the message says what to do."""


class JobFailedError(SageMakerError):
    """The training job ended as Failed: its reason and the last lines it logged."""

    def __init__(self, job_name: str, reason: str, last_lines: Sequence[str]) -> None:
        self.job_name, self.reason, self.last_lines = job_name, reason, list(last_lines)
        tail = "".join(f"\n    {line}" for line in self.last_lines)
        super().__init__(
            f"Training job {job_name} failed: {reason}. Fix what it names and launch again"
            + (f"; its last log lines:{tail}" if tail else ".")
        )


def sdk_missing() -> str:
    """How to add the SDK (a ``make lab`` environment has none)."""
    return (
        f"The SageMaker SDK is not installed: run `pip install '{SDK_REQUIREMENT}'` "
        "(in the notebook `%pip install ...`, or `make install`), then run this again."
    )


@contextmanager
def aws_errors(region: str | None = None) -> Iterator[None]:
    """AWS SDK exceptions raised in the block, as :class:`SageMakerError`."""
    try:
        yield
    except SageMakerError:
        raise
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] not in ("boto3", "botocore", "sagemaker"):
            raise
        raise SageMakerError(sdk_missing()) from error
    except Exception as error:
        message = explain(error, region)
        if message is None:
            raise
        raise SageMakerError(message) from error


def explain(error: BaseException, region: str | None = None) -> str | None:
    """One actionable line for an AWS error (or one it wraps); None when it is not AWS's."""
    try:
        from botocore import exceptions as aws
    except ModuleNotFoundError:  # no boto, so no AWS error either
        return None
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, (aws.ClientError, aws.BotoCoreError)):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, aws.ClientError):
        return explain_client_error(cause, region)
    if cause is None:
        return sdk_refusal(error)
    if isinstance(cause, (aws.NoCredentialsError, aws.PartialCredentialsError)):
        return f"No AWS credentials found: {CREDENTIALS_HELP}, then run this again."
    if isinstance(cause, (aws.TokenRetrievalError, aws.SSOError, aws.CredentialRetrievalError)):
        return EXPIRED
    if isinstance(cause, aws.ProfileNotFound):
        return f"{cause}: check AWS_PROFILE against the profiles in ~/.aws/config."
    if isinstance(cause, aws.NoRegionError):
        return NO_REGION
    if isinstance(cause, aws.EndpointConnectionError):
        return f"Cannot reach AWS ({cause}): check your network and the region name {region!r}."
    return f"AWS call failed: {cause}" if isinstance(cause, aws.BotoCoreError) else None


def sdk_refusal(error: BaseException) -> str | None:
    """The line for a request the SageMaker SDK refused before sending it, else None."""
    if type(error).__name__ == "RoleValidationError":
        return role_refused(str(error))
    if not (type(error).__module__.startswith(("sagemaker.", "pydantic")) or raised_in_sdk(error)):
        return None
    if type(error).__name__ == "ValidationError" and hasattr(error, "errors"):
        first = error.errors()[0]  # pydantic: which setting of which SDK object, and why
        where = ".".join(str(part) for part in first["loc"][:1])
        reason = f"{error.title} {where}: {first['msg']}."
    else:
        reason = " ".join(str(error).strip().splitlines()[:1]) or type(error).__name__
    return (
        f"The SageMaker SDK refused the job before sending it: {reason} Change the setting it "
        "names (python -m former.sagemaker launch --help) and try again."
    )


def raised_in_sdk(error: BaseException) -> bool:
    """Whether the SageMaker SDK's own code raised ``error`` (a ValueError, say)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith("sagemaker.")


def role_refused(message: str) -> str:
    """The SDK's several-line RoleValidationError in one line: which role lacks what."""
    role = re.search(r"IAM role '([^']+)'", message)
    missing = re.search(r"(?:Missing|Required) permissions: (.+)", message)
    who = f"the role {role.group(1)}" if role else "no role (none could be found for you)"
    if "trust policy" in message:
        lacks = "a trust policy that lets sagemaker.amazonaws.com assume it"
    else:
        lacks = f"permissions {missing.group(1).strip()}" if missing else "permissions it checks"
    return (
        f"The SageMaker SDK refused {who} before sending anything: it lacks {lacks}. Ask your "
        "account administrator to give the role what it lacks, or pass a role that has it "
        "(--role, $SAGEMAKER_ROLE)."
    )


def explain_client_error(error, region: str | None) -> str:
    """The line for an error the service answered, by its code."""
    info = error.response.get("Error", {})
    code, message = str(info.get("Code", "")), " ".join(str(info.get("Message", "")).split())
    operation = error.operation_name
    if code in EXPIRED_CODES:
        return EXPIRED
    if code in UNKNOWN_KEY_CODES:
        return (
            f"AWS does not accept these credentials ({code}): the key or its secret is wrong "
            f"or was deleted; {CREDENTIALS_HELP}."
        )
    if code in DENIED_CODES:
        return access_denied(operation, message)
    if code == "ResourceLimitExceeded":
        return quota_exceeded(message, region)
    if code in VALIDATION_CODES and re.search(r"not f(ind|ound)", message):
        return f"{message} Check the job name and the region ({region}): `status` lists jobs."
    if code in VALIDATION_CODES:
        return (
            f"SageMaker rejected {operation}: {message} Change the setting it names "
            "(python -m former.sagemaker launch --help) and try again."
        )
    if code in ("NoSuchBucket", "NoSuchKey", "404", "NotFound"):
        what = f"bucket {info['BucketName']}" if info.get("BucketName") else "the object"
        return f"S3 has no {what} ({operation}: {code}): check the s3:// URI and its region."
    return f"AWS {operation} failed: {code}: {message}"


def access_denied(operation: str, message: str) -> str:
    """Name the action AWS refused: its message says it for most services; S3's does not."""
    action = re.search(r"perform: ([\w-]+:\w+)", message)
    who = re.search(r"User: (\S+)", message)
    s3_actions = {"HeadObject": "s3:GetObject", "HeadBucket": "s3:ListBucket"}
    s3_action = f"s3:{operation}" if operation.endswith(("Object", "Bucket")) else operation
    denied = action.group(1) if action else s3_actions.get(operation, s3_action)
    return (
        f"AWS denied {denied}" + (f" to {who.group(1)}" if who else "") + ": ask your account "
        f"administrator to allow {denied} for your user or role (the SageMaker execution role "
        "needs its own S3 access too), then run this again."
    )


def quota_exceeded(message: str, region: str | None) -> str:
    """Which quota, spot or on-demand, and where to ask for more."""
    found = QUOTA.search(message)
    if not found:
        return f"A SageMaker quota is too low: {message} Ask for more in Service Quotas."
    quota, limit = found.group(1), int(found.group(2))
    if "spot" in quota:
        switch = (
            f"This is the spot quota: launch with spot=False (--no-spot) to use the on-demand "
            f"quota '{quota.replace('spot training job', 'training job')}' instead, or ask for more"
        )
    else:
        switch = "This is the on-demand quota: try spot=True (the default), or ask for more"
    console = f"https://{region or 'us-east-1'}.console.aws.amazon.com/servicequotas/home"
    return (
        f"Your account may run {limit} instance(s) under the SageMaker quota '{quota}' in "
        f"{region}, too few for this job. {switch} in Service Quotas ({console}/services/"
        f"sagemaker/quotas, search for '{quota}'); increases can take a day, a smaller "
        "instance type may already be allowed."
    )
