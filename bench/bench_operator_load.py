"""Operator under load: N GenerationJobs applied at once on the hermetic cluster (issue 14, must-show 3).

Each job is one CPU pod running tests/reliability/fastworker.py: chitu-worker without the engine (it
uploads each prompt's video and metrics.json to SeaweedFS and reports status.outputs through the worker's
own code, generating nothing), so what is measured is the operator:

- all jobs terminal; objects in S3 (expected jobs x prompts x 2), status outputs without an object in S3
  (lost), prompts run more than once (duplicates), jobs not terminal at the deadline (stuck);
- the operator's peak RSS (psutil, sampled every 0.25 s);
- reaction latency, from client-side watch timestamps: job created -> its pod created, and last pod
  Succeeded -> job Succeeded (p50 / p99 / max);
- API requests and 4xx responses per job, from the apiserver's own counters (apiserver_request_total,
  cluster-wide, so they include the node agent, the workers and this script's creates).

    .venv/bin/python bench/bench_operator_load.py --jobs 200      # -> bench/results/operator_load.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from benchlib import commit
from kubernetes import watch

from chitu_api.names import GROUP, JOB_NAME_LABEL, PLURAL, VERSION
from chitu_devcluster.apimetrics import RequestCounters, request_counters
from chitu_devcluster.cluster import DevCluster
from chitu_operator.gang import KubeClients

RESULTS = Path(__file__).parent / "results"
NAMESPACE = "load"
BUCKET = "load"
SECRET = "s3-creds"
FINISHED = ("Succeeded", "Failed")

# chitu-worker without the engine (uploads and reports through the worker's own code): the operator is measured.
FAST_WORKER = Path(__file__).resolve().parents[1] / "tests" / "reliability" / "fastworker.py"


def job_manifest(index: int, prompts: int, endpoint: str, runs: Path) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GenerationJob",
        "metadata": {"name": f"load-{index:04d}"},
        "spec": {
            "model": {"uri": "/models/unused"},
            "prompts": [f"prompt {i}" for i in range(prompts)],
            "parallelism": {"gpusPerPod": 0},
            "output": {
                "uri": f"s3://{BUCKET}/runs",
                "endpoint": endpoint,
                "region": "us-east-1",
                "credentialsSecretRef": {"name": SECRET},
            },
            "worker": {
                "image": "unused",
                "command": [sys.executable, str(FAST_WORKER)],
                "env": [{"name": "RUNS", "value": str(runs)}, {"name": "SECONDS_PER_PROMPT", "value": "0"}],
            },
            "runPolicy": {"backoffLimit": 2},
        },
    }


class Recorder:
    """Client-side timestamps of what the watches see, and the operator's peak RSS."""

    def __init__(self, kube: KubeClients, operator_pid: int):
        self.kube, self.operator = kube, psutil.Process(operator_pid)
        self.created: dict[str, float] = {}
        self.first_pod: dict[str, float] = {}
        self.pods_done: dict[str, float] = {}
        self.finished: dict[str, tuple[float, str]] = {}
        self.peak_rss = 0
        self.stop = threading.Event()

    def start(self) -> None:
        for target in (self._watch_jobs, self._watch_pods, self._sample_rss):
            threading.Thread(target=target, daemon=True).start()

    def _follow(self, on_event, list_call, *args) -> None:
        """Feed every watch event to ``on_event`` until stopped, watching again after the stream breaks (an
        overloaded apiserver ends watches with 429s and resets; a lost event only drops a timestamp)."""
        while not self.stop.is_set():
            try:
                for event in watch.Watch().stream(list_call, *args, timeout_seconds=0):
                    on_event(event["object"])
                    if self.stop.is_set():
                        return
            except Exception:  # any break of the stream: watch again
                time.sleep(1)

    def _watch_jobs(self) -> None:
        def on_job(job: dict) -> None:
            phase = (job.get("status") or {}).get("phase")
            if phase in FINISHED and job["metadata"]["name"] not in self.finished:
                self.finished[job["metadata"]["name"]] = (time.monotonic(), phase)

        self._follow(on_job, self.kube.custom.list_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL)

    def _watch_pods(self) -> None:
        def on_pod(pod) -> None:
            job = (pod.metadata.labels or {}).get(JOB_NAME_LABEL)
            if job:
                self.first_pod.setdefault(job, time.monotonic())
                if pod.status and pod.status.phase == "Succeeded":
                    self.pods_done.setdefault(job, time.monotonic())

        self._follow(on_pod, self.kube.core.list_namespaced_pod, NAMESPACE)

    def _sample_rss(self) -> None:
        while not self.stop.is_set():
            self.peak_rss = max(self.peak_rss, self.operator.memory_info().rss)
            time.sleep(0.25)


def all_finished(kube: KubeClients, jobs: int) -> bool:
    """Every job terminal, read from the API (the watches only time the reactions)."""
    listed = kube.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
    return len(listed) == jobs and all((job.get("status") or {}).get("phase") in FINISHED for job in listed)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "n": len(values),
        "p50": round(statistics.median(ordered), 3),
        "p99": round(p99, 3),
        "max": round(ordered[-1], 3),
    }


