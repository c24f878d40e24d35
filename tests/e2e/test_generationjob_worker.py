"""The whole system: examples/two-prompts-teacache.yaml run by the operator with the real chitu-worker
(two pods, CFG parallel over gloo, TeaCache) on a tiny random Wan2.1 model, videos uploaded to S3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from chitu_devcluster.waiting import wait_for

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "two-prompts-teacache.yaml"
GROUP, VERSION, PLURAL = "chitu.dev", "v1alpha1", "generationjobs"
TIMEOUT = 600  # two worker processes importing torch and generating on 2 CPU cores


def test_two_prompts_with_teacache_end_to_end(cluster, k8s, namespace, s3, operator_process, tiny_model_dir):
    credentials = cluster.s3
    k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "s3-creds"}, "stringData": {
        "AWS_ACCESS_KEY_ID": credentials.access_key_id, "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key}})
    job = yaml.safe_load(EXAMPLE.read_text())
    spec = job["spec"]
    spec["model"] = {"uri": str(tiny_model_dir)}  # pods are local processes: a host path
    spec["generation"] = {"steps": 4, "guidanceScale": 5.0, "height": 32, "width": 32, "frames": 5, "fps": 8,
                          "seed": 42}
    spec["output"].update(uri=f"s3://{s3.name}/runs", endpoint=credentials.endpoint, region=credentials.region)
    spec["worker"].pop("resources")
    created = k8s.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
    name, uid = created["metadata"]["name"], created["metadata"]["uid"]

    last = {}

    def finished():
        last["job"] = current = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return current if current.get("status", {}).get("phase") in ("Succeeded", "Failed") else None
    done = wait_for(finished, f"{name} to finish", TIMEOUT, interval=1,
                    detail=lambda: f"{json.dumps(last['job'].get('status'))}\n"
                                   f"{cluster.pod_log(namespace, f'{name}-worker-0')[-3000:]}")
    status = done["status"]
    assert status["phase"] == "Succeeded", (status, cluster.pod_log(namespace, f"{name}-worker-0")[-3000:])
    assert status["restarts"] == 0 and status["worldSize"] == 2
    assert status["progress"]["promptsDone"] == 2 and status["progress"]["percent"] == 100
    assert status["progress"]["summary"] == "2/2"
    prefix = f"runs/{name}-{uid[:8]}"
    assert sorted(o["index"] for o in status["outputs"]) == [0, 1]
    assert {o["video"] for o in status["outputs"]} == {f"s3://{s3.name}/{prefix}/prompt-{i:04d}/video.mp4"
                                                      for i in (0, 1)}
    keys = {obj["Key"] for obj in s3.client.list_objects_v2(Bucket=s3.name, Prefix=prefix)["Contents"]}
    for index in (0, 1):
        assert {f"{prefix}/prompt-{index:04d}/video.mp4", f"{prefix}/prompt-{index:04d}/metrics.json"} <= keys
    metrics = json.loads(s3.client.get_object(Bucket=s3.name, Key=f"{prefix}/prompt-0001/metrics.json")["Body"].read())
    assert metrics["params"]["flexcache_params"]["strategy"] == "teacache"
