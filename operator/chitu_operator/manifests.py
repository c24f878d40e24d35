"""Pure builders of the objects a GenerationJob runs on: plain dicts, no cluster needed.

One headless Service and one pod per node rank (docs/generationjob.md names them); the worker's
ServiceAccount and RoleBinding per namespace. Owner references are added by the caller with
kopf.adopt (gang.py), except on the shared worker identity, which belongs to no job.
"""

from __future__ import annotations

from typing import Any

from chitu_api.names import (
    ATTEMPT_LABEL,
    JOB_NAME_LABEL,
    KUEUE_QUEUE_LABEL,
    MASTER_PORT,
    MODEL_VOLUME,
    RANK_LABEL,
    ROLE_LABEL,
    WORKER_COMMAND,
    WORKER_CONTAINER,
    WORKER_IDENTITY,
    WORKER_ROLE,
    master_addr,
    pod_name,
    service_name,
)
from chitu_api.podenv import PodEnv, container_env

from .lifecycle import Job

GPU_RESOURCE = "nvidia.com/gpu"
MANAGED_BY = {"app.kubernetes.io/managed-by": "chitu-operator"}
RENDEZVOUS_PORT = {"name": "rendezvous", "containerPort": MASTER_PORT}


def build_service(job: Job) -> dict[str, Any]:
    """Headless, publishing not-ready addresses: ranks resolve rank 0 before any of them is Ready."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name(job.name), "namespace": job.namespace,
                     "labels": {JOB_NAME_LABEL: job.name, **MANAGED_BY}},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {JOB_NAME_LABEL: job.name, ROLE_LABEL: WORKER_ROLE},
                 "ports": [{"name": "rendezvous", "port": MASTER_PORT, "targetPort": MASTER_PORT}]},
    }


def build_pod(job: Job, rank: int, attempt: int) -> dict[str, Any]:
    """The pod of node rank ``rank`` in restart attempt ``attempt`` (same name in every attempt)."""
    spec, worker, scheduling = job.spec, job.spec.worker, job.spec.scheduling
    name = pod_name(job.name, rank)
    labels = {**worker.pod_labels, **MANAGED_BY, JOB_NAME_LABEL: job.name, RANK_LABEL: str(rank),
              ROLE_LABEL: WORKER_ROLE, ATTEMPT_LABEL: str(attempt)}
    if scheduling.queue_name:
        labels[KUEUE_QUEUE_LABEL] = scheduling.queue_name
    container = {
        "name": WORKER_CONTAINER, "image": worker.image, "imagePullPolicy": worker.image_pull_policy,
        "command": list(worker.command or WORKER_COMMAND), "env": build_worker_env(job, rank, attempt),
        "resources": build_resources(job), "ports": [RENDEZVOUS_PORT],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never", "hostname": name, "subdomain": service_name(job.name),
        "serviceAccountName": worker.service_account_name, "enableServiceLinks": False,
        "containers": [container],
    }
    if spec.model.volume:
        pod_spec["volumes"] = [{**spec.model.volume, "name": MODEL_VOLUME}]
        container["volumeMounts"] = [{"name": MODEL_VOLUME, "mountPath": spec.model.mount_path, "readOnly": True}]
    if scheduling.node_selector:
        pod_spec["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in scheduling.tolerations]
    if scheduling.priority_class_name:
        pod_spec["priorityClassName"] = scheduling.priority_class_name
    metadata = {"name": name, "namespace": job.namespace, "labels": labels}
    if worker.pod_annotations:
        metadata["annotations"] = dict(worker.pod_annotations)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def build_worker_env(job: Job, rank: int, attempt: int) -> list[dict[str, Any]]:
    """The worker's environment (the contract's PodEnv, chitu_api.podenv), then the user's extra variables."""
    parallelism, output = job.spec.parallelism, job.spec.output
    values = PodEnv(
        job_name=job.name, job_namespace=job.namespace, job_uid=job.uid, restart_attempt=attempt,
        master_addr=master_addr(job.name, job.namespace), master_port=MASTER_PORT, nnodes=parallelism.pods,
        node_rank=rank, nproc_per_node=parallelism.procs_per_pod, world_size=parallelism.world_size,
        s3_endpoint=output.endpoint, region=output.region,
    )
    return container_env(values, output.credentials_secret_ref) + [dict(var) for var in job.spec.worker.env]


def build_resources(job: Job) -> dict[str, Any]:
    """The user's requests/limits with the GPU count the parallelism needs (none for CPU-only pods)."""
    resources = {kind: dict(amounts) for kind, amounts in job.spec.worker.resources.items()}
    gpus = job.spec.parallelism.gpus_per_pod
    if gpus:
        resources.setdefault("limits", {})[GPU_RESOURCE] = str(gpus)
        if GPU_RESOURCE in resources.get("requests", {}):
            resources["requests"][GPU_RESOURCE] = str(gpus)  # extended resources need requests == limits
    return resources


def build_worker_service_account(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": WORKER_IDENTITY, "namespace": namespace, "labels": dict(MANAGED_BY)}}


def build_worker_role_binding(namespace: str) -> dict[str, Any]:
    """Grants the namespace's worker ServiceAccount the chitu-worker ClusterRole (rbac.py) here only."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": WORKER_IDENTITY, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": WORKER_IDENTITY},
        "subjects": [{"kind": "ServiceAccount", "name": WORKER_IDENTITY, "namespace": namespace}],
    }

