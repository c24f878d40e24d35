"""Cluster I/O for one job: create what is absent, delete what the lifecycle decided, nothing else.

Every call is idempotent (409 AlreadyExists and 404 NotFound are success) because a decision may be
carried out twice: by a retried handler or by a restarted operator. Deletions carry the pod's uid as
a precondition, so a decision about an old pod can never delete its same-named successor.

A create the apiserver refuses for good (403 Forbidden: a PodSecurity violation, a missing PriorityClass;
422 Invalid) raises CreateRefused with the apiserver's own message, for the job's condition: retrying
the same create would only repeat the refusal. Two 403s are not final and are raised as the ApiException they
are, for the caller to retry with backoff: a quota refusal ("exceeded quota"), and the operator's own RBAC
refusing it ('User "..." cannot create ...'), which is the platform's to fix, not the job's, and which a
restarted apiserver answers until its role cache is loaded ('clusterrole ... "chitu-operator" not found').
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from chitu_api.names import GROUP, PLURAL, VERSION, WORKER_IDENTITY, service_name
from chitu_api.operatorconfig import WorkerDefaults

from . import health
from . import queueing as q
from .lifecycle import Decision, Job
from .manifests import (
    DEFAULT_PLATFORM,
    build_network_policy,
    build_pod,
    build_service,
    build_worker_identity,
)
from .pods import PodView
from .status import FINISHED_PHASES, SUCCEEDED

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 1024
# Creations of all jobs share these threads (kopf's handler threads wait on them): a burst of new jobs does
# not open more connections to the apiserver than this.
_CREATORS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="create")


@dataclass(frozen=True)
class KubeClients:
    core: client.CoreV1Api
    rbac: client.RbacAuthorizationV1Api
    custom: client.CustomObjectsApi
    networking: client.NetworkingV1Api

    @classmethod
    def from_api_client(cls, api: client.ApiClient) -> KubeClients:
        return cls(
            client.CoreV1Api(api),
            client.RbacAuthorizationV1Api(api),
            client.CustomObjectsApi(api),
            client.NetworkingV1Api(api),
        )


class CreateRefused(Exception):
    """The apiserver refused, for good, an object the job needs; the message is the apiserver's."""


def ensure_gang(
    kube: KubeClients,
    body: Mapping[str, Any],
    job: Job,
    ranks: Iterable[int],
    platform: WorkerDefaults = DEFAULT_PLATFORM,
    placement: q.QueueView | None = None,
) -> None:
    """The job's worker identity, NetworkPolicy and Service (first attempt: they live as long as the job, and a
    restart does not ask for them again), then the given ranks' pods of the current attempt, each owned by the
    job. Objects are created concurrently in three rounds, each needing the one before: what stands alone
    (ServiceAccount, Role, NetworkPolicy, Service); the RoleBinding (the apiserver checks its Role exists); the
    pods (the worker's token must reach its job when it starts)."""
    rounds: list[list[tuple[Callable[..., Any], dict[str, Any]]]] = [[], [], []]
    if job.attempt == 0:
        if job.spec.worker.service_account_name == WORKER_IDENTITY:
            creators = {
                "ServiceAccount": (0, kube.core.create_namespaced_service_account),
                "Role": (0, kube.rbac.create_namespaced_role),
                "RoleBinding": (1, kube.rbac.create_namespaced_role_binding),
            }
            for manifest in build_worker_identity(job):
                stage, create = creators[manifest["kind"]]
                rounds[stage].append((create, manifest))
        rounds[0].append((kube.networking.create_namespaced_network_policy, build_network_policy(job)))
        rounds[0].append((kube.core.create_namespaced_service, build_service(job)))
    rounds[2] = [
        (kube.core.create_namespaced_pod, build_pod(job, rank, job.attempt, platform, placement)) for rank in ranks
    ]
    for creations in rounds:
        for _, manifest in creations:
            kopf.adopt(manifest, owner=body)
        _create_all(creations, job.namespace)


def touches_cluster(decision: Decision, queue: QueuedWorkload | None) -> bool:
    """Whether carrying ``decision`` out calls the apiserver (a bare transition does not: its status patch is
    kopf's, after the handler)."""
    creates = decision.create_ranks or decision.create_workload
    return bool(decision.delete_pods or decision.delete_service or creates or (queue and queue.workload is not None))


def carry_out(
    kube: KubeClients,
    body: Mapping[str, Any],
    job: Job | None,
    decision: Decision,
    platform: WorkerDefaults = DEFAULT_PLATFORM,
    queue: QueuedWorkload | None = None,
) -> None:
    """The decision's deletions and creations, and its Workload updates (its status patch is the caller's)."""
    namespace = body["metadata"]["namespace"]
    for pod in decision.delete_pods:
        delete_pod(kube, namespace, pod)
    if decision.delete_service:
        _ignore(404, kube.core.delete_namespaced_service, service_name(body["metadata"]["name"]), namespace)
    if decision.create_ranks and job is not None:
        ensure_gang(kube, body, job, decision.create_ranks, platform, queue.view if queue else None)
    if decision.create_workload and job is not None:
        workload = q.build_workload(
            job.name,
            namespace,
            job.queue_name,
            job.spec.parallelism.pods,
            build_pod(job, 0, job.attempt, platform)["spec"],
            _priority(kube, job),
        )
        kopf.adopt(workload, owner=body)
        _create(
            lambda ns, manifest, **options: kube.custom.create_namespaced_custom_object(
                q.KUEUE_GROUP, q.KUEUE_VERSION, ns, q.WORKLOADS, manifest, **options
            ),
            namespace,
            workload,
        )
    if queue is None or queue.workload is None:
        return
    now = datetime.datetime.now(datetime.UTC)
    if decision.requeue_workload:
        _patch_workload(kube, queue.workload, q.requeue_patch(queue.workload, now))
    finished = decision.transition and decision.transition.phase in FINISHED_PHASES
    if finished and not queue.view.finished:
        _patch_workload(
            kube,
            queue.workload,
            q.finish_patch(queue.workload, decision.transition.phase == SUCCEEDED, decision.transition.message, now),
        )


