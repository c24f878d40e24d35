"""Faults injected while batches of jobs run (issue 14, must-show 2), each followed by the same checks: every job
terminal and Succeeded, no output lost (each reported object is in S3), no prompt generated twice where the
fault does not kill a generating process, no job stuck. Each test adds its outcome to the reliability report.
"""

from __future__ import annotations

import json
import random
import time
import uuid

from batch import dump
from faultproxy import DOWN, FaultProxy

from chitu_devcluster.certs import CertPaths
from chitu_devcluster.controlplane import admin_tls, http_status
from chitu_devcluster.waiting import wait_for

BATCH_TIMEOUT = 240


def assert_clean(outcome, *, duplicates_allowed: int = 0) -> None:
    assert outcome.stuck == 0 and outcome.lost == 0, outcome
    assert outcome.phases == {"Succeeded": outcome.jobs}, outcome
    assert outcome.duplicates <= duplicates_allowed, outcome


def test_operator_sigkilled_ten_times_during_a_batch(batch, reliability_report):
    """Defect (a): a SIGKILL early in a burst orphaned a job for good."""
    cluster, rng = batch.cluster, random.Random(14)
    for index in range(20):
        batch.submit(f"burst-{index:02d}", seconds_per_prompt=1.0)
    for _ in range(10):
        time.sleep(rng.uniform(0.2, 2.5))
        cluster.kill_operator()
        cluster.start_operator()
    jobs = batch.wait_finished(BATCH_TIMEOUT)
    outcome = batch.outcome("operator SIGKILL at random points", 10, jobs)
    reliability_report.append(outcome)
    assert_clean(outcome)
    assert outcome.restarts == 0, dump(jobs)  # an operator crash is not a gang failure
    for job in jobs:
        assert len(batch.pods_of(job["metadata"]["name"])) == 1  # no duplicate pod


def restart_apiserver(cluster) -> None:
    """Stop kube-apiserver (SIGTERM) and start it again with the same command line; wait for /readyz."""
    record = json.loads((cluster.state.pids / "kube-apiserver.json").read_text())
    cluster.procs.stop("kube-apiserver")
    time.sleep(2)
    cluster.procs.start("kube-apiserver", record["argv"])
    tls = admin_tls(CertPaths(cluster.state.certs))
    wait_for(lambda: http_status(f"{cluster.server}/readyz", tls) == 200, "the apiserver to be ready again", 60)


def test_apiserver_restart_mid_run(batch, reliability_report):
    for index in range(5):
        batch.submit(f"restart-{index}", prompts=3, seconds_per_prompt=1.0)
    time.sleep(3)
    restart_apiserver(batch.cluster)
    jobs = batch.wait_finished(BATCH_TIMEOUT)
    outcome = batch.outcome("apiserver restart", 1, jobs)
    reliability_report.append(outcome)
    assert_clean(outcome)


def test_a_killed_rank_restarts_the_gang_and_keeps_finished_prompts(batch, reliability_report):
    name = f"gang-{uuid.uuid4().hex[:4]}"
    batch.submit(
        name,
        prompts=3,
        seconds_per_prompt=2.0,
        parallelism={"cfg": 2, "gpusPerPod": 0},
        run_policy={"restartBackoffSeconds": 1},
    )

    def first_prompt_reported():
        job = next((j for j in batch.jobs() if j["metadata"]["name"] == name), {})
        return ((job.get("status") or {}).get("progress") or {}).get("promptsDone", 0) >= 1

    wait_for(first_prompt_reported, "prompt 0 to be reported", 60, interval=0.2)
    rank_1 = next(p for p in batch.pods_of(name) if p.metadata.labels["chitu.dev/rank"] == "1")
    record = batch.cluster.state.pods / batch.namespace / rank_1.metadata.name / rank_1.metadata.uid / "pid.json"
    from chitu_devcluster.processes import kill_recorded

    kill_recorded(record)
    jobs = batch.wait_finished(BATCH_TIMEOUT)
    outcome = batch.outcome("rank killed", 1, jobs)
    reliability_report.append(outcome)
    assert outcome.phases == {"Succeeded": 1} and outcome.lost == 0, dump(jobs)
    assert outcome.restarts == 1
    assert batch.runs_of(jobs[0])[0] == 1  # the finished prompt was kept, not generated again


def test_s3_down_for_46_seconds_during_a_job(batch, reliability_report):
    """Defect (c): the first connection error ended the attempt and three restarts were spent in 25 s."""
    endpoint = batch.cluster.s3.endpoint.removeprefix("http://")
    host, port = endpoint.split(":")
    proxy = FaultProxy((host, int(port)))
    try:
        batch.submit("outage", prompts=3, seconds_per_prompt=2.0, endpoint=proxy.endpoint)
        wait_for(lambda: batch.runs.read_text().count("\n") >= 1, "the first prompt to start", 60, interval=0.2)
        with proxy.fault(DOWN):
            time.sleep(46)
        jobs = batch.wait_finished(BATCH_TIMEOUT)
    finally:
        proxy.close()
    outcome = batch.outcome("S3 down 46 s during upload", 1, jobs)
    reliability_report.append(outcome)
    assert_clean(outcome)
    assert outcome.restarts == 0, dump(jobs)
