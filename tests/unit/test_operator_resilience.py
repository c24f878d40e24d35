"""The operator's answers to issue 14's defects, as pure decisions and builders: a job without a status is
started (whatever happened to the operator before), restarts back off, and a create the apiserver refuses for
good fails the job with the apiserver's message instead of being retried forever."""

from __future__ import annotations

import datetime
import json

import pytest
from kubernetes.client.exceptions import ApiException

from chitu_api.generationjob import parse_spec
from chitu_operator import gang
from chitu_operator import status as st
from chitu_operator.lifecycle import WAIT, Job, decide, reject_invalid

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
SPEC = {
    "model": {"uri": "/models/wan"},
    "prompts": ["a", "b", "c"],
    "parallelism": {"cfg": 2, "gpusPerPod": 1},
    "worker": {"image": "w"},
    "output": {"uri": "s3://videos/p"},
}


def job(status: dict, **run_policy) -> Job:
    return Job("cats", "ns", "uid", 1, parse_spec({**SPEC, "runPolicy": run_policy}), status)


def test_a_job_without_status_is_started():
    decision = decide(job({}), [], NOW)
    assert decision.create_ranks == (0, 1)
    assert decision.transition.reason == st.JOB_CREATED
    assert decision.transition.message == "2 worker pods for 3 prompts, world size 2"
    assert decision.status["phase"] == st.PENDING and decision.status["startTime"] == st.timestamp(NOW)
    assert decision.status["progress"]["summary"] == "0/3"


def test_a_suspended_new_job_gets_no_pods():
    decision = decide(job({}, suspend=True), [], NOW)
    assert decision.create_ranks == () and decision.status["phase"] == st.SUSPENDED


def restarting(restarts: int, seconds_ago: float) -> dict:
    since = st.timestamp(NOW - datetime.timedelta(seconds=seconds_ago))
    return {
        "phase": st.RESTARTING,
        "restarts": restarts,
        "startTime": since,
        "conditions": [{"type": st.RESTARTING, "status": "True", "lastTransitionTime": since}],
    }


@pytest.mark.parametrize(("restarts", "backoff"), [(1, 10), (2, 20), (3, 40), (9, 300)])
def test_restarted_gangs_back_off_doubling(restarts, backoff):
    assert decide(job(restarting(restarts, backoff - 1), backoffLimit=10), [], NOW) == WAIT
    assert decide(job(restarting(restarts, backoff), backoffLimit=10), [], NOW).create_ranks == (0, 1)


def test_backoff_can_be_switched_off():
    assert decide(job(restarting(1, 0), restartBackoffSeconds=0), [], NOW).create_ranks == (0, 1)


def test_a_refused_create_fails_the_job_with_the_apiservers_message():
    decision = reject_invalid(
        "uid", [], "creating Pod cats-worker-0 was refused (403): violates PodSecurity", NOW, reason=st.CREATE_REFUSED
    )
    assert (decision.transition.phase, decision.transition.reason) == (st.FAILED, st.CREATE_REFUSED)
    assert "violates PodSecurity" in decision.transition.message


def refusing(status: int, message: str):
    def create(namespace: str, manifest: dict, **options) -> None:
        error = ApiException(status=status, reason="Refused")
        error.body = json.dumps({"kind": "Status", "message": message})
        raise error

    return create


POD = {"kind": "Pod", "metadata": {"name": "cats-worker-0"}}


@pytest.mark.parametrize("status", [403, 422])
def test_refusals_for_good_become_create_refused(status):
    with pytest.raises(
        gang.CreateRefused, match=rf"creating Pod cats-worker-0 was refused \({status}\): no PriorityClass"
    ):
        gang._create(refusing(status, 'no PriorityClass with name "x" was found'), "ns", POD)


def test_conflicts_are_success_and_quota_is_retried():
    gang._create(refusing(409, "already exists"), "ns", POD)
    with pytest.raises(ApiException):
        gang._create(refusing(403, 'pods "cats-worker-0" is forbidden: exceeded quota: gpus'), "ns", POD)
    with pytest.raises(ApiException):
        gang._create(refusing(500, "etcd timeout"), "ns", POD)


def test_the_operators_own_rbac_refusal_is_retried_not_the_jobs_failure():
    """Right after an apiserver restart its authorizer refuses every create until the role cache is loaded."""
    message = (
        'pods "cats-worker-0" is forbidden: User "system:serviceaccount:chitu-system:chitu-operator" cannot create '
        'resource "pods" in API group "" in the namespace "ns": RBAC: clusterrole.rbac.authorization.k8s.io '
        '"chitu-operator" not found'
    )
    with pytest.raises(ApiException):  # raised as is (CreateRefused is no ApiException): the caller retries
        gang._create(refusing(403, message), "ns", POD)
    with pytest.raises(gang.CreateRefused, match="violates PodSecurity"):
        gang._create(refusing(403, 'pods "cats-worker-0" is forbidden: violates PodSecurity "restricted"'), "ns", POD)


def test_text_from_pods_is_scrubbed_before_status_and_events():
    from chitu_operator.pods import PodView

    message = "S3 error: AWS_SECRET_ACCESS_KEY=hunter2 key AKIAABCDEFGHIJKLMNOP\x1b[31m token: abc"
    pod = {
        "metadata": {"name": "cats-worker-0", "labels": {"chitu.dev/rank": "0"}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"name": "worker", "state": {"terminated": {"exitCode": 1, "message": message}}}],
        },
    }
    failure = PodView.from_pod(pod).failure()
    assert "hunter2" not in failure and "AKIAABCDEFGHIJKLMNOP" not in failure and "\x1b" not in failure
    assert failure == (
        "rank 0 (pod cats-worker-0) failed with exit code 1: S3 error: "
        "AWS_SECRET_ACCESS_KEY=<redacted> key <redacted>[31m token: <redacted>"
    )
