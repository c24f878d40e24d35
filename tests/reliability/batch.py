"""A batch of fast GenerationJobs on the hermetic cluster and the bookkeeping every fault test checks after it:
all jobs terminal, every reported output in S3 (none lost), no prompt generated twice, nothing stuck.

Jobs run tests/reliability/fastworker.py (chitu-worker without the engine); their prompts write one line each
to a runs file, which is how a prompt generated twice is seen.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from chitu_api.names import GROUP, JOB_NAME_LABEL, PLURAL, VERSION

FAST_WORKER = Path(__file__).with_name("fastworker.py")
FINISHED = ("Succeeded", "Failed")
SECRET = "s3-creds"


@dataclass
class Outcome:
    """What a fault test reports (one entry of the reliability report)."""

    fault: str
    injected: int
    jobs: int
    phases: dict[str, int]
    restarts: int
    lost: int
    duplicates: int
    stuck: int
    seconds: float
    notes: dict = field(default_factory=dict)


class Batch:
    def __init__(self, k8s, cluster, namespace: str, bucket: str, runs: Path):
        self.k8s, self.cluster, self.namespace, self.bucket, self.runs = k8s, cluster, namespace, bucket, runs
        self.names: list[str] = []
        self.started = time.monotonic()
        runs.touch()

    def manifest(
        self,
        name: str,
        *,
        prompts: int = 2,
        seconds_per_prompt: float = 0.5,
        endpoint: str | None = None,
        parallelism: dict | None = None,
        run_policy: dict | None = None,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> dict:
        """A fast-worker job; `env`: more fastworker knobs; `command`: replaces [python, fastworker.py]."""
        creds = self.cluster.s3
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GenerationJob",
            "metadata": {"name": name},
            "spec": {
                "model": {"uri": "/models/unused"},
                "prompts": [f"prompt {i} of {name}" for i in range(prompts)],
                "generation": {"steps": 2, "frames": 1, "height": 16, "width": 16},
                "parallelism": parallelism or {"gpusPerPod": 0},
                "output": {
                    "uri": f"s3://{self.bucket}/runs",
                    "endpoint": endpoint or creds.endpoint,
                    "region": creds.region,
                    "credentialsSecretRef": {"name": SECRET},
                },
                "worker": {
                    "image": "unused",
                    "command": command or [sys.executable, str(FAST_WORKER)],
                    "env": [
                        {"name": "RUNS", "value": str(self.runs)},
                        {"name": "SECONDS_PER_PROMPT", "value": str(seconds_per_prompt)},
                        *({"name": k, "value": v} for k, v in (env or {}).items()),
                    ],
                },
                "runPolicy": {"backoffLimit": 3, **(run_policy or {})},
            },
        }

    def submit(self, name: str, **options) -> None:
        self.k8s.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.manifest(name, **options)
        )
        self.names.append(name)

    def jobs(self) -> list[dict]:
        return self.k8s.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)["items"]

    def wait_finished(self, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = self.jobs()
            if len(jobs) == len(self.names) and all((j.get("status") or {}).get("phase") in FINISHED for j in jobs):
                return jobs
            time.sleep(0.5)
        return self.jobs()

    def outcome(self, fault: str, injected: int, jobs: list[dict], **notes) -> Outcome:
        """Lost: a status.outputs entry whose objects are not in S3. Duplicates: prompts generated twice."""
        s3 = self.cluster.s3.client()
        stored = {
            obj["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
            for obj in page.get("Contents", [])
        }
        reported = [
            entry[key]
            for job in jobs
            for entry in (job.get("status") or {}).get("outputs") or []
            for key in ("video", "metrics")
        ]
        lost = sum(1 for uri in reported if uri.removeprefix(f"s3://{self.bucket}/") not in stored)
        runs = Counter(self.runs.read_text().splitlines())
        phases = Counter((job.get("status") or {}).get("phase") or "none" for job in jobs)
        return Outcome(
            fault=fault,
            injected=injected,
            jobs=len(self.names),
            phases=dict(phases),
            restarts=sum(int((job.get("status") or {}).get("restarts") or 0) for job in jobs),
            lost=lost,
            duplicates=sum(n - 1 for n in runs.values()),
            stuck=len(self.names) - sum(phases[p] for p in FINISHED),
            seconds=round(time.monotonic() - self.started, 1),
            notes=notes,
        )

    def pods_of(self, name: str) -> list:
        return self.k8s.core.list_namespaced_pod(self.namespace, label_selector=f"{JOB_NAME_LABEL}={name}").items

    def services(self) -> list[str]:
        """Services left in the namespace (a finished job's headless Service is deleted with it: none expected)."""
        return [s.metadata.name for s in self.k8s.core.list_namespaced_service(self.namespace).items]

    def runs_of(self, job: dict) -> Counter:
        uid = job["metadata"]["uid"]
        return Counter(int(line.split()[1]) for line in self.runs.read_text().splitlines() if line.startswith(uid))


def dump(jobs: list[dict]) -> str:
    return json.dumps([{"name": j["metadata"]["name"], "status": j.get("status")} for j in jobs])[:4000]
