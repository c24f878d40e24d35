"""chitu_worker.storageretry: which S3 errors are retried, the backoff schedule and the budget (a fake clock;
tests/reliability/test_s3_faults.py puts the same code in front of a real SeaweedFS with faults)."""

from __future__ import annotations

import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from chitu_worker.storageretry import StorageUnavailable, is_transient, retrying


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )


def wrapped(inner: Exception) -> Exception:
    """As boto3's upload_file raises it: S3UploadFailedError from the ClientError."""
    try:
        try:
            raise inner
        except Exception as err:
            raise S3UploadFailedError(f"Failed to upload: {err}") from err
    except S3UploadFailedError as outer:
        return outer


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (EndpointConnectionError(endpoint_url="http://s3"), True),
        (ConnectionClosedError(endpoint_url="http://s3"), True),
        (ReadTimeoutError(endpoint_url="http://s3"), True),
        (client_error("SlowDown", 503), True),
        (client_error("InternalError", 500), True),
        (wrapped(client_error("ServiceUnavailable", 503)), True),
        (client_error("AccessDenied", 403), False),
        (client_error("NoSuchBucket", 404), False),
        (wrapped(client_error("BadDigest", 400)), False),
        (ValueError("not storage"), False),
    ],
)
def test_what_is_transient(error, transient):
    assert is_transient(error) is transient


class FakeTime:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_backoff_doubles_up_to_a_cap_and_the_call_succeeds():
    time, failures = FakeTime(), iter([EndpointConnectionError(endpoint_url="x")] * 6)

    def call() -> str:
        if (err := next(failures, None)) is not None:
            raise err
        return "stored"

    assert retrying(call, "upload", 120, clock=time.clock, sleep=time.sleep) == "stored"
    assert time.sleeps == [1, 2, 4, 8, 15, 15]


def test_the_budget_ends_with_a_clear_error():
    time = FakeTime()

    def call():
        raise client_error("SlowDown", 503)

    with pytest.raises(StorageUnavailable, match=r"upload s3://b/k: object storage failed for 20 s \(6 attempts\)"):
        retrying(call, "upload s3://b/k", 20, clock=time.clock, sleep=time.sleep)
    assert sum(time.sleeps) == 20


def test_permanent_errors_are_not_retried():
    time = FakeTime()

    def call():
        raise client_error("AccessDenied", 403)

    with pytest.raises(ClientError):
        retrying(call, "upload", 120, clock=time.clock, sleep=time.sleep)
    assert time.sleeps == []
