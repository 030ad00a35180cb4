"""Which AWS region, session, execution role and S3 data a job uses, for every command."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from former.sagemaker.errors import NO_REGION, SageMakerError

# Written by SageMaker Studio and notebook instances; absent everywhere else.
SAGEMAKER_METADATA_FILE = Path("/opt/ml/metadata/resource-metadata.json")
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/.+")
DATA_PREFIX = "former/data"


def resolve_region(region: str | None = None, boto_session: Any = None) -> str:
    """The job's region: argument, environment, the given session's, the profile's."""
    import boto3

    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    region = region or getattr(boto_session, "region_name", None) or boto3.Session().region_name
    if not region:
        raise SageMakerError(NO_REGION)
    return region


def aws_session(region: str | None, boto_session: Any = None) -> Any:
    """A boto3 session for ``region``: the caller's, which must be for it, or a new one."""
    import boto3

    region = resolve_region(region, boto_session)
    if boto_session is None:
        return boto3.Session(region_name=region)
    if boto_session.region_name != region:
        raise SageMakerError(
            f"The boto3 session is for region {boto_session.region_name!r} and the job for "
            f"{region!r}: pass region={boto_session.region_name!r} or a session for {region!r}."
        )
    return boto_session


def aws_client(service: str, region: str | None, boto_session: Any = None) -> Any:
    return aws_session(region, boto_session).client(service)


def credentials_configured(boto_session: Any = None) -> bool:
    """Whether boto3 finds AWS credentials (environment, ~/.aws, SSO, instance role)."""
    import boto3

    return (boto_session or boto3.Session()).get_credentials() is not None


def resolve_role(role: str | None = None, boto_session: Any = None) -> str:
    """The execution role ARN: argument, ``$SAGEMAKER_ROLE``, else the one SageMaker runs us as."""
    role = role or os.environ.get("SAGEMAKER_ROLE")
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
    domain, user = metadata["DomainId"], metadata["UserProfileName"]
    profile = client.describe_user_profile(DomainId=domain, UserProfileName=user)
    role = profile.get("UserSettings", {}).get("ExecutionRole")
    return role or client.describe_domain(DomainId=domain)["DefaultUserSettings"]["ExecutionRole"]


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def check_same_region(s3: Any, uri: str, region: str, what: str = "The training data") -> None:
    """Refuse an S3 URI in another region than the job's: SageMaker cannot read across."""
    location = s3.get_bucket_location(Bucket=split_s3_uri(uri)[0]).get("LocationConstraint")
    # S3 answers None for us-east-1, "EU" for the oldest eu-west-1 buckets.
    found = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)
    if found != region:
        raise SageMakerError(
            f"{what} {uri} is in region {found}, the job in {region}: launch with "
            f"region={found!r} (--region {found}), or copy the data to a bucket in {region} "
            "(give no S3 URI and the local IMDB archive is uploaded there for you)."
        )


def upload_once(s3: Any, path: Path, bucket: str) -> str:
    """Where ``path`` goes in ``bucket``: under its digest, so that a changed file is sent again
    and an unchanged one never is. Uploads it there unless ``s3`` is None (a dry run)."""
    from botocore.exceptions import ClientError

    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    key = f"{DATA_PREFIX}/{digest.hexdigest()[:16]}/{path.name}"
    uri, size = f"s3://{bucket}/{key}", path.stat().st_size
    try:
        if s3 is None or s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == size:
            return uri
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    print(f"uploading {path.name} ({size / 2**20:.0f} MiB) to {uri}")
    s3.upload_file(str(path), bucket, key)
    return uri


def local_imdb(data: str | Path | None, purpose: str) -> Any:
    """The IMDB source (``former.data.imdb.ImdbSource``) at ``data``, else the one ``former``
    finds itself, to ``purpose`` (named in the error when there is none)."""
    from former.data.imdb import ImdbFormatError, identify_source, locate_imdb

    try:
        source = identify_source(Path(data)) if data else locate_imdb()
    except (ImdbFormatError, OSError) as error:
        raise SageMakerError(f"IMDB data {str(data)!r}: {error}") from error
    if source is None:
        raise SageMakerError(
            f"No local IMDB data to {purpose}: pass data='aclImdb_v1.tar.gz' (--data) or set "
            "FORMER_DATA_DIR to the folder holding the archive."
        )
    return source
