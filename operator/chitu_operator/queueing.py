"""Kueue gang admission for a GenerationJob: the job is one Kueue ``Workload`` with one pod set.

The operator plays the part Kueue's job integrations play for a batch Job (docs/kueue.md says why
this design and what was measured): a job naming a queue (``kueue.x-k8s.io/queue-name`` label or
``spec.scheduling.queueName``) gets a Workload owned by it, holding one pod set of ``pods`` copies of
the worker pod; no pod exists until Kueue admits the Workload, so a gang waiting for quota holds
nothing. Once admitted, the pods are created with the node labels and tolerations of the flavors
Kueue assigned. When Kueue evicts the Workload (preemption, deactivation), the operator deletes the
gang, then clears the admission so Kueue queues it again; the next attempt's workers skip the
prompts already stored. A finished job marks its Workload Finished, which releases the quota.

Everything here is pure: builders return manifests and status patches; ``QueueView`` is read from
the Workload and the ResourceFlavors the cluster holds.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chitu_api.names import JOB_NAME_LABEL

KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
WORKLOADS, RESOURCE_FLAVORS = "workloads", "resourceflavors"
POD_SET = "workers"
PRIORITY_CLASS_LABEL = "kueue.x-k8s.io/priority-class"  # on the job: a WorkloadPriorityClass's name
WORKLOAD_PRIORITY_CLASSES = "workloadpriorityclasses"
WORKLOAD_PRIORITY_SOURCE = "kueue.x-k8s.io/workloadpriorityclass"
POD_PRIORITY_SOURCE = "scheduling.k8s.io/priorityclass"
# Workload conditions written by Kueue (and, for Finished and the requeue, by the job's controller).
QUOTA_RESERVED, ADMITTED, EVICTED, FINISHED, REQUEUED = "QuotaReserved", "Admitted", "Evicted", "Finished", "Requeued"
REQUEUE_REASONS = frozenset({"Preempted", "NodeFailures"})  # Kueue's own job reconciler sets Requeued for these


def workload_name(job_name: str) -> str:
    """One Workload per job (it outlives the gang's restarts, like a batch Job's)."""
    return f"generationjob-{job_name}"[:253]


@dataclass(frozen=True)
class WorkloadPriority:
    """The gang's priority as Kueue orders and preempts by it (read from the class the job names)."""

    class_name: str
    source: str  # WORKLOAD_PRIORITY_SOURCE or POD_PRIORITY_SOURCE
    value: int


def build_workload(
    job_name: str,
    namespace: str,
    queue_name: str,
    pods: int,
    pod_spec: Mapping[str, Any],
    priority: WorkloadPriority | None = None,
) -> dict[str, Any]:
    """The Workload Kueue admits for the whole gang: ``pods`` copies of one worker pod spec.

    The pod spec is the one the gang will run (its containers' requests are what Kueue counts);
    owner references are added by the caller (kopf.adopt), as for the pods."""
    spec: dict[str, Any] = {
        "queueName": queue_name,
        "podSets": [{"name": POD_SET, "count": pods, "template": {"spec": dict(pod_spec)}}],
    }
    if priority:
        spec.update(priorityClassName=priority.class_name, priorityClassSource=priority.source, priority=priority.value)
    return {
        "apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}",
        "kind": "Workload",
        "metadata": {"name": workload_name(job_name), "namespace": namespace, "labels": {JOB_NAME_LABEL: job_name}},
        "spec": spec,
    }


@dataclass(frozen=True)
class QueueView:
    """What the lifecycle needs to know about a job's Workload."""

    exists: bool
    admitted: bool = False
    evicted: bool = False
    reserved: bool = False  # quota still held (an evicted Workload keeps it until the gang is gone)
    finished: bool = False
    message: str = ""  # Kueue's word on why the Workload waits or was evicted
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def absent(cls) -> QueueView:
        return cls(exists=False)

    @classmethod
    def from_workload(cls, workload: Mapping[str, Any], flavors: Mapping[str, Mapping[str, Any]]) -> QueueView:
        """``flavors``: ResourceFlavor objects by name (their node labels and tolerations steer the pods)."""
        status = workload.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        evicted = conditions.get(EVICTED, {})
        waiting = conditions.get(QUOTA_RESERVED, {})
        selector: dict[str, str] = {}
        tolerations: list[Mapping[str, Any]] = []
        for assignment in (status.get("admission") or {}).get("podSetAssignments") or []:
            for flavor_name in sorted(set((assignment.get("flavors") or {}).values())):
                flavor = (flavors.get(flavor_name) or {}).get("spec") or {}
                selector.update(flavor.get("nodeLabels") or {})
                tolerations += [t for t in flavor.get("tolerations") or [] if t not in tolerations]
        is_evicted = evicted.get("status") == "True"
        return cls(
            exists=True,
            admitted=_true(conditions, ADMITTED),
            evicted=is_evicted,
            reserved=_true(conditions, QUOTA_RESERVED),
            finished=_true(conditions, FINISHED),
            message=(evicted if is_evicted else waiting).get("message", ""),
            node_selector=selector,
            tolerations=tuple(tolerations),
        )


def requeue_patch(workload: Mapping[str, Any], now: datetime.datetime) -> dict[str, Any]:
    """After an eviction, once the gang is gone: give the quota back and queue again (what Kueue's own
    job reconciler does: QuotaReserved and Admitted False, admission cleared, Requeued True)."""
    conditions = list((workload.get("status") or {}).get("conditions") or [])
    evicted = next((c for c in conditions if c["type"] == EVICTED), {})
    reason, message = evicted.get("reason", "Evicted"), evicted.get("message", "evicted")
    for kind, value, why in (
        (QUOTA_RESERVED, "False", "Pending"),
        (ADMITTED, "False", "NoReservation"),
        (REQUEUED, "True" if reason in REQUEUE_REASONS else "False", reason),
    ):
        conditions = _set(conditions, kind, value, why, message, now, workload)
    return {"status": {"admission": None, "conditions": conditions}}


def finish_patch(workload: Mapping[str, Any], succeeded: bool, message: str, now: datetime.datetime) -> dict[str, Any]:
    """Finished True releases the Workload's quota to the next job in the queue."""
    conditions = list((workload.get("status") or {}).get("conditions") or [])
    reason = "Succeeded" if succeeded else "Failed"
    return {"status": {"conditions": _set(conditions, FINISHED, "True", reason, message, now, workload)}}


def _set(
    conditions: list[Mapping[str, Any]],
    kind: str,
    value: str,
    reason: str,
    message: str,
    now: datetime.datetime,
    workload: Mapping[str, Any],
) -> list[Mapping[str, Any]]:
    old = next((c for c in conditions if c["type"] == kind), None)
    moment = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    new = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == value else moment,
        "observedGeneration": (workload.get("metadata") or {}).get("generation", 0),
    }
    return [c for c in conditions if c["type"] != kind] + [new]


def _true(conditions: Mapping[str, Mapping[str, Any]], kind: str) -> bool:
    return conditions.get(kind, {}).get("status") == "True"
