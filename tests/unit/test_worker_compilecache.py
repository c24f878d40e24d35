"""The compile cache kept next to an s3:// model (chitu_worker.compilecache), against a real S3 (SeaweedFS, keys
enforced): what the leader uploads and leaves out, what a new pod's model copy brings along, a model bucket the
job may not write to, and a whole job whose engine compiles.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_worker_s3 import job, read, run_worker, upload_tree

from chitu_diffusion.compile_cache import CHOICES_FOLDER, MODEL_CACHE_NAME, compile_cache_dir, user_cache
from chitu_diffusion.models.loading import load_wan_pipeline
from chitu_worker.compilecache import CompileCacheUpload, shared_compile_cache
from chitu_worker.modelcache import resolve_model
from chitu_worker.storage import S3Settings, S3Store

MODEL = "models/tiny-wan"
CACHE_PREFIX = f"{MODEL}/{MODEL_CACHE_NAME}/"
#: a compile cache's kinds of entries, as inductor, Triton and dynamo name them
ENTRIES = {
    f"{CHOICES_FOLDER}/fxgraph/ab/fabkey/vjz5r5mssccg": b"an FX graph",
    f"{CHOICES_FOLDER}/triton/0/KHASH/triton_poi_fused_0.cubin": os.urandom(3000),
    f"{CHOICES_FOLDER}/dynamo/43adc21a/entry": b"traced code and guards",
}


@pytest.fixture
def settings(s3_env) -> S3Settings:
    return S3Settings(endpoint=s3_env.endpoint, region=s3_env.region)


@pytest.fixture
def model_uri(store, bucket, tiny_model_dir) -> str:
    uri = f"s3://{bucket}/{MODEL}"
    upload_tree(store, tiny_model_dir, uri)
    return uri


def pod(model_uri: str, store: S3Store, settings: S3Settings, root: Path) -> tuple[Path, CompileCacheUpload]:
    """A pod's model copy (under its own empty model cache `root`) and its leader's upload, for an engine that
    keeps its compile cache in the copy (compile_cache_dir "auto")."""
    copy = resolve_model(model_uri, store, root)
    engine_folder = compile_cache_dir("auto", copy) / CHOICES_FOLDER
    upload = shared_compile_cache(model_uri, copy, engine_folder, settings)
    assert upload is not None
    return copy, upload


def write(copy: Path, entries: dict[str, bytes]) -> None:
    """Files into the copy's compile cache folder, as the engine's compiles leave them."""
    for relative, content in entries.items():
        path = copy / MODEL_CACHE_NAME / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def stored_cache(store: S3Store, bucket: str) -> dict[str, bytes]:
    """The compile cache's objects in S3: content by key below `<model uri>/.chitu-compile-cache/`."""
    listing = store.client.list_objects_v2(Bucket=bucket, Prefix=CACHE_PREFIX).get("Contents", [])
    return {obj["Key"].removeprefix(CACHE_PREFIX): read(store, bucket, obj["Key"]) for obj in listing}


def test_new_entries_are_uploaded_under_the_models_prefix_once(store, bucket, settings, model_uri, tmp_path):
    copy, upload = pod(model_uri, store, settings, tmp_path / "pod")
    write(copy, ENTRIES)
    assert upload.upload_new() == (3, sum(len(content) for content in ENTRIES.values()))
    assert stored_cache(store, bucket) == ENTRIES
    assert upload.upload_new() == (0, 0)

    # A later prompt traced a new variant (dynamo's entry grows) and built a kernel: those two go up.
    grown = {f"{CHOICES_FOLDER}/dynamo/43adc21a/entry": b"traced code and guards, and PAB's variant"}
    kernel = {f"{CHOICES_FOLDER}/triton/0/K2/triton_red_fused_1.cubin": b"another kernel"}
    write(copy, grown | kernel)
    assert upload.upload_new() == (2, sum(len(content) for content in (grown | kernel).values()))
    assert stored_cache(store, bucket) == ENTRIES | grown | kernel


def test_an_entry_s3_holds_at_the_same_size_is_not_uploaded_again(store, bucket, settings, model_uri, tmp_path):
    """S3 is compared by key and size once per job: another pod's entry of the same name and size stays."""
    copy, upload = pod(model_uri, store, settings, tmp_path / "pod")
    key = f"{CHOICES_FOLDER}/fxgraph/cd/fcdkey/entry"
    store.client.put_object(Bucket=bucket, Key=CACHE_PREFIX + key, Body=b"from pod A")
    write(copy, {key: b"from pod B"} | ENTRIES)
    assert upload.upload_new() == (3, sum(len(content) for content in ENTRIES.values()))
    assert stored_cache(store, bucket) == {key: b"from pod A"} | ENTRIES


def test_files_being_written_and_other_than_regular_files_are_left_out(store, bucket, settings, model_uri, tmp_path):
    copy, upload = pod(model_uri, store, settings, tmp_path / "pod")
    write(
        copy,
        ENTRIES
        | {
            f"{CHOICES_FOLDER}/fxgraph/ab/fabkey/.4242.140031.tmp": b"inductor's write_atomic, half done",
            f"{CHOICES_FOLDER}/triton/0/tmp.pid_4242_9f1c/triton_poi_fused_0.cubin": b"Triton's put, half done",
            f"{CHOICES_FOLDER}/locks/cabc.lock": b"",
        },
    )
    folder = copy / MODEL_CACHE_NAME / CHOICES_FOLDER
    (folder / "a-link").symlink_to(folder / "dynamo" / "43adc21a" / "entry")
    os.mkfifo(folder / "a-pipe")  # reading it would block the job
    assert upload.upload_new()[0] == 3
    assert stored_cache(store, bucket) == ENTRIES


