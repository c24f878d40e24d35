"""The 23 kinds of accepted-then-hanging job issue 14's probe found, each reproduced: every one is now refused
at create naming the field, or ends Failed (or, for a cause only the cluster knows, shows a condition naming
it) within 30 s, with the operator running."""

from __future__ import annotations

import copy
import json
import time

import pytest
from jobspecs import FAST_WORKER, job_manifest
from kubernetes.client.exceptions import ApiException

from chitu_api.names import GROUP, PLURAL, VERSION

SETTLE_SECONDS = 30
BASE = {
    "model": {"uri": "/models/unused"},
    "prompts": ["a cat"],
    "parallelism": {"gpusPerPod": 0},
    "output": {"uri": "s3://videos/hang"},
    "worker": {"image": "unused", "command": FAST_WORKER},
    "runPolicy": {"backoffLimit": 0},
}


def spec_with(section: str, **values) -> dict:
    spec = copy.deepcopy(BASE)
    spec.setdefault(section, {}).update(values)
    return spec


# (id, spec, the text the refusal or the job's message must contain: the field, or the cause)
CASES = [
    ("label-key", spec_with("worker", podLabels={"a=b": "x"}), "spec.worker.podLabels"),
    ("label-key-dash", spec_with("worker", podLabels={"-x": "x"}), "spec.worker.podLabels"),
    ("label-value", spec_with("worker", podLabels={"team": "has space"}), "spec.worker.podLabels"),
    ("label-value-long", spec_with("worker", podLabels={"team": "a" * 64}), "spec.worker.podLabels"),
    ("annotation-key", spec_with("worker", podAnnotations={"bad key": "x"}), "spec.worker.podAnnotations"),
    ("env-name-equals", spec_with("worker", env=[{"name": "A=B", "value": "x"}]), "spec.worker.env[0].name"),
    ("env-name-digit", spec_with("worker", env=[{"name": "1ABC", "value": "x"}]), "spec.worker.env[0].name"),
    ("quantity-cpu", spec_with("worker", resources={"requests": {"cpu": "abc"}}), "spec.worker.resources"),
    ("quantity-memory", spec_with("worker", resources={"limits": {"memory": "1 Gi"}}), "spec.worker.resources"),
    (
        "limits-below-requests",
        spec_with("worker", resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
        "spec.worker.resources",
    ),
    (
        "extended-without-limit",
        spec_with("worker", resources={"requests": {"example.com/dongle": "1"}}),
        "spec.worker.resources",
    ),
    (
        "secret-name",
        spec_with("output", uri="s3://videos/hang", credentialsSecretRef={"name": "Bad_Name"}),
        "spec.output.credentialsSecretRef.name",
    ),
    (
        "env-secret-name",
        spec_with("worker", env=[{"name": "T", "valueFrom": {"secretKeyRef": {"name": "Bad_Name", "key": "t"}}}]),
        "spec.worker.env[0]",
    ),
    ("service-account-name", spec_with("worker", serviceAccountName="Bad_Name"), "spec.worker.serviceAccountName"),
    ("toleration-key", spec_with("scheduling", tolerations=[{"key": "bad key"}]), "spec.scheduling.tolerations[0]"),
    (
        "toleration-exists-value",
        spec_with("scheduling", tolerations=[{"key": "gpu", "operator": "Exists", "value": "x"}]),
        "spec.scheduling.tolerations[0]",
    ),
    ("node-selector", spec_with("scheduling", nodeSelector={"a=b": "x"}), "spec.scheduling.nodeSelector"),
    ("priority-class-name", spec_with("scheduling", priorityClassName="Bad_Name"), "spec.scheduling.priorityClassName"),
    ("host-path", spec_with("model", uri="/models/unused", volume={"hostPath": {"path": "/"}}), "spec.model.volume"),
    # Causes only the cluster knows: the job fails, or a condition names the cause, within 30 s.
    ("missing-priority-class", spec_with("scheduling", priorityClassName="no-such-priority"), "no-such-priority"),
    (
        "missing-secret",
        spec_with("output", uri="s3://videos/hang", credentialsSecretRef={"name": "no-such-secret"}),
        "no-such-secret",
    ),
    ("missing-service-account", spec_with("worker", serviceAccountName="no-such-account"), "no-such-account"),
    ("missing-command", spec_with("worker", command=["no-such-command"]), "no-such-command"),
    (
        "missing-volume-claim",
        spec_with("model", uri="/models/unused", volume={"persistentVolumeClaim": {"claimName": "no-such-claim"}}),
        "no-such-claim",
    ),
    ("gang-larger-than-any-node", spec_with("parallelism", gpusPerPod=16, cfg=2, cpSize=8), "nvidia.com/gpu"),
]


def _messages(status: dict) -> str:
    """Everything the job says about itself: its message and every condition's."""
    texts = [status.get("message") or ""] + [c.get("message") or "" for c in status.get("conditions") or []]
    return "\n".join(texts)


def settle(k8s, namespace: str, name: str, expected: str) -> dict:
    """The job's status once it is Failed, or shows ``expected`` in a condition; fails the test after 30 s."""
    deadline = time.monotonic() + SETTLE_SECONDS
    status: dict = {}
    while time.monotonic() < deadline:
        status = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}
        if status.get("phase") in ("Failed", "Succeeded") or expected in _messages(status):
            return status
        time.sleep(0.3)
    pytest.fail(f"{name} neither failed nor named {expected!r} within {SETTLE_SECONDS}s: {json.dumps(status)}")


