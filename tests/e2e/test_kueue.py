"""Gang admission by the real Kueue (v0.17, built from its Go module) on the hermetic control plane.

A ClusterQueue with quota for 2 GPUs and 2-GPU GenerationJobs (two 1-GPU pods each): one job runs while the
others wait in the queue with no pod at all, and all reach Succeeded in turn; a gang that does not fit whole
is never started; a preempted job loses its pods, waits, and is admitted again. Worker pods run a small
script gated by files (as in test_generationjob_lifecycle.py), so a test decides when a gang finishes.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chitu_api.names import GROUP, PLURAL, VERSION
from chitu_devcluster.kueue import SERVICE_NAME, start_kueue
from chitu_devcluster.waiting import wait_for
from chitu_operator.queueing import KUEUE_GROUP, KUEUE_VERSION, workload_name

TIMEOUT = 60
QUEUE = "videos"
WAIT_FOR_GATE = """
    import os, time
    while not os.path.exists(os.environ["GATE"]):
        time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def kueue(cluster) -> Iterator[None]:
    start_kueue(cluster)
    try:
        yield
    finally:
        cluster.procs.stop(SERVICE_NAME)


@pytest.fixture
def queue(kueue, k8s, namespace) -> Iterator[str]:
    """A ClusterQueue of 2 GPUs (preemption of lower priority within it) and a LocalQueue in the namespace."""
    cluster_queue = f"gpus-{namespace}"
    objects = [
        ("resourceflavors", None, {"metadata": {"name": "default"}, "spec": {}}),
        (
            "clusterqueues",
            None,
            {
                "metadata": {"name": cluster_queue},
                "spec": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                    "preemption": {"withinClusterQueue": "LowerPriority"},
                    "resourceGroups": [
                        {
                            "coveredResources": ["nvidia.com/gpu"],
                            "flavors": [
                                {"name": "default", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 2}]}
                            ],
                        }
                    ],
                },
            },
        ),
        ("localqueues", namespace, {"metadata": {"name": QUEUE}, "spec": {"clusterQueue": cluster_queue}}),
        ("workloadpriorityclasses", None, {"metadata": {"name": "urgent"}, "value": 1000}),
    ]
    for plural, ns, body in objects:
        body = {"apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}", "kind": _kind(plural), **body}
        try:
            if ns:
                k8s.custom.create_namespaced_custom_object(KUEUE_GROUP, KUEUE_VERSION, ns, plural, body)
            else:
                k8s.custom.create_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, plural, body)
        except Exception as err:  # the flavor and the priority class are shared by the module's tests
            if getattr(err, "status", None) != 409:
                raise
    yield QUEUE
    k8s.custom.delete_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "clusterqueues", cluster_queue)


def _kind(plural: str) -> str:
    return {
        "resourceflavors": "ResourceFlavor",
        "clusterqueues": "ClusterQueue",
        "localqueues": "LocalQueue",
        "workloadpriorityclasses": "WorkloadPriorityClass",
    }[plural]


def gang(name: str, gates: Path, *, cp_size: int = 1, labels: dict | None = None) -> dict:
    """cfg 2 x cpSize, one GPU per pod: 2 * cp_size pods, each waiting for the file gates/<name>."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GenerationJob",
        "metadata": {"name": name, "labels": {"kueue.x-k8s.io/queue-name": QUEUE, **(labels or {})}},
        "spec": {
            "model": {"uri": "/models/unused"},
            "prompts": ["a cat"],
            "parallelism": {"cfg": 2, "cpSize": cp_size, "upLimit": cp_size, "gpusPerPod": 1},
            "output": {"uri": "s3://videos/e2e"},
            "worker": {
                "image": "unused",
                "command": ["python", "-c", textwrap.dedent(WAIT_FOR_GATE)],
                "env": [{"name": "GATE", "value": str(gates / name)}],
            },
        },
    }


class Queue:
    def __init__(self, k8s, cluster, namespace: str):
        self.k8s, self.cluster, self.namespace = k8s, cluster, namespace

    def create(self, manifest: dict) -> None:
        self.k8s.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest)

    def job(self, name: str) -> dict:
        return self.k8s.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def phase(self, name: str) -> str | None:
        return (self.job(name).get("status") or {}).get("phase")

    def condition(self, name: str, kind: str) -> dict:
        return next((c for c in (self.job(name).get("status") or {}).get("conditions") or [] if c["type"] == kind), {})

    def pods(self, name: str) -> list:
        return self.k8s.core.list_namespaced_pod(self.namespace, label_selector=f"chitu.dev/job-name={name}").items

    def wait_phase(self, name: str, phase: str, timeout: float = TIMEOUT) -> None:
        wait_for(
            lambda: self.phase(name) == phase,
            f"{name} to be {phase}",
            timeout,
            interval=0.2,
            detail=lambda: f"{self.job(name).get('status')}\n{self.cluster.procs.log_tail('operator')}",
        )

    def wait_queued(self, name: str, reason: str = "WaitingForAdmission", says: str = "") -> dict:
        """The job's Queued condition once it is True with ``reason`` and a message containing ``says``."""

        def queued() -> dict | None:
            found = self.condition(name, "Queued")
            ok = found.get("status") == "True" and found.get("reason") == reason and says in found.get("message", "")
            return found if ok else None

        return wait_for(
            queued,
            f"{name} to be queued ({reason}, {says!r})",
            TIMEOUT,
            interval=0.2,
            detail=lambda: f"{self.job(name).get('status')}\n{self.cluster.procs.log_tail('operator')}",
        )

    def workload(self, name: str) -> dict:
        return self.k8s.custom.get_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, self.namespace, "workloads", workload_name(name)
        )


