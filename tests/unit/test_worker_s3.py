"""The worker against a real S3 (SeaweedFS `weed mini`, access keys enforced) and the tiny Wan model.

Storage (content types, verified SHA-256 checksums, multipart, prefix download), the model cache, resuming a job
whose first prompt is already stored, and `chitu-worker --job-file` end to end in a subprocess.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from chitu_api import objectkeys
from chitu_worker import outputs
from chitu_worker.env import PodEnv
from chitu_worker.failures import InvalidInput
from chitu_worker.modelcache import cache_dir, resolve_model
from chitu_worker.plan import build_plan
from chitu_worker.rank import SINGLE, run_rank
from chitu_worker.storage import MiB, S3Settings, S3Store

WORKER = Path(sys.executable).with_name("chitu-worker")
GENERATION = {"steps": 4, "height": 64, "width": 64, "frames": 9, "fps": 8, "seed": 3}


@pytest.fixture
def s3(seaweedfs):
    return seaweedfs


class CountingStore:
    """An ObjectStore that counts prefix downloads on their way to the real one."""

    def __init__(self, inner: S3Store):
        self.inner = inner
        self.downloads = 0

    def exists(self, uri):
        return self.inner.exists(uri)

    def upload_file(self, path, uri):
        self.inner.upload_file(path, uri)

    def download_prefix(self, uri, dest):
        self.downloads += 1
        return self.inner.download_prefix(uri, dest)


def read(store: S3Store, bucket: str, key: str) -> bytes:
    return store.client.get_object(Bucket=bucket, Key=key)["Body"].read()


def upload_tree(store: S3Store, folder: Path, uri: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            store.upload_file(path, f"{uri}/{path.relative_to(folder).as_posix()}")


def job(name: str, model_uri: str, output_uri: str, prompts: list[str], **spec) -> dict:
    return {
        "apiVersion": "chitu.dev/v1alpha1",
        "kind": "GenerationJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": model_uri},
            "prompts": prompts,
            "generation": dict(GENERATION),  # a copy: a test that changes its job's settings changes no other's
            "output": {"uri": output_uri},
            "worker": {"image": "unused"},
            **spec,
        },
    }


def test_upload_sets_content_type_and_a_verified_checksum(store, bucket, tmp_path):
    client = store.client
    for name, content_type in [
        ("video.mp4", "video/mp4"),
        ("metrics.json", "application/json"),
        ("policy.ppm", "image/x-portable-pixmap"),
        ("policy.png", "image/png"),
        ("notes.bin", "application/octet-stream"),
    ]:
        path = tmp_path / name
        path.write_bytes(os.urandom(1000))
        uri = f"s3://{bucket}/p/{name}"
        assert not store.exists(uri)
        store.upload_file(path, uri)
        assert store.exists(uri)
        head = client.head_object(Bucket=bucket, Key=f"p/{name}", ChecksumMode="ENABLED")
        assert head["ContentType"] == content_type
        assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def test_exists_raises_on_errors_other_than_missing(s3, bucket, tmp_path, monkeypatch):
    """A denied HEAD must not read as "not there yet" (that would regenerate finished prompts)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    wrong = S3Store.connect(S3Settings(endpoint=s3.endpoint, region=s3.region))
    with pytest.raises(ClientError):
        wrong.exists(f"s3://{bucket}/anything")


def test_multipart_upload_and_prefix_download(s3_env, bucket, tmp_path):
    store = S3Store.connect(
        S3Settings(endpoint=s3_env.endpoint), TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    )
    source = tmp_path / "source"
    (source / "transformer").mkdir(parents=True)
    (source / "transformer" / "weights.safetensors").write_bytes(os.urandom(11 * MiB))  # 3 parts
    (source / "model_index.json").write_text("{}")
    upload_tree(store, source, f"s3://{bucket}/models/m1")
    head = store.client.head_object(
        Bucket=bucket, Key="models/m1/transformer/weights.safetensors", ChecksumMode="ENABLED"
    )
    assert head["ETag"].endswith('-3"') and head["ChecksumSHA256"].endswith("-3")  # per-part checksums
    store.client.put_object(Bucket=bucket, Key="models/m1/empty-folder/", Body=b"")  # a console's folder marker
    store.client.put_object(Bucket=bucket, Key="models/m10/other", Body=b"not under m1/")
    dest = tmp_path / "dest"
    assert store.download_prefix(f"s3://{bucket}/models/m1", dest) == 2
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "model_index.json",
        "transformer/weights.safetensors",
    ]
    assert (dest / "transformer" / "weights.safetensors").read_bytes() == (
        source / "transformer" / "weights.safetensors"
    ).read_bytes()