@pytest.mark.parametrize(("spec", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_accepted_specs_never_hang(k8s, operator_process, namespace, spec, expected):
    try:
        k8s.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job_manifest("hang", spec))
    except ApiException as err:
        assert err.status == 422 and expected in json.loads(err.body)["message"], err.body
        return
    status = settle(k8s, namespace, "hang", expected)
    assert expected in _messages(status), json.dumps(status)


def test_a_restricted_namespace_runs_the_job_or_fails_it_with_the_apiservers_reason(k8s, operator_process):
    """The probe saw 403 on every pod create and no status at all. Pods built with the platform's restricted
    defaults are admitted (the job then runs, or says why it waits); a pod that is not fails the job naming the
    PodSecurity violation (reason CreateRefused)."""
    name = "restricted-probe"
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    k8s.core.create_namespace({"metadata": {"name": name, "labels": labels}})
    try:
        spec = spec_with("model", uri="/models/unused", volume={"emptyDir": {}})
        k8s.custom.create_namespaced_custom_object(GROUP, VERSION, name, PLURAL, job_manifest("hang", spec))
        deadline, status = time.monotonic() + SETTLE_SECONDS, {}
        while time.monotonic() < deadline:
            status = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, name, PLURAL, "hang").get("status") or {}
            explained = [c for c in status.get("conditions") or [] if c.get("type") != "Created"]
            if status.get("phase") in ("Failed", "Succeeded") or explained:
                break
            time.sleep(0.3)
        assert status.get("phase") in ("Failed", "Succeeded") or explained, json.dumps(status)
        if "PodSecurity" in _messages(status):
            assert status["phase"] == "Failed" and "CreateRefused" in json.dumps(status["conditions"])
    finally:
        k8s.core.delete_namespace(name, propagation_policy="Background")


def test_a_spec_larger_than_the_annotation_limit_runs(k8s, operator_process, namespace):
    """Defect (b): 80 prompts of 4,000 characters. No handler state may grow with the spec."""
    spec = copy.deepcopy(BASE)
    spec["prompts"] = [f"{i} " + "x" * 3990 for i in range(80)]
    k8s.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job_manifest("big", spec))
    deadline = time.monotonic() + SETTLE_SECONDS
    job: dict = {}
    while time.monotonic() < deadline:
        job = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "big")
        if (job.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.3)
    assert job["status"]["phase"] == "Succeeded", json.dumps(job.get("status"))
    annotations = job["metadata"].get("annotations") or {}
    assert sum(len(k) + len(v) for k, v in annotations.items()) < 4096, sorted(annotations)
