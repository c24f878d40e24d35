"""Pure builders of the objects a GenerationJob runs on: plain dicts, no cluster needed.

One headless Service and one pod per node rank (docs/generationjob.md names them), the job's own worker
identity (a ServiceAccount whose Role reaches only this job) and a NetworkPolicy that admits traffic to
the worker pods only from the same job's ranks. Owner references are added by the caller with kopf.adopt
(gang.py), so the garbage collector removes all of it with the job.
"""

from __future__ import annotations

from typing import Any

from chitu_api.names import (
    ATTEMPT_LABEL,
    JOB_NAME_LABEL,
    MODEL_VOLUME,
    RANK_LABEL,
    ROLE_LABEL,
    WORKER_COMMAND,
    WORKER_CONTAINER,
    WORKER_IDENTITY,
    WORKER_ROLE,
    master_addr,
    pod_name,
    rendezvous_port,
    service_name,
    worker_identity,
)
from chitu_api.operatorconfig import WorkerDefaults
from chitu_api.podenv import PodEnv, container_env
from chitu_api.podpolicy import worker_resources

from .lifecycle import Job
from .podtemplate import apply_template, layer
from .queueing import QueueView
from .rbac import job_worker_rules

DEFAULT_PLATFORM = WorkerDefaults()

RBAC_API = "rbac.authorization.k8s.io/v1"
MANAGED_BY = {"app.kubernetes.io/managed-by": "chitu-operator"}


def build_service(job: Job) -> dict[str, Any]:
    """Headless, publishing not-ready addresses: ranks resolve rank 0 before any of them is Ready."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(job.name),
            "namespace": job.namespace,
            "labels": {JOB_NAME_LABEL: job.name, **MANAGED_BY},
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {JOB_NAME_LABEL: job.name, ROLE_LABEL: WORKER_ROLE},
            "ports": [{"name": "rendezvous", "port": rendezvous_port(job.uid), "targetPort": rendezvous_port(job.uid)}],
        },
    }


def build_pod(
    job: Job, rank: int, attempt: int, platform: WorkerDefaults = DEFAULT_PLATFORM, placement: QueueView | None = None
) -> dict[str, Any]:
    """The pod of node rank ``rank`` in restart attempt ``attempt`` (same name in every attempt): the platform's
    defaults under the job's own pod fields (podtemplate.py), then the node labels and tolerations of the flavor
    Kueue admitted the gang to (``placement``). The queue label stays on the job: its Workload is the gang's."""
    spec, worker = job.spec, job.spec.worker
    template = layer(platform, worker, job.spec.scheduling)
    name = pod_name(job.name, rank)
    labels = {
        **template.labels,
        **MANAGED_BY,
        JOB_NAME_LABEL: job.name,
        RANK_LABEL: str(rank),
        ROLE_LABEL: WORKER_ROLE,
        ATTEMPT_LABEL: str(attempt),
    }
    container = {
        "name": WORKER_CONTAINER,
        "image": worker.image,
        "imagePullPolicy": worker.image_pull_policy,
        "command": list(worker.command or WORKER_COMMAND),
        "env": build_worker_env(job, rank, attempt),
        "resources": build_resources(job),
        "ports": [{"name": "rendezvous", "containerPort": rendezvous_port(job.uid)}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "hostname": name,
        "subdomain": service_name(job.name),
        "serviceAccountName": worker_service_account(job),
        "enableServiceLinks": False,
        "containers": [container],
    }
    if spec.model.volume:
        pod_spec["volumes"] = [{**spec.model.volume, "name": MODEL_VOLUME}]
        container["volumeMounts"] = [{"name": MODEL_VOLUME, "mountPath": spec.model.mount_path, "readOnly": True}]
    metadata = {"name": name, "namespace": job.namespace, "labels": labels}
    if template.annotations:
        metadata["annotations"] = dict(template.annotations)
    pod = apply_template(
        {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec},
        template,
        spec.parallelism.gpus_per_pod,
    )
    if placement is not None:
        pod["spec"]["nodeSelector"] = {**pod["spec"].get("nodeSelector", {}), **placement.node_selector}
        pod["spec"]["tolerations"] = [*pod["spec"].get("tolerations", []), *map(dict, placement.tolerations)]
        pod["spec"] = {key: value for key, value in pod["spec"].items() if value != {} and value != []}
    return pod


def build_worker_env(job: Job, rank: int, attempt: int) -> list[dict[str, Any]]:
    """The worker's environment (the contract's PodEnv, chitu_api.podenv), then the user's extra variables."""
    parallelism, output = job.spec.parallelism, job.spec.output
    values = PodEnv(
        job_name=job.name,
        job_namespace=job.namespace,
        job_uid=job.uid,
        restart_attempt=attempt,
        master_addr=master_addr(job.name, job.namespace),
        master_port=rendezvous_port(job.uid),
        nnodes=parallelism.pods,
        node_rank=rank,
        nproc_per_node=parallelism.procs_per_pod,
        world_size=parallelism.world_size,
        s3_endpoint=output.endpoint,
        region=output.region,
        output_uri=output.uri,
    )
    return container_env(values, output.credentials_secret_ref) + [dict(var) for var in job.spec.worker.env]


def build_resources(job: Job) -> dict[str, Any]:
    """The user's requests/limits with the GPU count the parallelism needs (the contract's, which checked them)."""
    return worker_resources(job.spec)


def worker_service_account(job: Job) -> str:
    """The pods' ServiceAccount: the job's own identity, unless spec.worker names another (the user's to bind)."""
    account = job.spec.worker.service_account_name
    return worker_identity(job.name) if account == WORKER_IDENTITY else account


def build_worker_identity(job: Job) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding <job>-worker: the workers may read this job and patch its status,
    nothing else (a worker's token used to reach every job of its namespace)."""
    name = worker_identity(job.name)
    metadata = {"name": name, "namespace": job.namespace, "labels": {JOB_NAME_LABEL: job.name, **MANAGED_BY}}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(metadata)},
        {
            "apiVersion": RBAC_API,
            "kind": "Role",
            "metadata": dict(metadata),
            "rules": [rule.manifest() for rule in job_worker_rules(job.name)],
        },
        {
            "apiVersion": RBAC_API,
            "kind": "RoleBinding",
            "metadata": dict(metadata),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": job.namespace}],
        },
    ]


def build_network_policy(job: Job) -> dict[str, Any]:
    """Only the job's own ranks reach its worker pods (rendezvous, and the collectives' own ports, which gloo
    and NCCL pick at run time); the pods' egress (S3, the API) is not restricted here."""
    ranks = {"matchLabels": {JOB_NAME_LABEL: job.name, ROLE_LABEL: WORKER_ROLE}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": service_name(job.name),
            "namespace": job.namespace,
            "labels": {JOB_NAME_LABEL: job.name, **MANAGED_BY},
        },
        "spec": {"podSelector": ranks, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": ranks}]}]},
    }
