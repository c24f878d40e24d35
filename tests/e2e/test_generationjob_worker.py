"""The whole system: examples/two-prompts-teacache.yaml applied with kubectl, run by the operator with the real
chitu-worker (two pods, CFG parallel over gloo, TeaCache) on a tiny random Wan2.1 model, videos in SeaweedFS.

The example is rendered for this machine (model folder, small video, the dev cluster's S3 endpoint and bucket)
and otherwise applied as it is. The second test injects a crash of rank 1 in the middle of prompt 1 of the first
attempt (a sitecustomize on PYTHONPATH, so the worker carries no test hook) and proves the gang restart resumes:
prompt 0 is not generated again.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import textwrap
from pathlib import Path

import yaml

from chitu_api.names import GROUP, PLURAL, VERSION
from chitu_devcluster.paths import VENV_BIN
from chitu_devcluster.waiting import wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "two-prompts-teacache.yaml"
TIMEOUT = 600  # worker processes importing torch and generating on 2 CPU cores

# Rank 1 of attempt 0 dies after the first denoising step of its second prompt. CFG parallelism exchanges the
# predictions every step, so by then rank 0 has uploaded prompt 0 and started prompt 1.
CRASH_RANK_1_IN_PROMPT_1 = """
import os
if os.environ.get("RANK") == "1" and os.environ.get("CHITU_RESTART_ATTEMPT") == "0":
    import chitu_diffusion.engines.single as engine  # Engine.sample runs the loop for ParallelEngine too

    denoise, calls = engine.denoise, []

    def crashing_denoise(latents, scheduler, num_steps, guide, timer, on_step=None):
        calls.append(num_steps)

        def after_step(done, total):
            if len(calls) == 2:
                raise RuntimeError("injected crash of rank 1 during prompt 1")
            if on_step is not None:
                on_step(done, total)
        return denoise(latents, scheduler, num_steps, guide, timer, after_step)

    engine.denoise = crashing_denoise
"""


def kubectl(cluster, *args: str) -> str:
    command = [str(VENV_BIN / "kubectl"), "--kubeconfig", str(cluster.state.kubeconfig), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def apply_example(
    cluster,
    k8s,
    namespace,
    s3,
    tiny_model_dir,
    tmp_path,
    env: list[dict] | None = None,
    parallelism: dict | None = None,
) -> dict:
    """Render the example for this machine and `kubectl apply -f` it; returns the created job."""
    job = yaml.safe_load(EXAMPLE.read_text())
    spec = job["spec"]
    spec["model"] = {"uri": str(tiny_model_dir)}  # pods are local processes: a host path
    spec["generation"] = {
        "steps": 6,
        "guidanceScale": 5.0,
        "height": 32,
        "width": 32,
        "frames": 5,
        "fps": 8,
        "seed": 42,
    }
    # What the platform defaults give on a chart-installed cluster, spelled out: this test's bucket and S3.
    spec["output"] = {
        "uri": f"s3://{s3.name}/runs",
        "endpoint": cluster.s3.endpoint,
        "region": cluster.s3.region,
        "credentialsSecretRef": {"name": "s3-creds"},
    }
    spec["worker"] = {"image": "ghcr.io/chitu/worker:0.1.0", "env": env or []}
    spec["parallelism"] = parallelism or spec["parallelism"]
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(job))
    assert "created" in kubectl(cluster, "apply", "-n", namespace, "-f", str(manifest))
    return k8s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job["metadata"]["name"])


def printer_row(cluster, namespace: str, name: str) -> dict[str, str]:
    """Column -> cell of `kubectl get gj NAME`, cut at the header's column starts (a cell may be empty)."""
    header, row = kubectl(cluster, "get", "gj", name, "-n", namespace).splitlines()
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return {column: row[start:end].strip() for column, start, end in zip(header.split(), starts, ends, strict=True)}


def wait_finished(cluster, k8s, namespace: str, name: str, on_poll=lambda: None) -> dict:
    last = {}

    def finished():
        on_poll()
        last["job"] = job = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return job if job.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    return wait_for(
        finished,
        f"{name} to finish",
        TIMEOUT,
        interval=0.5,
        detail=lambda: (
            f"{json.dumps(last['job'].get('status'))}\n{cluster.pod_log(namespace, f'{name}-worker-0')[-3000:]}"
        ),
    )


def object_keys(s3, prefix: str) -> set[str]:
    return {obj["Key"] for obj in s3.client.list_objects_v2(Bucket=s3.name, Prefix=prefix).get("Contents", [])}


