"""The measurements behind docs/kueue.md: a Workload per gang vs Kueue pod groups, on the dev cluster.

    .venv/bin/python bench/kueue_designs.py      # ~2 min; writes bench/results/kueue_designs.json

One dev cluster with Kueue (chitu_devcluster.kueue), a ClusterQueue of 2 GPUs, three gangs of two 1-GPU pods:
- "workload": three Workloads as the operator builds them (chitu_operator.queueing.build_workload); counts the
  pods that exist while two gangs wait, the time to the first admission and from one gang's Finished to the next
  admission.
- "pod_group": Kueue restarted with its pod integration and pod webhooks (limited to one namespace); the six pods
  carry Kueue's pod-group label and annotation; counts the pods (and gated ones) while two groups wait.
- With Kueue stopped: whether a plain pod can still be created in each namespace (the pod webhook's failurePolicy).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import yaml
from kubernetes import client

from chitu_devcluster import kueue
from chitu_devcluster.cluster import DevCluster
from chitu_devcluster.paths import free_ports
from chitu_devcluster.waiting import wait_for
from chitu_operator.queueing import KUEUE_GROUP as G
from chitu_operator.queueing import KUEUE_VERSION as V
from chitu_operator.queueing import QueueView, build_workload, finish_patch

RESULTS = Path(__file__).parent / "results" / "kueue_designs.json"
GPU_POD = {
    "restartPolicy": "Never",
    "containers": [
        {"name": "w", "image": "x", "command": ["sleep", "60"], "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    ],
}


def queues(custom: client.CustomObjectsApi, namespace: str, cluster_queue: str) -> None:
    custom.create_cluster_custom_object(
        G,
        V,
        "clusterqueues",
        {
            "apiVersion": f"{G}/{V}",
            "kind": "ClusterQueue",
            "metadata": {"name": cluster_queue},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": ["nvidia.com/gpu"],
                        "flavors": [{"name": "default", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 2}]}],
                    }
                ],
            },
        },
    )
    custom.create_namespaced_custom_object(
        G,
        V,
        namespace,
        "localqueues",
        {
            "apiVersion": f"{G}/{V}",
            "kind": "LocalQueue",
            "metadata": {"name": "videos"},
            "spec": {"clusterQueue": cluster_queue},
        },
    )


def workload_design(core: client.CoreV1Api, custom: client.CustomObjectsApi) -> dict:
    core.create_namespace({"metadata": {"name": "wl"}})
    queues(custom, "wl", "gpus-wl")
    start = time.monotonic()
    for name in ("a", "b", "c"):
        custom.create_namespaced_custom_object(
            G, V, "wl", "workloads", build_workload(name, "wl", "videos", 2, GPU_POD)
        )

    def views() -> dict[str, QueueView]:
        items = custom.list_namespaced_custom_object(G, V, "wl", "workloads")["items"]
        return {w["metadata"]["name"]: QueueView.from_workload(w, {}) for w in items}

    first = wait_for(
        lambda: next((n for n, v in views().items() if v.admitted), None), "an admission", 30, interval=0.05
    )
    admitted_s = time.monotonic() - start
    wait_for(lambda: all(v.message for v in views().values() if not v.admitted), "Kueue's reasons", 30)
    workload = custom.get_namespaced_custom_object(G, V, "wl", "workloads", first)
    start = time.monotonic()
    custom.patch_namespaced_custom_object_status(
        G, V, "wl", "workloads", first, finish_patch(workload, True, "done", datetime.datetime.now(datetime.UTC))
    )
    wait_for(
        lambda: sum(v.admitted and not v.finished for v in views().values()) == 1,
        "the next admission",
        30,
        interval=0.05,
    )
    return {
        "pods_while_two_wait": len(core.list_namespaced_pod("wl").items),
        "first_admission_s": round(admitted_s, 2),
        "finished_to_next_admission_s": round(time.monotonic() - start, 2),
        "waiting_reason": next(v.message for v in views().values() if not v.admitted),
    }


def pod_group_design(dev: DevCluster, core: client.CoreV1Api, custom: client.CustomObjectsApi) -> dict:
    """Kueue again, with its pod integration and the pod webhooks for namespace pg."""
    dev.procs.stop(kueue.SERVICE_NAME, grace=2)
    webhook_port, health_port = free_ports(2)
    secret = kueue.webhook_secret_data()
    docs = kueue.manifests(webhook_port, secret["ca.crt"], secret)
    bundle = base64.b64encode(secret["ca.crt"]).decode()
    for config in yaml.safe_load_all((kueue.kueue_dir() / "webhooks.yaml").read_text()):
        kind = "mutating" if config["kind"].startswith("Mutating") else "validating"
        target = next(d for d in docs if d["metadata"].get("name") == f"kueue-{kind}-webhook-configuration")
        for hook in config["webhooks"]:
            if hook["rules"][0]["resources"] == ["pods"]:
                url = f"https://127.0.0.1:{webhook_port}{hook['clientConfig']['service']['path']}"
                target["webhooks"].append(
                    {
                        **hook,
                        "clientConfig": {"url": url, "caBundle": bundle},
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "pg"}},
                    }
                )
    dev._apply(docs)
    cert_dir = dev.state.certs / "kueue"
    for name, content in secret.items():
        (cert_dir / name).write_bytes(content)
    config = kueue.configuration(webhook_port, health_port, cert_dir, [])
    config["integrations"]["frameworks"] = ["batch/job", "pod"]
    config["managedJobsNamespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": "pg"}}
    config_file = dev.state.root / "kueue-pod-groups.yaml"
    config_file.write_text(yaml.safe_dump(config))
    dev.procs.start(
        kueue.SERVICE_NAME,
        [str(kueue.kueue_dir() / "kueue"), f"--config={config_file}", "--feature-gates=VisibilityOnDemand=false"],
        env={**os.environ, "KUBECONFIG": str(dev.state.kubeconfig)},
    )
    wait_for(lambda: kueue._ready(f"http://127.0.0.1:{health_port}/readyz"), "kueue", 120)
    core.create_namespace({"metadata": {"name": "pg"}})
    queues(custom, "pg", "gpus-pg")
    start = time.monotonic()
    for group in ("a", "b", "c"):
        for rank in range(2):
            core.create_namespaced_pod(
                "pg",
                {
                    "metadata": {
                        "name": f"{group}-{rank}",
                        "labels": {"kueue.x-k8s.io/queue-name": "videos", "kueue.x-k8s.io/pod-group-name": group},
                        "annotations": {"kueue.x-k8s.io/pod-group-total-count": "2"},
                    },
                    "spec": GPU_POD,
                },
            )

    def gated() -> int:
        return sum(bool(p.spec.scheduling_gates) for p in core.list_namespaced_pod("pg").items)

    wait_for(lambda: gated() == 4, "one group ungated", 30, interval=0.05)
    pods = core.list_namespaced_pod("pg").items
    return {
        "pods_while_two_wait": len(pods),
        "gated_pods": gated(),
        "first_admission_s": round(time.monotonic() - start, 2),
        "pods_with_kueue_finalizer": sum(bool(p.metadata.finalizers) for p in pods),
    }


def pod_creation_with_kueue_down(dev: DevCluster, core: client.CoreV1Api) -> dict:
    dev.procs.stop(kueue.SERVICE_NAME, grace=2)
    result = {}
    for namespace in ("wl", "pg"):
        try:
            core.create_namespaced_pod(
                namespace, {"metadata": {"name": "plain"}, "spec": {"containers": [{"name": "w", "image": "x"}]}}
            )
            result[namespace] = "created"
        except client.exceptions.ApiException as err:
            result[namespace] = f"refused: HTTP {err.status}"
    return {"workload_namespace": result["wl"], "pod_group_namespace": result["pg"]}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="kueue-designs-") as state:
        dev = DevCluster.up(state, with_operator=False)
        try:
            start = time.monotonic()
            kueue.start_kueue(dev)
            started_s = round(time.monotonic() - start, 1)
            api = dev.api_client()
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            custom.create_cluster_custom_object(
                G,
                V,
                "resourceflavors",
                {"apiVersion": f"{G}/{V}", "kind": "ResourceFlavor", "metadata": {"name": "default"}, "spec": {}},
            )
            results = {
                "kueue_start_s": started_s,
                "workload": workload_design(core, custom),
                "pod_group": pod_group_design(dev, core, custom),
                "plain_pod_with_kueue_stopped": pod_creation_with_kueue_down(dev, core),
            }
        finally:
            dev.down()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
