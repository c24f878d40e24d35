"""A Secret's value never appears in what others can read (issue 14, must-show 4).

A job runs the real chitu-worker with S3 credentials from a Secret whose secret key is a canary (so S3 refuses
the signature and the job fails, the path on which a worker writes the most text about itself). Then the
canary is searched for in everything a reader of GenerationJobs, events, pods or logs can see: the job's
status, its events, the worker pods (spec and status, including termination messages), the pod's log and the
operator's log. Only the Secret itself may hold it.
"""

from __future__ import annotations

import json
import secrets
import time

from jobspecs import job_manifest

from chitu_api.names import GROUP, JOB_NAME_LABEL, PLURAL, VERSION

TIMEOUT = 240  # the worker imports torch on 2 CPU cores before it reaches S3


def test_a_failing_worker_leaks_no_secret(k8s, operator_process, namespace, s3):
    creds = operator_process.s3
    canary = f"canary-{secrets.token_hex(12)}"
    k8s.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "canary-creds"},
            "stringData": {"AWS_ACCESS_KEY_ID": creds.access_key_id, "AWS_SECRET_ACCESS_KEY": canary},
        },
    )
    spec = {
        "model": {"uri": "/models/unused"},
        "prompts": ["a cat"],
        "parallelism": {"gpusPerPod": 0},
        "output": {
            "uri": f"s3://{s3.name}/runs",
            "endpoint": creds.endpoint,
            "region": creds.region,
            "credentialsSecretRef": {"name": "canary-creds"},
        },
        "worker": {"image": "unused"},
        "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None"},
    }
    k8s.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job_manifest("leak", spec))
    deadline, job = time.monotonic() + TIMEOUT, {}
    while time.monotonic() < deadline:
        job = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "leak")
        if (job.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
            break
        time.sleep(1)
    assert job["status"]["phase"] == "Failed", json.dumps(job.get("status"))
    assert "SignatureDoesNotMatch" in job["status"]["message"] or "403" in job["status"]["message"]

    pods = k8s.core.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}=leak").items
    events = k8s.core.list_namespaced_event(namespace).items
    readable = {
        "job": json.dumps(job),
        "events": json.dumps([k8s.core.api_client.sanitize_for_serialization(e) for e in events]),
        "pods": json.dumps([k8s.core.api_client.sanitize_for_serialization(p) for p in pods]),
        "pod logs": "".join(operator_process.pod_log(namespace, p.metadata.name) for p in pods),
        "operator log": operator_process.procs.log_path("operator").read_text(errors="replace"),
    }
    assert pods and readable["pod logs"], "the worker never ran: nothing was searched"
    assert [where for where, text in readable.items() if canary in text] == []