def test_two_prompts_with_teacache_end_to_end(cluster, k8s, namespace, s3, operator_process, tiny_model_dir, tmp_path):
    created = apply_example(cluster, k8s, namespace, s3, tiny_model_dir, tmp_path)
    name, uid = created["metadata"]["name"], created["metadata"]["uid"]
    done = wait_finished(cluster, k8s, namespace, name)
    status = done["status"]
    assert status["phase"] == "Succeeded", (status, cluster.pod_log(namespace, f"{name}-worker-0")[-3000:])
    assert status["restarts"] == 0 and status["worldSize"] == 2
    assert status["progress"]["promptsDone"] == 2 and status["progress"]["percent"] == 100
    assert status["progress"]["summary"] == "2/2"
    prefix = f"runs/{name}-{uid[:8]}"
    assert sorted(o["index"] for o in status["outputs"]) == [0, 1]
    assert {o["video"] for o in status["outputs"]} == {
        f"s3://{s3.name}/{prefix}/prompt-{i:04d}/video.mp4" for i in (0, 1)
    }
    keys = object_keys(s3, prefix)
    for index in (0, 1):
        assert {f"{prefix}/prompt-{index:04d}/video.mp4", f"{prefix}/prompt-{index:04d}/metrics.json"} <= keys
    metrics = json.loads(s3.client.get_object(Bucket=s3.name, Key=f"{prefix}/prompt-0001/metrics.json")["Body"].read())
    assert metrics["params"]["flexcache_params"]["strategy"] == "teacache"
    assert metrics["output"]["num_frames"] == 5 and metrics["cache"]["summary"]["units_computed"] > 0
    assert metrics["parallel"]["cfg"] == 2 and metrics["parallel_decode"] is True  # spec.engine.parallelDecode
    row = printer_row(cluster, namespace, name)
    assert (row["STATUS"], row["PROGRESS%"], row["PROMPTS"], row["RESTARTS"]) == ("Succeeded", "100", "2/2", "0")


def test_crashed_rank_restarts_the_gang_and_resumes_without_redoing_finished_prompts(
    cluster, k8s, namespace, s3, operator_process, tiny_model_dir, tmp_path
):
    hook = tmp_path / "inject"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(CRASH_RANK_1_IN_PROMPT_1))
    created = apply_example(
        cluster, k8s, namespace, s3, tiny_model_dir, tmp_path, env=[{"name": "PYTHONPATH", "value": str(hook)}]
    )
    name, uid = created["metadata"]["name"], created["metadata"]["uid"]
    first_metrics = f"runs/{name}-{uid[:8]}/prompt-0000/metrics.json"
    rows, prompt0 = [], {}

    def watch():
        """What `kubectl get gj` shows while the job runs, and prompt 0's metrics object once it exists."""
        rows.append(printer_row(cluster, namespace, name))
        if not prompt0 and first_metrics in object_keys(s3, first_metrics):
            head = s3.client.head_object(Bucket=s3.name, Key=first_metrics)
            prompt0.update(etag=head["ETag"], modified=head["LastModified"])

    done = wait_finished(cluster, k8s, namespace, name, on_poll=watch)
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["restarts"] == 1
    failed = [
        e.message
        for e in k8s.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        if e.reason == "RankFailed"
    ]
    assert any("injected crash of rank 1 during prompt 1" in m for m in failed), failed
    # Live progress: the job was seen running with one of two prompts done, part way.
    live = [r for r in rows if r["STATUS"] in ("Running", "Restarting") and r["PROMPTS"] == "1/2"]
    assert live and all(0 < int(r["PROGRESS%"]) < 100 for r in live), rows
    # Prompt 0 finished in attempt 0 and was not generated again: its metrics object is the one first seen.
    head = s3.client.head_object(Bucket=s3.name, Key=first_metrics)
    assert prompt0 and (head["ETag"], head["LastModified"]) == (prompt0["etag"], prompt0["modified"])
    assert sorted(o["index"] for o in status["outputs"]) == [0, 1]
    assert status["progress"] == {**status["progress"], "promptsDone": 2, "percent": 100}


def test_missing_model_path_fails_the_job_once_with_the_workers_reason(
    cluster, k8s, namespace, s3, operator_process, tmp_path
):
    """The worker exits 2 (invalid input): the operator fails the job without spending backoffLimit (3 here)."""
    missing = tmp_path / "no-such-model"
    created = apply_example(
        cluster, k8s, namespace, s3, missing, tmp_path, parallelism={"cfg": 1, "cpSize": 1, "gpusPerPod": 1}
    )
    name = created["metadata"]["name"]
    status = wait_finished(cluster, k8s, namespace, name)["status"]
    worker_reason = f"InvalidInput: spec.model.uri: {missing} is not a folder on this machine"
    assert status["phase"] == "Failed" and status["restarts"] == 0, status
    took = datetime.datetime.fromisoformat(status["completionTime"]) - datetime.datetime.fromisoformat(
        created["metadata"]["creationTimestamp"]
    )
    assert took.total_seconds() < 30, took  # issue 11: a bad model path is Failed within 30 s, not after retries
    assert worker_reason in status["message"] and "exit code 2" in status["message"], status["message"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "InvalidInput")
    events = k8s.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    assert not [e.message for e in events if e.reason == "RankFailed"]  # no second attempt was started
    pod = k8s.core.read_namespaced_pod(f"{name}-worker-0", namespace)  # cleanPodPolicy Running keeps it
    assert pod.metadata.labels["chitu.dev/restart-attempt"] == "0"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 2
    assert printer_row(cluster, namespace, name)["RESTARTS"] == "0"
