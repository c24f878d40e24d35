"""Object storage behind a three-method interface, with an S3 implementation (AWS, SeaweedFS, MinIO ...).

Objects are named by `s3://bucket/key` URIs throughout, so one store serves the model prefix and the output
prefix even when they live in different buckets.

Faults: every call is retried while its error is transient (no connection, timeouts, 5xx, throttling), with
exponential backoff, for up to `S3Settings.retry_seconds`; then StorageUnavailable ends the attempt with a clear
reason (chitu_worker.storageretry). A multipart upload cut off midway leaves parts that `abort_incomplete_uploads`
removes at the start of the next attempt.

Integrity: every upload carries a SHA-256 flexible checksum (`ChecksumAlgorithm='SHA256'`), which the server
verifies before it stores the object; multipart uploads get a checksum per part and a composite one. SeaweedFS
4.48 accepts this (and rejects a wrong digest with BadDigest), so no Content-MD5 fallback is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Protocol

import boto3
import botocore.config
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from chitu_worker.storageretry import retrying

logger = logging.getLogger(__name__)

S3_SCHEME = "s3://"
MiB = 1024 * 1024
CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".json": "application/json",
    ".ppm": "image/x-portable-pixmap",
    ".png": "image/png",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Large files (model weights) go in 64 MiB parts, 4 at a time; videos are usually a single PUT.
DEFAULT_TRANSFER = TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB, max_concurrency=4)


def is_s3_uri(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> (`bucket`, `some/key`)."""
    if not is_s3_uri(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, key


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower(), DEFAULT_CONTENT_TYPE)


class ObjectStore(Protocol):
    def exists(self, uri: str) -> bool:
        """Whether the object exists (a missing one is False; any other error raises)."""

    def upload_file(self, path: Path, uri: str) -> None:
        """Store a local file at `uri`, with a content type from its suffix and a verified checksum."""

    def download_prefix(self, uri: str, dest: Path) -> int:
        """Copy every object under the prefix `uri` into `dest`, keeping relative paths; returns the count."""


class S3Settings(BaseModel):
    """Where the S3 API is; credentials come from boto3's usual chain (AWS_* variables in a pod)."""

    model_config = ConfigDict(frozen=True)

    endpoint: str | None = None  # None = AWS
    region: str | None = None
    retry_seconds: float = 180  # how long transient failures are retried: outlasts an endpoint restart or failover
    connect_timeout: float = 10
    read_timeout: float = 60  # per request; a frozen endpoint costs this much per retry


class S3Store:
    """`ObjectStore` on a boto3 S3 client."""

    def __init__(self, client, transfer: TransferConfig = DEFAULT_TRANSFER, retry_seconds: float = 0):
        self.client = client
        self.transfer = transfer
        self.retry_seconds = retry_seconds

    @classmethod
    def connect(cls, settings: S3Settings, transfer: TransferConfig = DEFAULT_TRANSFER) -> S3Store:
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 3},  # quick retries of a request; outages: retry_seconds
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            # Self-hosted endpoints (SeaweedFS, MinIO) are addressed by path: bucket names are not DNS names there.
            s3={"addressing_style": "path" if settings.endpoint else "auto"},
        )
        # A session of its own: credentials are read from the environment now, not cached by boto3's default one.
        session = boto3.session.Session(region_name=settings.region)
        client = session.client("s3", endpoint_url=settings.endpoint, config=config)
        return cls(client, transfer, settings.retry_seconds)

    def exists(self, uri: str) -> bool:
        bucket, key = split_uri(uri)
        try:
            self._retrying(lambda: self.client.head_object(Bucket=bucket, Key=key), f"check {uri}")
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def upload_file(self, path: Path, uri: str, *, log: bool = True) -> None:
        """`ObjectStore.upload_file`; `log=False` leaves the line per file to the caller (many small files)."""
        bucket, key = split_uri(uri)
        extra = {"ContentType": content_type(path), "ChecksumAlgorithm": "SHA256"}
        self._retrying(
            lambda: self.client.upload_file(str(path), bucket, key, ExtraArgs=extra, Config=self.transfer),
            f"upload {uri}",
        )
        if log:
            logger.info("uploaded %s (%d bytes) to %s", path.name, path.stat().st_size, uri)

    def download_prefix(self, uri: str, dest: Path) -> int:
        bucket, _ = split_uri(uri)
        count = 0
        for relative, obj in self._objects_under(uri):
            target = dest / _safe_relative(relative, uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._retrying(
                lambda key=obj["Key"], target=target: self.client.download_file(
                    bucket, key, str(target), ExtraArgs={"ChecksumMode": "ENABLED"}, Config=self.transfer
                ),
                f"download s3://{bucket}/{obj['Key']}",
            )
            count += 1
        logger.info("downloaded %d objects from %s to %s", count, uri, dest)
        return count

    def object_sizes(self, uri: str) -> dict[str, int]:
        """The size in bytes of every object under the prefix `uri`, by its key relative to the prefix."""
        return {relative: obj["Size"] for relative, obj in self._objects_under(uri)}

    def _objects_under(self, uri: str) -> Iterator[tuple[str, dict]]:
        """(key relative to the prefix `uri`, listing entry) of each object under it."""
        bucket, prefix = split_uri(uri.rstrip("/") + "/")
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                relative = obj["Key"][len(prefix) :]
                if relative and not relative.endswith("/"):  # not the prefix itself, nor a folder marker
                    yield relative, obj

    def abort_incomplete_uploads(self, uri: str) -> int:
        """Abort the multipart uploads left unfinished under the prefix `uri` (by an attempt cut off midway:
        their parts take space and are billed, yet are no object); returns how many."""
        bucket, prefix = split_uri(uri.rstrip("/") + "/")
        try:
            listing = self._retrying(
                lambda: self.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix),
                f"list unfinished uploads under {uri}",
            )
        except ClientError as err:  # a key allowed to write objects but not to list uploads: nothing to clean
            logger.warning("unfinished uploads under %s not checked: %s", uri, err)
            return 0
        uploads = listing.get("Uploads", [])
        for upload in uploads:
            self._retrying(
                lambda u=upload: self.client.abort_multipart_upload(
                    Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]
                ),
                f"abort the unfinished upload of {upload['Key']}",
            )
        if uploads:
            logger.info("aborted %d unfinished multipart uploads under %s", len(uploads), uri)
        return len(uploads)

    def _retrying(self, call, what: str):
        return retrying(call, what, self.retry_seconds)


def _safe_relative(relative: str, uri: str) -> PurePosixPath:
    """An object key below the prefix as a relative path that cannot escape the destination folder."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"object {relative!r} under {uri} would be written outside the destination folder")
    return path
