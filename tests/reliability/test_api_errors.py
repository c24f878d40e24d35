"""Writes that cannot succeed are not made, and a job that cannot progress is logged once per backoff
(issue 14: "4xx per job near zero"; defect (g): "one log line per stuck job per backoff, not a traceback per
retry").

The 4xx are the apiserver's own counters (chitu_devcluster.apimetrics, as bench/bench_operator_load.py reads
them), so they count every client: the operator, the controller-manager, the node agent, the workers.
"""

from __future__ import annotations

import time

from batch import dump

from chitu_api.names import GROUP, PLURAL, VERSION
from chitu_devcluster.apimetrics import RequestCounters, request_counters
from chitu_devcluster.podrunner import SIMULATE_WAITING_ANNOTATION

JOBS = 5
# The endpoints controller deletes the Endpoints of a deleted Service, and its own deletion event makes it
# sync that Service once more, which finds nothing and deletes again: one 404 per Service that ends, whoever
# deletes it (the operator at the job's end, or the garbage collector with the job). Kubernetes' own echo.
ENDPOINTS_ECHO = "DELETE endpoints 404"


def test_a_batch_costs_almost_no_refused_requests(batch, cluster):
    before = request_counters(cluster.api_client())
    for index in range(JOBS):
        batch.submit(f"quiet-{index}")
    jobs = batch.wait_finished(timeout=120)
    assert all(job["status"]["phase"] == "Succeeded" for job in jobs), dump(jobs)
    time.sleep(3)  # the Services' deletions reach the endpoints controller
    refused = RequestCounters.since(before, request_counters(cluster.api_client())).client_errors()
    echo = refused.pop(ENDPOINTS_ECHO, 0)
    # Before: pods with loopback IPs made every Endpoints/EndpointSlice write fail (~15 per job), a stale tick
    # started a job twice (a 409 per object) or finished it twice (a 404 Service delete).
    assert sum(refused.values()) <= 1, refused
    assert echo <= JOBS, echo


def _lines_about(cluster, job: str) -> list[str]:
    log = cluster.procs.log_path("operator").read_text(errors="replace")
    return [line for line in log.splitlines() if f"/{job}]" in line or f"/{job}-" in line]


def test_a_job_whose_pods_cannot_be_created_logs_one_line_per_backoff(batch, cluster, k8s, namespace):
    k8s.core.create_namespaced_resource_quota(
        namespace, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
    )
    time.sleep(2)  # the quota controller fills in the quota's usage: until then the apiserver refuses with 403 too
    batch.submit("no-room")
    watched = 30.0
    time.sleep(watched)
    lines = _lines_about(cluster, "no-room")
    retries = [line for line in lines if "retrying in" in line]
    # Backoff 5 s, doubling: tries at 0, 5, 15 s in the 30 s watched (one more if the apiserver is slow to answer).
    assert 1 <= len(retries) <= 4, lines
    assert all("exceeded quota" in line for line in retries), retries  # the apiserver's reason, on one line
    # ... and on the job, once: `kubectl describe` shows why nothing starts
    status = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "no-room").get("status", {})
    pending = [c for c in status.get("conditions", []) if c["type"] == "PodsPending"]
    assert [(c["status"], c["reason"]) for c in pending] == [("True", "CreateRetried")], status
    assert "exceeded quota" in pending[0]["message"], pending
    assert sum("CreateRetried" in line for line in lines) == 1, lines
    log = cluster.procs.log_path("operator").read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


def test_a_job_whose_pod_stays_pending_logs_its_cause_once(batch, cluster, k8s, namespace):
    job = batch.manifest("stays-pending")
    job["spec"]["worker"]["podAnnotations"] = {SIMULATE_WAITING_ANNOTATION: "ImagePullBackOff"}
    k8s.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
    time.sleep(20)
    lines = _lines_about(cluster, "stays-pending")
    pending = [line for line in lines if "ImagePullBackOff" in line]
    assert len(pending) == 1, lines  # the PodsPending condition, once; not a line (or a traceback) per tick
    assert "Traceback" not in cluster.procs.log_path("operator").read_text(errors="replace")
