"""Which AWS region, session, execution role and S3 data a job uses: one answer for every command.

Region: the argument, else ``$AWS_REGION`` / ``$AWS_DEFAULT_REGION``, else the
profile's (``$AWS_PROFILE`` or default, ``~/.aws/config``). Role: the argument,
else ``$SAGEMAKER_ROLE``, else inside SageMaker Studio or a notebook instance the
execution role of the space. Local training data go once to the session's
default bucket in the job's region; data already in S3 must be in that region.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from former.sagemaker.errors import SageMakerError, no_region

ROLE_ENV_VARS = ("SAGEMAKER_ROLE", "SAGEMAKER_ROLE_ARN")
REGION_ENV_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")
# Written by SageMaker Studio and notebook instances; absent everywhere else.
SAGEMAKER_METADATA_FILE = Path("/opt/ml/metadata/resource-metadata.json")
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/.+")
DATA_PREFIX = "former/data"


def resolve_region(region: str | None = None, boto_session: Any = None) -> str:
    """The job's region: argument, environment, the given session's, the profile's."""
    region = region or next((os.environ[v] for v in REGION_ENV_VARS if os.environ.get(v)), None)
    if not region and boto_session is not None:
        region = boto_session.region_name
    if not region:
        import boto3

        region = boto3.Session().region_name
    if not region:
        raise SageMakerError(no_region())
    return region


def aws_session(region: str, boto_session: Any = None) -> Any:
    """A boto3 session for ``region``: the caller's (which must be for that region) or a new one."""
    import boto3

    if boto_session is None:
        return boto3.Session(region_name=region)
    if boto_session.region_name != region:
        raise SageMakerError(
            f"The boto3 session is for region {boto_session.region_name!r} and the job for "
            f"{region!r}: pass region={boto_session.region_name!r} or a session for {region!r}."
        )
    return boto_session


def credentials_configured(boto_session: Any = None) -> bool:
    """Whether boto3 finds AWS credentials (environment, ~/.aws, SSO, instance role)."""
    import boto3

    return (boto_session or boto3.Session()).get_credentials() is not None


def resolve_role(role: str | None = None, boto_session: Any = None) -> str:
    """The execution role ARN: argument, ``$SAGEMAKER_ROLE``, else the one SageMaker runs us as."""
    role = role or next((os.environ[v] for v in ROLE_ENV_VARS if os.environ.get(v)), None)
    if not role and SAGEMAKER_METADATA_FILE.exists() and boto_session is not None:
        role = studio_execution_role(boto_session)
    if not role:
        raise SageMakerError(
            "No IAM execution role for the training job: pass role='arn:aws:iam::<account>:"
            "role/<name>' (--role) or set SAGEMAKER_ROLE; the role needs SageMaker training "
            "permissions and access to your S3 bucket."
        )
    if not ROLE_ARN.fullmatch(role):
        raise SageMakerError(
            f"Role {role!r} is not an IAM role ARN: pass the full ARN, e.g. "
            "arn:aws:iam::123456789012:role/SageMakerExecutionRole (IAM console, Roles)."
        )
    return role


def studio_execution_role(boto_session: Any) -> str | None:
    """The execution role of this Studio space or notebook instance, from SageMaker's metadata."""
    metadata = json.loads(SAGEMAKER_METADATA_FILE.read_text())
    if metadata.get("ExecutionRoleArn"):
        return metadata["ExecutionRoleArn"]
    client = boto_session.client("sagemaker")
    if not metadata.get("DomainId"):
        name = metadata["ResourceName"]
        return client.describe_notebook_instance(NotebookInstanceName=name)["RoleArn"]
    profile = client.describe_user_profile(
        DomainId=metadata["DomainId"], UserProfileName=metadata["UserProfileName"]
    )
    role = profile.get("UserSettings", {}).get("ExecutionRole")
    if role:
        return role
    domain = client.describe_domain(DomainId=metadata["DomainId"])
    return domain["DefaultUserSettings"]["ExecutionRole"]


# --------------------------------------------------------------------------- S3 data


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def bucket_region(s3: Any, bucket: str) -> str:
    """Where ``bucket`` lives (S3 answers None for us-east-1, "EU" for the oldest eu-west-1)."""
    location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def check_same_region(s3: Any, uri: str, region: str, what: str = "The training data") -> None:
    """Refuse an S3 URI in another region than the job's: SageMaker cannot read across."""
    found = bucket_region(s3, split_s3_uri(uri)[0])
    if found != region:
        raise SageMakerError(
            f"{what} {uri} is in region {found}, the job in {region}: launch with "
            f"region={found!r} (--region {found}), or copy the data to a bucket in {region} "
            "(give no S3 URI and the local IMDB archive is uploaded there for you)."
        )


def upload_once(s3: Any, path: Path, bucket: str) -> str:
    """Upload ``path`` to ``s3://bucket/former/data/<sha256>/<name>`` unless it is there already.

    The key holds the file's digest, so the same archive is sent once per
    bucket, and a changed file never reuses a stale copy.
    """
    key = f"{DATA_PREFIX}/{file_digest(path)[:16]}/{path.name}"
    from botocore.exceptions import ClientError

    try:
        if s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == path.stat().st_size:
            return f"s3://{bucket}/{key}"
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    print(f"uploading {path.name} ({path.stat().st_size / 2**20:.0f} MiB) to s3://{bucket}/{key}")
    s3.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def local_training_file(data: str | Path | None) -> Path:
    """The one local file to upload: the given IMDB file, or the one ``former`` finds itself."""
    from former.data.imdb import ImdbFormatError, identify_source, locate_imdb

    try:
        source = identify_source(Path(data).expanduser()) if data else locate_imdb()
    except (ImdbFormatError, OSError) as error:
        raise SageMakerError(f"Training data {str(data)!r}: {error}") from error
    if source is None:
        raise SageMakerError(
            "No local IMDB data to upload: pass data='aclImdb_v1.tar.gz' (--data), an s3:// URI, "
            "or set FORMER_DATA_DIR to the folder holding the archive."
        )
    if source.kind == "folder":
        raise SageMakerError(
            f"{source.path} is an extracted aclImdb folder (50,000 small uploads): pass the "
            "aclImdb_v1.tar.gz archive or the CSV instead, or an s3:// URI."
        )
    return source.path