def test_a_new_pod_copies_the_cache_with_the_model_and_loads_the_folder(store, settings, model_uri, tmp_path):
    first_copy, upload = pod(model_uri, store, settings, tmp_path / "pod-a")
    write(first_copy, ENTRIES)
    upload.upload_new()

    copy = resolve_model(model_uri, store, tmp_path / "pod-b")  # a new pod: an empty model cache
    cache = compile_cache_dir("auto", copy)  # where this pod's engine looks
    assert {key: (cache / key).read_bytes() for key in ENTRIES} == ENTRIES
    marker = json.loads(copy.with_name(f"{copy.name}.complete").read_text())
    assert marker["files"] == sum(1 for path in copy.rglob("*") if path.is_file())
    pipe = load_wan_pipeline(copy, torch.float32, "cpu")  # the extra folder is no component of the pipeline
    assert type(pipe).__name__ == "WanPipeline"


def test_a_read_only_model_bucket_warns_once_and_never_raises(store, bucket, settings, model_uri, tmp_path, caplog):
    copy, upload = pod(model_uri, store, settings, tmp_path / "pod")
    no_writes_to_models = {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject"}
    no_writes_to_models["Resource"] = f"arn:aws:s3:::{bucket}/models/*"
    read_only = {"Version": "2012-10-17", "Statement": [no_writes_to_models]}
    store.client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(read_only))
    write(copy, ENTRIES)
    with caplog.at_level(logging.WARNING, logger="chitu_worker"):
        assert upload.upload_new() == (0, 0)
        store.client.delete_bucket_policy(Bucket=bucket)  # writable again: the job has given up all the same
        write(copy, {f"{CHOICES_FOLDER}/fxgraph/ef/fefkey/entry": b"later"})
        assert upload.upload_new() == (0, 0)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "compile cache not uploaded" in warnings[0] and "AccessDenied" in warnings[0]
    assert stored_cache(store, bucket) == {}


def test_an_unreachable_s3_warns_without_waiting_out_the_retry_budget(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "chitu-dev")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "any")
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    copy = tmp_path / "copy"
    write(copy, ENTRIES)
    settings = S3Settings(endpoint=endpoint, retry_seconds=180)
    upload = shared_compile_cache("s3://models/tiny-wan", copy, copy / MODEL_CACHE_NAME / CHOICES_FOLDER, settings)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="chitu_worker"):
        assert upload.upload_new() == (0, 0)
    assert time.monotonic() - start < 30
    warning = "compile cache not uploaded to s3://models/tiny-wan/.chitu-compile-cache (EndpointConnectionError"
    assert warning in caplog.text


def test_only_an_s3_model_whose_copy_holds_the_engines_cache_shares_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    settings = S3Settings(endpoint="http://127.0.0.1:1", retry_seconds=180)
    copy = tmp_path / "copy"
    in_copy = copy / MODEL_CACHE_NAME / CHOICES_FOLDER
    upload = shared_compile_cache("s3://b/models/m/", copy, in_copy, settings)
    assert upload is not None and upload.uri == f"s3://b/models/m/{MODEL_CACHE_NAME}"
    assert upload.folder == copy / MODEL_CACHE_NAME
    assert upload.store.retry_seconds == 0  # a job never waits out an S3 outage for its cache
    assert shared_compile_cache(str(copy), copy, in_copy, settings) is None  # a local model: it is there already
    assert shared_compile_cache("s3://b/models/m", copy, None, settings) is None  # not compiling
    read_only_copy = user_cache() / CHOICES_FOLDER  # the model copy was not writable
    assert shared_compile_cache("s3://b/models/m", copy, read_only_copy, settings) is None


def test_a_jobs_leader_uploads_what_its_engine_compiled(store, s3_env, bucket, model_uri, tmp_path):
    """`chitu-worker` with the engine compiling (on the CPU here): after the prompt, S3 holds the compile cache
    the engine left in the model copy, dynamo's traced code included."""
    job_file = tmp_path / "job.yaml"
    spec = job("compiled", model_uri, f"s3://{bucket}/runs", ["A cat walking on grass"], engine={"compile": True})
    spec["spec"]["generation"] = {**spec["spec"]["generation"], "steps": 2, "height": 32, "width": 32, "frames": 5}
    job_file.write_text(yaml.safe_dump(spec))
    proc, message = run_worker(job_file, {**s3_env.env(), "CHITU_MODEL_CACHE": str(tmp_path / "cache")}, tmp_path)
    assert proc.returncode == 0 and message == "", proc.stderr[-3000:]
    assert "compile cache: uploaded" in proc.stderr

    copy = next(path for path in (tmp_path / "cache").iterdir() if path.is_dir())
    local = {
        path.relative_to(copy / MODEL_CACHE_NAME).as_posix(): path.read_bytes()
        for path in (copy / MODEL_CACHE_NAME).rglob("*")
        if path.is_file() and path.suffix != ".lock"
    }
    assert stored_cache(store, bucket) == local
    assert any(key.startswith(f"{CHOICES_FOLDER}/dynamo/") for key in local)
    assert any(key.startswith(f"{CHOICES_FOLDER}/fxgraph/") for key in local)
