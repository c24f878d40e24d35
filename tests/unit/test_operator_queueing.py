"""Kueue Workload builder and the admission read back from it (pure; tests/e2e/test_kueue.py runs real Kueue)."""

from __future__ import annotations

import datetime

from chitu_operator.queueing import (
    WORKLOAD_PRIORITY_SOURCE,
    QueueView,
    WorkloadPriority,
    build_workload,
    finish_patch,
    requeue_patch,
    workload_name,
)

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
POD_SPEC = {"containers": [{"name": "worker", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}
FLAVORS = {
    "h200": {
        "spec": {
            "nodeLabels": {"gpu": "h200"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        }
    }
}


def condition(kind: str, status: str, reason: str = "R", message: str = "") -> dict:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-12-01T11:00:00Z",
    }


def test_one_workload_holds_the_whole_gang():
    workload = build_workload(
        "cats",
        "ns",
        "videos",
        pods=3,
        pod_spec=POD_SPEC,
        priority=WorkloadPriority("urgent", WORKLOAD_PRIORITY_SOURCE, 1000),
    )
    assert workload["metadata"]["name"] == workload_name("cats") == "generationjob-cats"
    assert workload["spec"]["queueName"] == "videos"
    (pod_set,) = workload["spec"]["podSets"]
    assert pod_set["count"] == 3 and pod_set["template"]["spec"] == POD_SPEC
    assert (workload["spec"]["priorityClassName"], workload["spec"]["priority"]) == ("urgent", 1000)
    assert workload["spec"]["priorityClassSource"] == WORKLOAD_PRIORITY_SOURCE


def test_waiting_workload_reports_kueues_reason():
    view = QueueView.from_workload(
        {
            "status": {
                "conditions": [
                    condition("QuotaReserved", "False", "Pending", "couldn't assign flavors: insufficient quota")
                ]
            }
        },
        FLAVORS,
    )
    assert view.exists and not view.admitted and not view.reserved
    assert "insufficient quota" in view.message


def test_admitted_workload_steers_pods_to_the_assigned_flavor():
    view = QueueView.from_workload(
        {
            "status": {
                "conditions": [condition("QuotaReserved", "True"), condition("Admitted", "True")],
                "admission": {
                    "clusterQueue": "gpus",
                    "podSetAssignments": [
                        {"name": "workers", "flavors": {"nvidia.com/gpu": "h200", "cpu": "h200"}, "count": 2}
                    ],
                },
            }
        },
        FLAVORS,
    )
    assert view.admitted and view.reserved and not view.evicted
    assert view.node_selector == {"gpu": "h200"}
    assert view.tolerations == ({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},)


def test_eviction_then_requeue_gives_the_quota_back():
    workload = {
        "metadata": {"generation": 1},
        "status": {
            "conditions": [
                condition("QuotaReserved", "True"),
                condition("Admitted", "True"),
                condition("Evicted", "True", "Preempted", "preempted by a higher priority job"),
            ],
            "admission": {"clusterQueue": "gpus", "podSetAssignments": []},
        },
    }
    view = QueueView.from_workload(workload, FLAVORS)
    assert view.evicted and view.reserved and view.message == "preempted by a higher priority job"
    patch = requeue_patch(workload, NOW)
    assert patch["status"]["admission"] is None
    kinds = {c["type"]: (c["status"], c["reason"]) for c in patch["status"]["conditions"]}
    assert kinds["QuotaReserved"] == ("False", "Pending")
    assert kinds["Admitted"][0] == "False"
    assert kinds["Requeued"] == ("True", "Preempted")
    assert kinds["Evicted"] == ("True", "Preempted")  # Kueue clears it when it admits again


def test_finish_releases_the_quota():
    patch = finish_patch(
        {"status": {"conditions": [condition("Admitted", "True")]}}, succeeded=False, message="rank 0 failed", now=NOW
    )
    finished = next(c for c in patch["status"]["conditions"] if c["type"] == "Finished")
    assert (finished["status"], finished["reason"], finished["message"]) == ("True", "Failed", "rank 0 failed")
    assert QueueView.from_workload(patch, {}).finished
