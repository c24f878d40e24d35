"""Faults inside a running gang (issue 14): a rank that hangs, a full scratch folder, and the apiserver out of the
worker's reach when it finishes (defect (d)). Jobs run the fast worker (chitu-worker without the engine); each
test adds its outcome to the reliability report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from batch import FAST_WORKER, Batch, dump
from faultproxy import DOWN, FaultProxy
from test_faults import BATCH_TIMEOUT, assert_clean

from chitu_devcluster.waiting import wait_for


def events(work: Batch, name: str, reason: str) -> list:
    found = work.k8s.core.list_namespaced_event(work.namespace, field_selector=f"involvedObject.name={name}").items
    return [e for e in found if e.reason == reason]


def job_named(work: Batch, name: str) -> dict:
    return next((j for j in work.jobs() if j["metadata"]["name"] == name), {})


def progress(work: Batch, name: str) -> dict:
    return (job_named(work, name).get("status") or {}).get("progress") or {}


def test_a_hung_rank_is_found_stalled_and_the_gang_restarted(batch, reliability_report):
    """Rank 0 stops for good before prompt 1 (alive, silent): stallTimeoutSeconds later the gang restarts (counted,
    reason Stalled), and the next attempt does prompts 1 and 2 only."""
    name, timeout = "hung", 10
    batch.submit(
        name,
        prompts=3,
        seconds_per_prompt=1.0,
        env={"HANG_AT_PROMPT": "1"},
        run_policy={"stallTimeoutSeconds": timeout, "restartBackoffSeconds": 1},
    )
    wait_for(lambda: progress(batch, name).get("promptsDone", 0) >= 1, "prompt 0 to be reported", 60, interval=0.2)
    silent_since = time.monotonic()
    wait_for(lambda: int(job_named(batch, name)["status"].get("restarts") or 0) >= 1, "a restart", 60, interval=0.2)
    detected_after = time.monotonic() - silent_since
    jobs = batch.wait_finished(BATCH_TIMEOUT)
    stalled = events(batch, name, "Stalled")
    outcome = batch.outcome(
        "rank hung (no progress)", 1, jobs, stall_timeout_s=timeout, restarted_after_s=round(detected_after, 1)
    )
    reliability_report.append(outcome)
    assert_clean(outcome)
    assert outcome.restarts == 1, dump(jobs)
    assert batch.runs_of(jobs[0]) == Counter({0: 1, 1: 1, 2: 1})  # prompt 0 kept, the hung prompt done once
    assert len(batch.pods_of(name)) == 1 and not batch.services()  # no duplicate pod, no orphaned Service
    assert stalled, "no Stalled event"
    found = re.match(
        rf"no progress for (\d+) s \(stallTimeoutSeconds {timeout}\): rank 0 \(pod hung-worker-0\)",
        (stalled[0].message),
    )
    assert found and timeout <= int(found[1]) < timeout + 10, stalled[0].message
    # Seen from here: the report's stamp is cut to whole seconds and this test polls, so up to ~1.5 s early.
    assert timeout - 2 <= detected_after < timeout + 15


def unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs -o size=64k t /mnt"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def test_a_full_scratch_folder_fails_the_job_naming_it(batch, s3, tmp_path, reliability_report):
    """The worker's scratch folder ($TMPDIR) is a 64 KiB tmpfs (a user+mount namespace, no root needed): the
    stand-in video does not fit, the write fails with ENOSPC, and the job ends Failed naming the folder, with no
    object stored and no output reported."""
    if not unshare_works():
        pytest.skip("unprivileged user namespaces (unshare --user --mount) are not available here")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # The pod's process mounts its own tmpfs over $TMPDIR, invisible outside it, then execs the worker.
    in_small_tmpfs = [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        'mount -t tmpfs -o size=64k chitu-scratch "$TMPDIR" && exec "$0" "$@"',
    ]
    batch.submit(
        "full",
        prompts=2,
        env={"TMPDIR": str(scratch), "VIDEO_BYTES": str(256 * 1024)},
        command=[*in_small_tmpfs, sys.executable, str(FAST_WORKER)],
        run_policy={"backoffLimit": 0},
    )
    jobs = batch.wait_finished(BATCH_TIMEOUT)
    outcome = batch.outcome("scratch folder full (ENOSPC)", 1, jobs)
    reliability_report.append(outcome)
    status = jobs[0].get("status") or {}
    assert outcome.phases == {"Failed": 1} and outcome.stuck == 0, dump(jobs)
    assert f"NoSpace: no space left in {scratch} (writing prompt 0)" in status["message"], status["message"]
    assert "No space left on device" in status["message"]
    assert not status.get("outputs")
    assert not batch.services()
    stored = s3.client.list_objects_v2(Bucket=s3.name).get("Contents", [])
    assert not stored, [o["Key"] for o in stored]  # nothing half-written (or whole) was uploaded
    assert not scratch.exists() or not any(scratch.iterdir())  # the tmpfs was the pod's own


def test_the_real_worker_names_a_full_scratch_folder(tiny_model_dir, tmp_path):
    """The same with chitu-worker and the engine (a local --job-file run, no cluster): the tiny model's video fits
    the 4 KiB tmpfs, its metrics.json does not; exit 1 with NoSpace naming the folder, nothing in the output."""
    if not unshare_works():
        pytest.skip("unprivileged user namespaces (unshare --user --mount) are not available here")
    scratch, output, job = tmp_path / "scratch", tmp_path / "out", tmp_path / "job.json"
    scratch.mkdir()
    spec = {
        "model": {"uri": str(tiny_model_dir)},
        "prompt": "A cat walking on grass",
        "generation": {"steps": 2, "height": 32, "width": 32, "frames": 5, "seed": 1},
        "parallelism": {"gpusPerPod": 0},
    }
    job.write_text(
        json.dumps(
            {
                "apiVersion": "chitu.dev/v1alpha1",
                "kind": "GenerationJob",
                "spec": spec,
                "metadata": {"name": "full-disk"},
            }
        )
    )
    worker = [str(Path(sys.executable).with_name("chitu-worker")), "--job-file", str(job), "--output", str(output)]
    run = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            'mount -t tmpfs -o size=4k chitu-scratch "$TMPDIR" && exec "$0" "$@"',
            *worker,
        ],
        env={**os.environ, "TMPDIR": str(scratch), "CHITU_TERMINATION_LOG": str(tmp_path / "termination-log")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 1, run.stderr[-3000:]
    reason = (tmp_path / "termination-log").read_text()
    assert reason.startswith(f"NoSpace: no space left in {scratch} (writing the outputs of prompt 0): [Errno 28]")
    assert not output.exists() or not any(output.rglob("*.*"))


def test_apiserver_unreachable_when_the_worker_finishes(batch, reliability_report):
    """Defect (d): the worker reaches the apiserver through a proxy that goes down as the last prompt runs, for
    longer than the worker retries its final report (FINISH_SECONDS). The attempt fails (ReportLost, exit 5), the
    next attempt finds every prompt in S3 and reports them: Succeeded with all 4 outputs, none generated twice,
    even with backoffLimit 0 (a restart that only reports is not counted)."""
    name, prompts, outage = "unreported", 4, 25
    api = urlsplit(batch.cluster.server)
    proxy = FaultProxy((api.hostname, api.port))
    # The pod's own kubeconfig (the node agent writes it) pointed at the proxy; TLS still checks 127.0.0.1.
    through_proxy = [
        "sh",
        "-c",
        f'sed "s#server: .*#server: https://127.0.0.1:{proxy.port}#" "$KUBECONFIG" > "$KUBECONFIG.proxied" '
        '&& KUBECONFIG="$KUBECONFIG.proxied" exec "$0" "$@"',
    ]
    try:
        batch.submit(
            name,
            prompts=prompts,
            seconds_per_prompt=2.0,
            env={"FINISH_SECONDS": "10"},
            command=[*through_proxy, sys.executable, str(FAST_WORKER)],
            run_policy={"restartBackoffSeconds": 1, "backoffLimit": 0},
        )
        last = prompts - 1
        wait_for(lambda: progress(batch, name).get("promptsDone", 0) >= last, "3 prompts reported", 90, interval=0.2)
        with proxy.fault(DOWN):
            wait_for(lambda: batch.runs.read_text().count("\n") >= prompts, "the last prompt stored", 30, interval=0.2)
            stored_while_down = progress(batch, name).get("promptsDone")
            time.sleep(outage)
        jobs = batch.wait_finished(BATCH_TIMEOUT)
    finally:
        proxy.close()
    outcome = batch.outcome("apiserver unreachable at the worker's finish", 1, jobs, outage_s=outage)
    reliability_report.append(outcome)
    assert_clean(outcome)
    status = jobs[0]["status"]
    assert stored_while_down == last  # the job did not know about the last prompt while the API was cut off
    assert outcome.restarts == 1 and status["ignoredRestarts"] == 1, dump(jobs)  # the next attempt reported
    assert "ReportLost" in (status.get("firstFailure") or ""), status.get("firstFailure")
    assert sorted(o["index"] for o in status["outputs"]) == list(range(prompts))
    assert status["progress"]["promptsDone"] == prompts
    assert batch.runs_of(jobs[0]) == Counter(range(prompts))
    assert len(batch.pods_of(name)) == 1 and not batch.services()
