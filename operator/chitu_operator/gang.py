"""Cluster I/O for one job: create what is absent, delete what the lifecycle decided, nothing else.

Every call is idempotent (409 AlreadyExists and 404 NotFound are success) because a decision may be
carried out twice: by a retried handler or by a restarted operator. Deletions carry the pod's uid as
a precondition, so a decision about an old pod can never delete its same-named successor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from chitu_api.names import GROUP, PLURAL, VERSION, WORKER_IDENTITY, service_name

from .lifecycle import Decision, Job
from .manifests import build_pod, build_service, build_worker_role_binding, build_worker_service_account
from .pods import PodView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KubeClients:
    core: client.CoreV1Api
    rbac: client.RbacAuthorizationV1Api
    custom: client.CustomObjectsApi

    @classmethod
    def from_api_client(cls, api: client.ApiClient) -> KubeClients:
        return cls(client.CoreV1Api(api), client.RbacAuthorizationV1Api(api), client.CustomObjectsApi(api))


def ensure_gang(kube: KubeClients, body: Mapping[str, Any], job: Job, ranks: Iterable[int]) -> None:
    """The worker identity, the Service and the given ranks' pods of the current attempt."""
    if job.spec.worker.service_account_name == WORKER_IDENTITY:
        _create(kube.core.create_namespaced_service_account, job.namespace, build_worker_service_account(job.namespace))
        _create(kube.rbac.create_namespaced_role_binding, job.namespace, build_worker_role_binding(job.namespace))
    service = build_service(job)
    kopf.adopt(service, owner=body)
    _create(kube.core.create_namespaced_service, job.namespace, service)
    for rank in ranks:
        pod = build_pod(job, rank, job.attempt)
        kopf.adopt(pod, owner=body)
        _create(kube.core.create_namespaced_pod, job.namespace, pod)


def carry_out(kube: KubeClients, body: Mapping[str, Any], job: Job | None, decision: Decision) -> None:
    """The decision's deletions and creations (its status patch is the caller's)."""
    namespace = body["metadata"]["namespace"]
    for pod in decision.delete_pods:
        delete_pod(kube, namespace, pod)
    if decision.delete_service:
        _ignore(404, kube.core.delete_namespaced_service, service_name(body["metadata"]["name"]), namespace)
    if decision.create_ranks and job is not None:
        ensure_gang(kube, body, job, decision.create_ranks)


def delete_pod(kube: KubeClients, namespace: str, pod: PodView) -> None:
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=pod.uid))
    # 409: the uid precondition failed, so that pod is already gone and a successor holds the name.
    _ignore((404, 409), kube.core.delete_namespaced_pod, pod.name, namespace, body=options)


def delete_job(kube: KubeClients, namespace: str, name: str, uid: str) -> None:
    """Background propagation: the garbage collector then deletes the pods and the Service."""
    options = client.V1DeleteOptions(propagation_policy="Background", preconditions=client.V1Preconditions(uid=uid))
    _ignore((404, 409), kube.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name,
            body=options)


def _create(create: Callable[..., Any], namespace: str, manifest: dict[str, Any]) -> None:
    try:
        create(namespace, manifest)
        log.info("created %s %s/%s", manifest["kind"], namespace, manifest["metadata"]["name"])
    except ApiException as err:
        if err.status != 409:
            raise


def _ignore(statuses: int | tuple[int, ...], call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except ApiException as err:
        if err.status not in ((statuses,) if isinstance(statuses, int) else statuses):
            raise