def run(jobs: int, prompts: int, timeout: float, state_dir: Path, operator_log: Path | None = None) -> dict:
    cluster = DevCluster.up(state_dir, with_operator=True)
    try:
        kube = KubeClients.from_api_client(cluster.api_client())
        creds = cluster.s3
        kube.core.create_namespace({"metadata": {"name": NAMESPACE}})
        kube.core.create_namespaced_secret(
            NAMESPACE,
            {
                "metadata": {"name": SECRET},
                "stringData": {
                    "AWS_ACCESS_KEY_ID": creds.access_key_id,
                    "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
                },
            },
        )
        s3 = creds.client()
        s3.create_bucket(Bucket=BUCKET)
        runs = state_dir / "runs.txt"
        runs.touch()
        operator_pid = json.loads((cluster.state.pids / "operator.json").read_text())["pid"]
        recorder = Recorder(kube, operator_pid)
        recorder.start()
        before = request_counters(kube.core.api_client)
        started = time.monotonic()

        def create(index: int) -> None:
            kube.custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, job_manifest(index, prompts, creds.endpoint, runs)
            )
            recorder.created[f"load-{index:04d}"] = time.monotonic()

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(create, range(jobs)))
        applied = time.monotonic() - started
        while time.monotonic() - started < timeout and not all_finished(kube, jobs):
            time.sleep(2)
        wall = time.monotonic() - started
        time.sleep(2)  # the last status patches and events land in the counters
        after = request_counters(kube.core.api_client)
        recorder.stop.set()
        if operator_log:
            shutil.copyfile(cluster.procs.log_path("operator"), operator_log)
        return summarize(
            kube, s3, recorder, before, after, runs, cluster, jobs=jobs, prompts=prompts, applied=applied, wall=wall
        )
    finally:
        cluster.down()


def summarize(
    kube,
    s3,
    recorder: Recorder,
    before: RequestCounters,
    after: RequestCounters,
    runs: Path,
    cluster: DevCluster,
    *,
    jobs: int,
    prompts: int,
    applied: float,
    wall: float,
) -> dict:
    stored = {
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for obj in page.get("Contents", [])
    }
    listed = kube.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
    reported = [
        entry[key]
        for job in listed
        for entry in (job.get("status") or {}).get("outputs") or []
        for key in ("video", "metrics")
    ]
    lost = [uri for uri in reported if uri.removeprefix(f"s3://{BUCKET}/") not in stored]
    run_counts = Counter(runs.read_text().split("\n")[:-1])
    phases = Counter((job.get("status") or {}).get("phase") for job in listed)
    delta = RequestCounters.since(before, after)
    requests = sum(delta.requests.values())
    client_errors = delta.client_errors()
    by_call = {f"{verb} {resource}": count for (verb, resource), count in delta.by_call().items()}
    log = cluster.procs.log_path("operator").read_text(errors="replace")
    return {
        "benchmark": "operator_load",
        "commit": commit(),
        "jobs": jobs,
        "prompts_per_job": prompts,
        "machine": {"cpus": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
        "apply_seconds": round(applied, 2),
        "wall_seconds": round(wall, 2),
        "phases": dict(phases),
        "stuck": jobs - sum(phases[p] for p in FINISHED),
        "objects_expected": jobs * prompts * 2,
        "objects_in_s3": len(stored),
        "outputs_reported": len(reported),
        "outputs_lost": len(lost),
        "prompt_runs": sum(run_counts.values()),
        "duplicates": sum(n - 1 for n in run_counts.values() if n > 1),
        "operator_peak_rss_mb": round(recorder.peak_rss / 2**20, 1),
        "latency_seconds": {
            "create_to_pod": percentiles(
                [recorder.first_pod[j] - t for j, t in recorder.created.items() if j in recorder.first_pod]
            ),
            "pods_done_to_job_finished": percentiles(
                [recorder.finished[j][0] - t for j, t in recorder.pods_done.items() if j in recorder.finished]
            ),
        },
        "api_requests_per_job": round(requests / jobs, 1),
        "api_4xx_per_job": round(sum(client_errors.values()) / jobs, 2),
        "api_4xx": client_errors,
        "api_requests_by_call_per_job": {k: round(v / jobs, 2) for k, v in sorted(by_call.items()) if v >= jobs / 10},
        # Mean time the apiserver took to serve one call (not counting the wait in the client): compared with the
        # reaction latency, it tells whether the apiserver or the operator's own pace dominates.
        "apiserver_mean_ms_by_call": {
            f"{verb} {resource}": round(1000 * delta.seconds[(verb, resource)] / count, 1)
            for (verb, resource), count in sorted(delta.by_call().items())
            if count >= jobs / 10 and verb != "WATCH"
        },
        "operator_tracebacks": log.count("Traceback"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--output", type=Path, default=RESULTS / "operator_load.json")
    parser.add_argument("--operator-log", type=Path, help="keep a copy of the operator's log here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chitu-load-") as state:
        result = run(args.jobs, args.prompts, args.timeout, Path(state), args.operator_log)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
