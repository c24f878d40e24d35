"""Property-based: no GenerationJob spec is accepted and then hangs (issue 14, must-show 1).

Specs come from jobspecs.job_specs(): valid pod values mixed with every kind of bad one the probe found.
First without the operator, against the real apiserver: a spec that both the CRD (create, dry run) and
the contract (parse_spec) accept yields pods and a Service the apiserver accepts too (dry run), so the
operator never meets a create it cannot make. Then with the operator: each drawn job is refused at create
naming a field, reaches a terminal phase with a message, or (for a cause only the cluster knows, such as a
node selector no node matches) shows a condition saying why it waits, within 30 s, and the operator logs no
traceback.
"""

from __future__ import annotations

import json
import time
import uuid

from hypothesis import HealthCheck, given, settings
from jobspecs import job_manifest, job_specs
from kubernetes.client.exceptions import ApiException

from chitu_api.generationjob import InvalidSpec
from chitu_api.names import GROUP, PLURAL, VERSION
from chitu_operator.lifecycle import Job
from chitu_operator.manifests import build_pod, build_service

TERMINAL = ("Succeeded", "Failed")
SETTLE_SECONDS = 30  # the bound: refused at apply, or a terminal phase naming the cause within 30 s
PROPERTY_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
    database=None,
)  # the same examples every run: CI-stable


def _message(err: ApiException) -> str:
    try:
        return json.loads(err.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(err.body)


def _create(k8s, namespace: str, manifest: dict, *, dry_run: bool) -> dict:
    return k8s.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest, dry_run="All" if dry_run else None
    )


@settings(PROPERTY_SETTINGS, max_examples=200)
@given(spec=job_specs())
def test_specs_the_contract_accepts_make_pods_the_apiserver_accepts(k8s, namespace, spec):
    try:
        stored = _create(k8s, namespace, job_manifest("prop", spec), dry_run=True)
    except ApiException as err:
        assert err.status == 422 and "spec." in _message(err), _message(err)
        return
    stored["metadata"].setdefault("uid", str(uuid.uuid4()))
    stored["metadata"].setdefault("namespace", namespace)
    try:
        job = Job.from_body(stored)
    except InvalidSpec as err:
        assert err.field.startswith("spec"), err
        return
    k8s.core.create_namespaced_service(namespace, build_service(job), dry_run="All")
    for rank in range(job.spec.parallelism.pods):
        try:
            k8s.core.create_namespaced_pod(namespace, build_pod(job, rank, 0), dry_run="All")
        except ApiException as err:
            # A PriorityClass exists or not only in the cluster, not in the spec: the operator reports that
            # refusal as the job's condition (checked with the operator below and in test_refusals.py).
            allowed = err.status == 403 and "PriorityClass" in _message(err)
            assert allowed, f"the contract accepted a spec whose pod the apiserver refuses: {_message(err)}"


def _clear(status: dict) -> bool:
    """Terminal, or waiting with a condition that says why (a cause only the cluster knows: a node selector
    no node matches, a missing Secret or claim), which the pre-running deadline then ends."""
    waiting = [c for c in status.get("conditions") or [] if c.get("type") != "Created" and c.get("message")]
    return status.get("phase") in TERMINAL or bool(waiting)


@settings(PROPERTY_SETTINGS, max_examples=10)
@given(spec=job_specs())
def test_every_accepted_job_ends_in_a_clear_state(k8s, operator_process, namespace, spec):
    name = f"prop-{uuid.uuid4().hex[:6]}"
    try:
        _create(k8s, namespace, job_manifest(name, spec), dry_run=False)
    except ApiException as err:
        assert err.status == 422 and "spec." in _message(err), _message(err)
        return
    deadline = time.monotonic() + SETTLE_SECONDS
    status: dict = {}
    while time.monotonic() < deadline:
        status = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}
        if _clear(status):
            break
        time.sleep(0.3)
    assert _clear(status), f"{name} neither terminal nor explained after {SETTLE_SECONDS}s: {json.dumps(status)}"
    if status["phase"] == "Failed":
        assert status.get("message"), status
    log = operator_process.procs.log_path("operator").read_text(errors="replace")
    assert "Traceback" not in log, operator_process.procs.log_tail("operator", 60)
