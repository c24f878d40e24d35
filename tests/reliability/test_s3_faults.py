"""The worker's object store under S3 faults (issue 14 (c)): a real SeaweedFS behind a fault proxy.

Down for 46 s (the probe's outage), frozen, or answering 503 SlowDown: an upload waits it out with bounded
retries and backoff and then stores the object once, intact. Down for longer than the retry budget: a clear
StorageUnavailable naming the operation, in bounded time. A multipart upload cut off midway leaves parts
behind; the next attempt aborts them before it starts.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from faultproxy import DOWN, ERRORING, FROZEN, FaultProxy

from chitu_worker.storage import S3Settings, S3Store
from chitu_worker.storageretry import StorageUnavailable

MiB = 1024 * 1024


@pytest.fixture
def proxy(seaweedfs):
    target = urlsplit(seaweedfs.endpoint)
    faulty = FaultProxy((target.hostname, target.port))
    yield faulty
    faulty.close()


@pytest.fixture
def connect(seaweedfs, proxy, monkeypatch):
    """An S3Store through the proxy, with the worker's credentials in its environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_access_key)

    def make(**settings) -> S3Store:
        defaults = {"endpoint": proxy.endpoint, "region": seaweedfs.region, "connect_timeout": 2, "read_timeout": 3}
        return S3Store.connect(S3Settings(**{**defaults, **settings}))

    return make


def video(tmp_path: Path, size: int = 256 * 1024) -> Path:
    path = tmp_path / "video.mp4"
    path.write_bytes(os.urandom(size))
    return path


def later(seconds: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()), daemon=True)
    thread.start()
    return thread


def stored_digest(seaweedfs, bucket: str, key: str) -> str:
    body = seaweedfs.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(("mode", "outage"), [(DOWN, 46), (FROZEN, 15), (ERRORING, 10)])
def test_an_upload_waits_out_an_outage(connect, proxy, seaweedfs, bucket, tmp_path, mode, outage):
    store, path = connect(retry_seconds=120), video(tmp_path)
    proxy.set_mode(mode)
    restore = later(outage, lambda: proxy.set_mode("up"))
    started = time.monotonic()
    store.upload_file(path, f"s3://{bucket}/job/prompt-0000/video.mp4")
    restore.join()
    assert time.monotonic() - started >= outage - 1
    assert (
        stored_digest(seaweedfs, bucket, "job/prompt-0000/video.mp4") == hashlib.sha256(path.read_bytes()).hexdigest()
    )


def test_storage_down_past_the_budget_is_a_clear_failure(connect, proxy, bucket, tmp_path):
    store = connect(retry_seconds=6)
    proxy.set_mode(DOWN)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match=rf"upload .*s3://{bucket}/job/x.mp4.*failed for 6 s"):
        store.upload_file(video(tmp_path), f"s3://{bucket}/job/x.mp4")
    assert time.monotonic() - started < 6 + 5  # the budget plus one connect timeout


def test_errors_retrying_cannot_fix_are_raised_at_once(connect, bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    store = connect(retry_seconds=60)
    started = time.monotonic()
    with pytest.raises(Exception, match="SignatureDoesNotMatch"):
        store.upload_file(video(tmp_path), f"s3://{bucket}/x.mp4")
    assert time.monotonic() - started < 5


def test_an_interrupted_multipart_upload_is_aborted_by_the_next_attempt(connect, proxy, seaweedfs, bucket, tmp_path):
    from boto3.s3.transfer import TransferConfig

    small_parts = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=1)
    store = connect(retry_seconds=2)
    store.transfer = small_parts
    cut = later(0.5, lambda: proxy.set_mode(DOWN))
    with pytest.raises(StorageUnavailable):
        store.upload_file(video(tmp_path, 40 * MiB), f"s3://{bucket}/job/prompt-0000/video.mp4")
    cut.join()
    proxy.set_mode("up")
    admin = seaweedfs.client()
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads"), "the cut left no parts: the test proves nothing"
    aborted = connect(retry_seconds=30).abort_incomplete_uploads(f"s3://{bucket}/job")
    assert aborted >= 1
    assert not admin.list_multipart_uploads(Bucket=bucket).get("Uploads")
