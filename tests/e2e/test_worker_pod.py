"""chitu-worker in a pod of the dev cluster, without the operator: a hand-built worker pod as the operator builds it.

Proves the worker's side of docs/generationjob.md on a real apiserver: the job is read with the pod's
service-account token (RBAC: ClusterRole chitu-worker), progress and outputs are merge-patched into the status
subresource without touching the operator's fields, and a bad job ends the pod with exit 2 and a one-line
termination message naming the field.
"""

from __future__ import annotations

import time

import pytest

from chitu_api.names import GROUP, PLURAL, VERSION, WORKER_COMMAND, WORKER_CONTAINER, WORKER_IDENTITY

TIMEOUT = 180


def grant_worker_identity(k8s, namespace: str) -> None:
    """A worker identity bound to the chitu-worker ClusterRole (the namespace fixture holds the S3 Secret)."""
    k8s.core.create_namespaced_service_account(namespace, {"metadata": {"name": WORKER_IDENTITY}})
    k8s.rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": WORKER_IDENTITY},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": WORKER_IDENTITY},
            "subjects": [{"kind": "ServiceAccount", "name": WORKER_IDENTITY, "namespace": namespace}],
        },
    )


def create_job(k8s, namespace: str, model_uri: str, bucket: str, endpoint: str) -> dict:
    return k8s.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GenerationJob",
            "metadata": {"name": "cats"},
            "spec": {
                "model": {"uri": model_uri},
                "prompts": ["A cat walking on grass", "A dog on a beach"],
                "generation": {"steps": 4, "height": 64, "width": 64, "frames": 9, "seed": 1},
                "flexCache": {"strategy": "teacache", "cacheRatio": 0.5, "warmup": 1, "cooldown": 1},
                "parallelism": {"gpusPerPod": 0},  # the hand-made pod below asks for no GPU
                "worker": {"image": "unused-on-the-dev-node"},
                "output": {
                    "uri": f"s3://{bucket}/runs",
                    "endpoint": endpoint,
                    "credentialsSecretRef": {"name": "s3-creds"},
                },
            },
        },
    )


def worker_pod(job: dict, endpoint: str, cache_dir: str) -> dict:
    """The pod env of docs/generationjob.md for a world of one process."""
    meta = job["metadata"]
    plain = {
        "CHITU_JOB_NAME": meta["name"],
        "CHITU_JOB_NAMESPACE": meta["namespace"],
        "CHITU_JOB_UID": meta["uid"],
        "CHITU_RESTART_ATTEMPT": "0",
        "MASTER_ADDR": f"cats-worker-0.cats-workers.{meta['namespace']}.svc",
        "MASTER_PORT": "29500",
        "NNODES": "1",
        "NODE_RANK": "0",
        "NPROC_PER_NODE": "1",
        "WORLD_SIZE": "1",
        "CHITU_S3_ENDPOINT": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "CHITU_MODEL_CACHE": cache_dir,
    }
    env = [{"name": k, "value": v} for k, v in plain.items()]
    env += [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": key}}}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]
    return {
        "metadata": {"name": "cats-worker-0"},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": WORKER_IDENTITY,
            "containers": [{"name": WORKER_CONTAINER, "image": "unused", "command": list(WORKER_COMMAND), "env": env}],
        },
    }


def run_pod(k8s, namespace: str, pod: dict) -> tuple[object, list[dict]]:
    """Create the pod, wait for it to finish; returns it and every distinct status.progress seen meanwhile."""
    k8s.core.create_namespaced_pod(namespace, pod)
    seen: list[dict] = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        status = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cats").get("status", {})
        if status.get("progress") and status["progress"] not in seen:
            seen.append(status["progress"])
        current = k8s.core.read_namespaced_pod(pod["metadata"]["name"], namespace)
        if current.status.phase in ("Succeeded", "Failed"):
            return current, seen
        time.sleep(0.2)
    pytest.fail(f"worker pod did not finish in {TIMEOUT} s; progress seen: {seen}")


def test_worker_pod_reports_progress_and_outputs(cluster, k8s, namespace, s3, tiny_model_dir, tmp_path):
    creds = cluster.s3
    grant_worker_identity(k8s, namespace)
    job = create_job(k8s, namespace, str(tiny_model_dir), s3.name, creds.endpoint)
    # The operator's fields, and an entry a previous attempt listed: a merge patch must keep both.
    k8s.custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "cats",
        {"status": {"phase": "Running", "outputs": [{"index": 9, "prompt": "from an older attempt"}]}},
    )

    pod, seen = run_pod(k8s, namespace, worker_pod(job, creds.endpoint, str(tmp_path / "cache")))

    assert pod.status.phase == "Succeeded", cluster.pod_log(namespace, "cats-worker-0")[-3000:]
    status = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cats")["status"]
    assert status["phase"] == "Running"  # the operator's, untouched
    progress = status["progress"]
    assert (progress["promptsDone"], progress["promptsTotal"], progress["percent"]) == (2, 2, 100)
    assert progress["totalSteps"] == 4 and progress["lastUpdateTime"].endswith("Z")
    assert any(p["promptsDone"] == 1 and p["percent"] == 50 for p in seen)  # reported between the prompts
    prefix = f"s3://{s3.name}/runs/cats-{job['metadata']['uid'][:8]}"
    outputs = {o["index"]: o for o in status["outputs"]}
    assert sorted(outputs) == [0, 1, 9]
    assert outputs[1]["video"] == f"{prefix}/prompt-0001/video.mp4"
    assert outputs[1]["metrics"] == f"{prefix}/prompt-0001/metrics.json"
    assert outputs[1]["prompt"] == "A dog on a beach" and outputs[1]["completedTime"].endswith("Z")
    keys = sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.name)["Contents"])
    assert keys == [
        f"runs/cats-{job['metadata']['uid'][:8]}/prompt-000{i}/{name}"
        for i in (0, 1)
        for name in ("metrics.json", "video.mp4")
    ]


def test_worker_pod_with_a_bad_model_fails_naming_the_field(cluster, k8s, namespace, s3, tmp_path):
    creds = cluster.s3
    grant_worker_identity(k8s, namespace)
    job = create_job(k8s, namespace, "/no/such/model", s3.name, creds.endpoint)

    pod, _ = run_pod(k8s, namespace, worker_pod(job, creds.endpoint, str(tmp_path / "cache")))

    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 2
    assert terminated.message == "InvalidInput: spec.model.uri: /no/such/model is not a folder on this machine"