@dataclass(frozen=True)
class QueuedWorkload:
    """A queued job's Workload as read this tick (None: not created yet) and the lifecycle's view of it."""

    workload: Mapping[str, Any] | None
    view: q.QueueView


def read_queue(kube: KubeClients, job: Job) -> QueuedWorkload:
    """The job's Workload and the ResourceFlavors its admission names (one GET each, only for queued jobs)."""
    try:
        workload = kube.custom.get_namespaced_custom_object(
            q.KUEUE_GROUP, q.KUEUE_VERSION, job.namespace, q.WORKLOADS, q.workload_name(job.name)
        )
    except ApiException as err:
        if err.status != 404:
            raise
        return QueuedWorkload(None, q.QueueView.absent())
    names = {
        name
        for assignment in ((workload.get("status") or {}).get("admission") or {}).get("podSetAssignments") or []
        for name in (assignment.get("flavors") or {}).values()
    }
    flavors = {
        name: kube.custom.get_cluster_custom_object(q.KUEUE_GROUP, q.KUEUE_VERSION, q.RESOURCE_FLAVORS, name)
        for name in sorted(names)
    }
    return QueuedWorkload(workload, q.QueueView.from_workload(workload, flavors))


def _priority(kube: KubeClients, job: Job) -> q.WorkloadPriority | None:
    """The gang's priority: the job's WorkloadPriorityClass label, else its pods' PriorityClass."""
    if name := job.labels.get(q.PRIORITY_CLASS_LABEL):
        value = kube.custom.get_cluster_custom_object(
            q.KUEUE_GROUP, q.KUEUE_VERSION, q.WORKLOAD_PRIORITY_CLASSES, name
        )["value"]
        return q.WorkloadPriority(name, q.WORKLOAD_PRIORITY_SOURCE, int(value))
    if name := job.spec.scheduling.priority_class_name:
        value = client.SchedulingV1Api(kube.core.api_client).read_priority_class(name).value
        return q.WorkloadPriority(name, q.POD_PRIORITY_SOURCE, int(value))
    return None


def _patch_workload(kube: KubeClients, workload: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
    meta = workload["metadata"]
    kube.custom.patch_namespaced_custom_object_status(
        q.KUEUE_GROUP, q.KUEUE_VERSION, meta["namespace"], q.WORKLOADS, meta["name"], patch
    )


def delete_pod(kube: KubeClients, namespace: str, pod: PodView) -> None:
    # A pod on a lost node has no kubelet to confirm a graceful deletion: it goes at once (grace 0, health.py).
    grace = 0 if health.node_lost(pod) else None
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=pod.uid), grace_period_seconds=grace)
    # 409: the uid precondition failed, so that pod is already gone and a successor holds the name.
    _ignore((404, 409), kube.core.delete_namespaced_pod, pod.name, namespace, body=options)


def delete_job(kube: KubeClients, namespace: str, name: str, uid: str) -> None:
    """Background propagation: the garbage collector then deletes the pods and the Service."""
    options = client.V1DeleteOptions(propagation_policy="Background", preconditions=client.V1Preconditions(uid=uid))
    _ignore(
        (404, 409), kube.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name, body=options
    )


def _create_all(creations: list[tuple[Callable[..., Any], dict[str, Any]]], namespace: str) -> None:
    """Create each object concurrently; once all calls returned, raise the first error (in the given order)."""
    calls = [_CREATORS.submit(_create, create, namespace, manifest) for create, manifest in creations]
    wait(calls)
    for call in calls:
        call.result()


def _create(create: Callable[..., Any], namespace: str, manifest: dict[str, Any]) -> None:
    """Create one object; the response is not turned into the client's model objects (nothing reads it, and
    200 jobs' worth of them cost the operator CPU and memory)."""
    try:
        response = create(namespace, manifest, _preload_content=False)
        response.drain_conn()
        response.release_conn()
        log.info("created %s %s/%s", manifest["kind"], namespace, manifest["metadata"]["name"])
    except ApiException as err:
        if err.status == 409:
            return
        message = api_message(err)
        if refused_for_good(err.status, message):
            raise CreateRefused(
                f"creating {manifest['kind']} {manifest['metadata']['name']} was refused ({err.status}): {message}"
            ) from None
        raise


#: the apiserver's RBAC refusal of the requesting user: here, the operator itself
_OPERATOR_RBAC_REFUSAL = re.compile(r'is forbidden: User ".*" cannot ')


def refused_for_good(status: int, message: str) -> bool:
    """Whether the apiserver will refuse the same create again: it is invalid (422) or forbidden for the job's
    own sake (403: PodSecurity, an admission policy, a missing PriorityClass), not by quota or the operator's RBAC."""
    if status == 422:
        return True
    return status == 403 and "exceeded quota" not in message and not _OPERATOR_RBAC_REFUSAL.search(message)


def api_message(err: ApiException) -> str:
    """The apiserver's own explanation (the Status object's message), capped for a condition."""
    try:
        message = json.loads(err.body)["message"]
    except (TypeError, ValueError, KeyError):
        message = str(err.reason)
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "..."


def _ignore(statuses: int | tuple[int, ...], call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except ApiException as err:
        if err.status not in ((statuses,) if isinstance(statuses, int) else statuses):
            raise
