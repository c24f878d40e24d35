"""`chitu download`: copy a job's outputs from S3 and prove every byte with the SHA-256 stored beside it.

The worker uploads each file with a SHA-256 flexible checksum (chitu_worker.storage), which S3 keeps with the
object: the whole file's digest for a single PUT, or for a multipart upload the digest of its parts' digests
with a `-<parts>` suffix (a "composite" checksum). Each file is streamed to a temporary name, hashed as it
arrives, compared, and only then renamed into place, so a file that is there is a file that was verified.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError

from chitu_cli.errors import ChecksumError, StorageError

S3_SCHEME = "s3://"
READ_CHUNK = 1024 * 1024
# Where the S3 API is, when the command line does not say: the dev cluster's variable, then the AWS SDKs' own.
ENDPOINT_VARIABLES = ("CHITU_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


@dataclass(frozen=True)
class S3Access:
    endpoint: str | None = None  # None = AWS
    region: str | None = None
    access_key_id: str | None = None  # None = boto3's own chain (environment, profile, instance role)
    secret_access_key: str | None = None

    def client(self):
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 5},
            s3={"addressing_style": "path" if self.endpoint else "auto"},
        )
        session = boto3.session.Session(
            region_name=self.region, aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key
        )
        return session.client("s3", endpoint_url=self.endpoint, config=config)


def s3_access(output: dict, endpoint: str | None, read_secret: Callable[[str], dict[str, str] | None]) -> S3Access:
    """How to reach a job's outputs, given its `spec.output` and `--endpoint`.

    The endpoint: the flag, then the environment (ENDPOINT_VARIABLES), then the job's. Credentials: boto3's own
    chain (the user's environment or profile) when it finds any, else the job's credentials Secret when we may
    read it (`read_secret(name)`), else none (a public bucket).
    """
    endpoint = endpoint or next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)
    access = S3Access(endpoint=endpoint or output.get("endpoint"), region=output.get("region"))
    ref = output.get("credentialsSecretRef") or {}
    if boto3.session.Session().get_credentials() is not None or not ref.get("name"):
        return access
    data = read_secret(ref["name"]) or {}
    key_id = data.get(ref.get("accessKeyIdKey", "AWS_ACCESS_KEY_ID"))
    secret = data.get(ref.get("secretAccessKeyKey", "AWS_SECRET_ACCESS_KEY"))
    if key_id and secret:
        return S3Access(access.endpoint, access.region, key_id, secret)
    return access


def split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith(S3_SCHEME) or "/" not in uri[len(S3_SCHEME) :]:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    return bucket, key


def prompt_prefixes(outputs: list[dict]) -> list[tuple[str, str]]:
    """(folder name, s3 prefix) of each finished prompt, from the URIs in status.outputs."""
    prefixes = []
    for entry in outputs:
        uri = entry.get("metrics") or entry.get("video")
        if uri:
            prefix = uri.rsplit("/", 1)[0]
            prefixes.append((prefix.rsplit("/", 1)[1], prefix))
    return prefixes


def download_outputs(access: S3Access, outputs: list[dict], dest: Path) -> list[tuple[Path, str]]:
    """Every object under each finished prompt's prefix into dest/<prompt-NNNN>/; (path, sha256 hex) each."""
    s3 = access.client()
    done = []
    try:
        for folder, prefix in prompt_prefixes(outputs):
            bucket, key_prefix = split_uri(prefix + "/")
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
                for obj in page.get("Contents", []):
                    relative = _safe_relative(obj["Key"][len(key_prefix) :], prefix)
                    if relative is not None:
                        target = dest / folder / relative
                        done.append((target, fetch_verified(s3, bucket, obj["Key"], target)))
    except (BotoCoreError, ClientError) as err:
        raise StorageError(f"S3: {err}") from None
    return done


def fetch_verified(s3, bucket: str, key: str, target: Path) -> str:
    """Download one object to `target` if its bytes match its stored SHA-256; returns the file's hex digest."""
    response = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    stored = response.get("ChecksumSHA256")
    uri = f"{S3_SCHEME}{bucket}/{key}"
    if not stored:
        raise ChecksumError(f"{uri} has no SHA-256 stored with it: it was not uploaded by a Chitu worker")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    whole = hashlib.sha256()
    with open(partial, "wb") as out:
        for chunk in iter(lambda: response["Body"].read(READ_CHUNK), b""):
            whole.update(chunk)
            out.write(chunk)
    try:
        actual = _stored_form(s3, bucket, key, stored, partial, whole.digest())
        if actual != stored:
            raise ChecksumError(f"{uri}: SHA-256 of the downloaded bytes is {actual}, S3 stored {stored}")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return whole.hexdigest()


def _stored_form(s3, bucket: str, key: str, stored: str, path: Path, whole_digest: bytes) -> str:
    """The file's checksum written the way S3 wrote `stored`: whole-file, or composite over its parts."""
    if "-" not in stored:
        return base64.b64encode(whole_digest).decode()
    parts = int(stored.rsplit("-", 1)[1])
    # Every part but the last has the size of part 1 (boto3's transfer manager uses one chunk size).
    part_size = s3.head_object(Bucket=bucket, Key=key, PartNumber=1)["ContentLength"]
    digests = []
    with open(path, "rb") as data:
        for _ in range(parts):
            digests.append(hashlib.sha256(data.read(part_size)).digest())
    return f"{base64.b64encode(hashlib.sha256(b''.join(digests)).digest()).decode()}-{parts}"


def _safe_relative(relative: str, prefix: str) -> PurePosixPath | None:
    """An object's path below its prefix, refusing any that would escape the destination (None: a folder)."""
    if not relative or relative.endswith("/"):
        return None
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise StorageError(f"object {relative!r} under {prefix} would be written outside the destination folder")
    return path