def test_outputs_upload_metrics_last(tmp_path):
    class Recording:
        def __init__(self):
            self.uploads = []

        def upload_file(self, path, uri):
            self.uploads.append(uri)

    class Result:
        video_path = tmp_path / "video.mp4"
        metrics_path = tmp_path / "metrics.json"
        extra_paths = (tmp_path / "ditango_policy.ppm", tmp_path / "ditango_policy.png")

    store = Recording()
    policies = outputs.upload(store, "s3://b/j-1/prompt-0002", Result())
    assert store.uploads == [
        "s3://b/j-1/prompt-0002/video.mp4",
        "s3://b/j-1/prompt-0002/ditango_policy.ppm",
        "s3://b/j-1/prompt-0002/ditango_policy.png",
        "s3://b/j-1/prompt-0002/metrics.json",
    ]
    assert policies == store.uploads[1:3]


def test_s3_model_is_copied_once_and_a_partial_copy_is_redone(store, bucket, tiny_model_dir, tmp_path):
    uri = f"s3://{bucket}/models/tiny-wan"
    upload_tree(store, tiny_model_dir, uri)
    counting = CountingStore(store)
    cache = tmp_path / "cache"

    # Two ranks of a pod at once: the lock lets one copy while the other waits, then finds the marker.
    results = []
    threads = [threading.Thread(target=lambda: results.append(resolve_model(uri, counting, cache))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    local = cache_dir(uri, cache)
    assert results == [local, local] and counting.downloads == 1
    assert (local / "model_index.json").read_bytes() == (tiny_model_dir / "model_index.json").read_bytes()
    marker = local.with_name(local.name + ".complete")
    stamp = marker.stat().st_mtime_ns

    assert resolve_model(uri, counting, cache) == local  # a later run (a restarted pod on the same volume)
    assert counting.downloads == 1 and marker.stat().st_mtime_ns == stamp

    marker.unlink()  # as if the copy had been interrupted: the folder is incomplete
    (local / "left-over.part").write_text("junk")
    assert resolve_model(uri, counting, cache) == local
    assert counting.downloads == 2 and marker.exists() and not (local / "left-over.part").exists()

    with pytest.raises(InvalidInput, match=r"spec\.model\.uri: no objects under"):
        resolve_model(f"s3://{bucket}/models/nothing-here", counting, cache)
    with pytest.raises(InvalidInput, match=r"spec\.model\.uri: .* is not a folder"):
        resolve_model(str(tmp_path / "missing"), counting, cache)


def test_resume_generates_only_the_missing_prompt(s3_env, store, bucket, tiny_model_dir, tmp_path, caplog):
    plan = build_plan(
        job("resume", str(tiny_model_dir), f"s3://{bucket}/runs", ["A cat walking on grass", "A dog on a beach"]),
        PodEnv.from_environ(
            {**s3_env.env(), "CHITU_JOB_UID": "5e5e5e5e-0000", "CHITU_MODEL_CACHE": str(tmp_path / "cache")}
        ),
        report_status=False,
    )
    # Prompt 0 finished in an earlier attempt (stand-in files: regenerating would replace them).
    done = plan.prompt_prefix(0)
    for name in (objectkeys.VIDEO, objectkeys.METRICS):
        (tmp_path / name).write_text(f"from attempt 0: {name}")
        store.upload_file(tmp_path / name, f"{done}/{name}")
    before = {
        name: store.client.head_object(Bucket=bucket, Key=f"runs/resume-5e5e5e5e/prompt-0000/{name}")["ETag"]
        for name in (objectkeys.VIDEO, objectkeys.METRICS)
    }

    with caplog.at_level(logging.INFO, logger="chitu_worker"):
        run_rank(plan, SINGLE)

    assert "prompts to generate: [1] of 2" in caplog.text
    for name, etag in before.items():
        assert store.client.head_object(Bucket=bucket, Key=f"runs/resume-5e5e5e5e/prompt-0000/{name}")["ETag"] == etag
    assert outputs.is_complete(store, plan.prompt_prefix(1))
    metrics = json.loads(read(store, bucket, "runs/resume-5e5e5e5e/prompt-0001/metrics.json"))
    assert metrics["params"]["prompt"] == "A dog on a beach" and metrics["video"] == "video.mp4"


def run_worker(job_file: Path, env: dict, tmp_path: Path) -> tuple[subprocess.CompletedProcess, str]:
    termination = tmp_path / "termination-log"
    termination.unlink(missing_ok=True)
    proc = subprocess.run(
        [str(WORKER), "--job-file", str(job_file)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env, "CHITU_TERMINATION_LOG": str(termination)},
    )
    return proc, termination.read_text() if termination.exists() else ""


def test_cli_job_file_end_to_end_with_an_s3_model(store, s3, bucket, tiny_model_dir, tmp_path):
    upload_tree(store, tiny_model_dir, f"s3://{bucket}/models/tiny-wan")
    job_file = tmp_path / "cats.yaml"
    job_file.write_text(
        yaml.safe_dump(
            job(
                "cats",
                f"s3://{bucket}/models/tiny-wan",
                f"s3://{bucket}/runs",
                ["A cat walking on grass", "A dog on a beach"],
                flexCache={"strategy": "teacache", "cacheRatio": 0.5, "warmup": 1, "cooldown": 1},
            )
        )
    )
    env = {**s3.env(), "CHITU_MODEL_CACHE": str(tmp_path / "cache")}

    proc, message = run_worker(job_file, env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert message == ""
    listed = store.client.list_objects_v2(Bucket=bucket, Prefix="runs/")["Contents"]
    keys = sorted(o["Key"].split("/", 2)[2] for o in listed)
    assert keys == [
        "prompt-0000/metrics.json",
        "prompt-0000/video.mp4",
        "prompt-0001/metrics.json",
        "prompt-0001/video.mp4",
    ]
    prefix = listed[0]["Key"].split("/")[1]
    assert prefix.startswith("cats-") and len(prefix) == len("cats-") + 8
    video = store.client.get_object(Bucket=bucket, Key=f"runs/{prefix}/prompt-0001/video.mp4")
    assert video["ContentType"] == "video/mp4" and video["Body"].read(12)[4:8] == b"ftyp"
    metrics = json.loads(read(store, bucket, f"runs/{prefix}/prompt-0000/metrics.json"))
    assert metrics["cache"]["strategy"] == "teacache" and metrics["params"]["num_inference_steps"] == 4

    # Run again (a restarted pod): everything is there, nothing is generated, copied or uploaded.
    marker = next((tmp_path / "cache").glob("*.complete"))
    stamps = {o["Key"]: o["ETag"] for o in listed}
    marker_mtime = marker.stat().st_mtime_ns
    proc, message = run_worker(job_file, env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all 2 prompts are already complete" in proc.stderr
    again = store.client.list_objects_v2(Bucket=bucket, Prefix="runs/")["Contents"]
    assert {o["Key"]: o["ETag"] for o in again} == stamps
    assert marker.stat().st_mtime_ns == marker_mtime


def test_cli_invalid_spec_exits_2_naming_the_field(tmp_path):
    job_file = tmp_path / "bad.yaml"
    job_file.write_text(
        yaml.safe_dump(job("bad", "/models/x", "s3://videos/runs", ["A cat"], generation={**GENERATION, "height": 50}))
    )
    proc, message = run_worker(job_file, {}, tmp_path)
    assert proc.returncode == 2
    # One line, the field first; the wording of the rule is the contract's (chitu_diffusion.task.spatial_problem).
    assert message.startswith("InvalidInput: spec.generation.height: ") and "\n" not in message
    assert "multiple of 16" in message and "50" in message
    assert "Traceback" not in proc.stderr


def test_cli_runtime_failure_exits_1_with_a_one_line_reason(s3, bucket, tiny_model_dir, tmp_path):
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job("denied", str(tiny_model_dir), f"s3://{bucket}/runs", ["A cat"])))
    proc, message = run_worker(job_file, {**s3.env(), "AWS_SECRET_ACCESS_KEY": "wrong"}, tmp_path)
    assert proc.returncode == 1
    assert message.startswith("ClientError: ") and "\n" not in message and "HeadObject" in message
