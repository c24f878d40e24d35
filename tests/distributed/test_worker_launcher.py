"""`chitu-worker` as the pods of a gang run it: torchrun-launched gloo ranks, a real S3 (SeaweedFS), the tiny model.

The pod env is the operator's (NNODES, NODE_RANK, NPROC_PER_NODE, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); two
launcher processes play two single-GPU pods, one launcher with NPROC_PER_NODE=2 plays a two-GPU pod.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from harness import free_port

from chitu_api.names import SIMULATED_GPUS_ENV
from chitu_devcluster.s3 import S3Credentials

pytestmark = pytest.mark.distributed

WORKER = Path(sys.executable).with_name("chitu-worker")
TIMEOUT = 300
# Makes rank 1 fail where a rank resolves its model (loaded before the rank module imports the function).
FAIL_RANK_1 = """
import os
if os.environ.get("RANK") == "1":
    import chitu_worker.modelcache as modelcache

    def resolve_model(*args, **kwargs):
        raise RuntimeError("injected failure on rank 1")

    modelcache.resolve_model = resolve_model
"""


@pytest.fixture
def s3(seaweedfs):
    return seaweedfs


def write_job(path: Path, model_dir: Path, bucket: str, prompts: list[str], **spec) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "chitu.dev/v1alpha1",
                "kind": "GenerationJob",
                "metadata": {"name": "gang", "uid": uuid.uuid4().hex},
                "spec": {
                    "model": {"uri": str(model_dir)},
                    "prompts": prompts,
                    "output": {"uri": f"s3://{bucket}/runs"},
                    "generation": {"steps": 4, "height": 64, "width": 64, "frames": 9, "seed": 5},
                    "worker": {"image": "unused"},
                    **spec,
                },
            }
        )
    )
    return path


def pod_env(s3: S3Credentials, tmp_path: Path, *, nnodes: int, node_rank: int, nproc: int, port: int) -> dict:
    return {
        **os.environ, **s3.env(),
        "NNODES": str(nnodes), "NODE_RANK": str(node_rank), "NPROC_PER_NODE": str(nproc),
        "WORLD_SIZE": str(nnodes * nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
        "GLOO_SOCKET_IFNAME": "lo", "CHITU_TERMINATION_LOG": str(tmp_path / f"termination-{node_rank}"),
        # what the dev cluster's node agent declares for the GPUs a CPU pod asked for (chitu_worker.gpus)
        SIMULATED_GPUS_ENV: str(nproc),
    }  # fmt: skip


def stored(s3: S3Credentials, bucket: str) -> dict[str, dict]:
    """{key below the job's prefix: object head} of everything the job stored."""
    client = s3.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix="runs/").get("Contents", [])
    return {o["Key"].split("/", 2)[2]: client.head_object(Bucket=bucket, Key=o["Key"]) for o in listed}


def read(s3: S3Credentials, bucket: str, key: str) -> bytes:
    """The object `key` below the job's prefix (runs/<job>-<uid8>/)."""
    client = s3.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix="runs/")["Contents"]
    (match,) = [o["Key"] for o in listed if o["Key"].endswith(key)]
    return client.get_object(Bucket=bucket, Key=match)["Body"].read()


def test_two_pods_of_one_rank_run_cfg_parallel(s3, bucket, tiny_model_dir, tmp_path):
    job_file = write_job(
        tmp_path / "job.yaml",
        tiny_model_dir,
        bucket,
        ["A cat walking on grass", "A dog on a beach"],
        parallelism={"cfg": 2, "cpSize": 1, "gpusPerPod": 1},
    )
    port = free_port()
    logs = [tmp_path / f"pod-{rank}.log" for rank in (0, 1)]
    with ExitStack() as files:
        pods = [
            subprocess.Popen(
                [str(WORKER), "--job-file", str(job_file)],
                stdout=files.enter_context(logs[rank].open("w")),
                stderr=subprocess.STDOUT,
                env=pod_env(s3, tmp_path, nnodes=2, node_rank=rank, nproc=1, port=port),
            )
            for rank in (1, 0)  # the non-master pod first: it waits for rank 0's rendezvous
        ]
        codes = [pod.wait(timeout=TIMEOUT) for pod in pods]
    output = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n".join(text[-3000:] for text in output)
    assert "rank 0/2 joined the gang (gloo" in output[0] and "rank 1/2 joined the gang (gloo" in output[1]
    objects = stored(s3, bucket)
    assert sorted(objects) == [
        "prompt-0000/metrics.json",
        "prompt-0000/video.mp4",
        "prompt-0001/metrics.json",
        "prompt-0001/video.mp4",
    ]
    metrics = json.loads(read(s3, bucket, "prompt-0001/metrics.json"))
    assert metrics["parallel"] == {"world_size": 2, "cfg": 2, "cp": 1, "ulysses": 1, "ring": 1}
    assert metrics["params"]["prompt"] == "A dog on a beach"


def test_one_pod_of_two_ranks_runs_ditango_and_uploads_its_policy_files(s3, bucket, tiny_model_dir, tmp_path):
    job_file = write_job(
        tmp_path / "job.yaml",
        tiny_model_dir,
        bucket,
        ["A cat walking on grass"],
        flexCache={"strategy": "ditango", "cacheRatio": 0.5, "warmup": 1, "cooldown": 1},
        parallelism={"cfg": 1, "cpSize": 2, "upLimit": 1, "gpusPerPod": 2},
    )
    proc = subprocess.run(
        [str(WORKER), "--job-file", str(job_file)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=pod_env(s3, tmp_path, nnodes=1, node_rank=0, nproc=2, port=free_port()),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    objects = stored(s3, bucket)
    policies = sorted(k for k in objects if "ditango_policy" in k)
    assert [k.rsplit(".", 1)[1] for k in policies] == ["png", "ppm"]
    assert objects[policies[0]]["ContentType"] == "image/png"
    assert objects[policies[1]]["ContentType"] == "image/x-portable-pixmap"
    metrics = json.loads(read(s3, bucket, "prompt-0000/metrics.json"))
    assert sorted(metrics["cache"]["visualisations"]) == [k.split("/")[1] for k in policies]
    assert metrics["parallel"]["ring"] == 2


def test_a_failing_rank_fails_the_pod_with_its_reason(s3, bucket, tiny_model_dir, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAIL_RANK_1)
    job_file = write_job(
        tmp_path / "job.yaml",
        tiny_model_dir,
        bucket,
        ["A cat walking on grass"],
        parallelism={"cfg": 2, "cpSize": 1, "gpusPerPod": 2},
    )
    env = pod_env(s3, tmp_path, nnodes=1, node_rank=0, nproc=2, port=free_port())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [str(WORKER), "--job-file", str(job_file)], capture_output=True, text=True, timeout=TIMEOUT, env=env
    )
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert (tmp_path / "termination-0").read_text() == "rank 1: RuntimeError: injected failure on rank 1"
    assert stored(s3, bucket) == {}