@pytest.fixture
def jobs(k8s, operator_process, namespace, queue) -> Queue:
    return Queue(k8s, operator_process, namespace)


def test_one_gang_runs_the_others_wait_without_pods_then_all_succeed(jobs, tmp_path):
    jobs.create(gang("first", tmp_path))
    jobs.wait_phase("first", "Running")
    jobs.create(gang("second", tmp_path))
    jobs.create(gang("third", tmp_path))
    for name in ("second", "third"):
        jobs.wait_queued(name, says="insufficient unused quota for nvidia.com/gpu")  # Kueue's own words
    time.sleep(2)  # a few reconcile ticks: still nothing of theirs exists
    assert not jobs.pods("second") and not jobs.pods("third")
    assert jobs.phase("second") == jobs.phase("third") == "Pending"
    assert len(jobs.pods("first")) == 2

    order = ["first"]
    for _ in range(3):
        running = order[-1]
        (tmp_path / running).touch()
        jobs.wait_phase(running, "Succeeded")
        waiting = [name for name in ("second", "third") if name not in order]
        if not waiting:
            break
        started = wait_for(
            lambda waiting=waiting: next((n for n in waiting if jobs.phase(n) == "Running"), None),
            "the next queued job to run",
            TIMEOUT,
            interval=0.2,
        )
        others = [n for n in waiting if n != started]
        assert all(not jobs.pods(n) for n in others), "a job ran before its admission"
        order.append(started)
    assert sorted(order) == ["first", "second", "third"]
    assert all(jobs.phase(name) == "Succeeded" for name in order)
    assert jobs.workload("third")["status"]["conditions"][-1]["type"] == "Finished" or any(
        c["type"] == "Finished" and c["status"] == "True" for c in jobs.workload("third")["status"]["conditions"]
    )


def test_a_gang_larger_than_the_quota_never_starts_a_pod(jobs, tmp_path):
    jobs.create(gang("too-big", tmp_path, cp_size=2))  # 4 pods x 1 GPU on a 2-GPU queue
    jobs.wait_queued("too-big", says="nvidia.com/gpu")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert not jobs.pods("too-big"), "part of a gang was created"
        time.sleep(0.25)
    assert jobs.phase("too-big") == "Pending"


def test_preempted_gang_stops_waits_and_runs_again(jobs, tmp_path):
    jobs.create(gang("low", tmp_path))
    jobs.wait_phase("low", "Running")
    jobs.create(gang("high", tmp_path, labels={"kueue.x-k8s.io/priority-class": "urgent"}))
    jobs.wait_queued("low", reason="Evicted")
    wait_for(lambda: not jobs.pods("low"), "the preempted gang's pods to be gone", TIMEOUT, interval=0.2)
    jobs.wait_phase("high", "Running")
    (tmp_path / "high").touch()
    jobs.wait_phase("high", "Succeeded")
    jobs.wait_phase("low", "Running")
    (tmp_path / "low").touch()
    jobs.wait_phase("low", "Succeeded")
    assert jobs.job("low")["status"]["restarts"] == 0  # a preemption is not a failure
