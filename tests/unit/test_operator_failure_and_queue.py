"""decide() with a Kueue Workload, podFailurePolicy rules, the first root cause and pending causes (pure)."""

from __future__ import annotations

import datetime

from chitu_api.generationjob import parse_spec
from chitu_operator import status as st
from chitu_operator.lifecycle import WAIT, Job, decide
from chitu_operator.pods import PodView
from chitu_operator.queueing import QueueView

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
UID = "job-uid"
ADMITTED = QueueView(exists=True, admitted=True, reserved=True, node_selector={"gpu": "h200"})


def job(phase: str = st.PENDING, restarts: int = 0, run_policy: dict | None = None, conditions=(), **status) -> Job:
    spec = {
        "model": {"uri": "/models/wan"},
        "prompts": ["a", "b"],
        "parallelism": {"cfg": 2, "gpusPerPod": 1},
        "worker": {"image": "w"},
        "output": {"uri": "s3://videos/p"},
        "runPolicy": run_policy or {},
        "scheduling": {"queueName": "videos"},
    }
    return Job(
        "cats",
        "ns",
        UID,
        1,
        parse_spec(spec),
        {"phase": phase, "restarts": restarts, "conditions": list(conditions), **status},
    )


def pod(rank: int, phase: str = "Running", **fields) -> PodView:
    values = dict(
        name=f"cats-worker-{rank}",
        uid=f"uid-{rank}",
        owner_uid=UID,
        rank=rank,
        attempt=0,
        phase=phase,
        deleting=False,
        created=NOW - datetime.timedelta(seconds=5),
    )
    return PodView(**{**values, **fields})


def queued(reason: str = st.WAITING_FOR_ADMISSION, message: str = "m") -> dict:
    return {"type": st.QUEUED, "status": "True", "reason": reason, "message": message}


# --- Kueue ---------------------------------------------------------------------------------------


def test_a_queued_job_creates_its_workload_and_no_pod():
    decision = decide(job(), [], NOW, QueueView.absent())
    assert decision.create_workload and not decision.create_ranks
    assert (decision.transition.condition, decision.transition.reason) == (st.QUEUED, st.WAITING_FOR_ADMISSION)


def test_waiting_for_quota_shows_kueues_message_once_and_holds_no_pod():
    waiting = QueueView(exists=True, message="insufficient unused quota for nvidia.com/gpu")
    first = decide(job(conditions=[queued()]), [], NOW, waiting)
    assert first.transition.message == "insufficient unused quota for nvidia.com/gpu" and not first.create_ranks
    assert decide(job(conditions=[queued(message=waiting.message)]), [], NOW, waiting) == WAIT


def test_admission_clears_queued_then_creates_the_gang():
    cleared = decide(job(conditions=[queued()]), [], NOW, ADMITTED)
    assert cleared.transition == st.Transition(
        st.PENDING, st.QUEUED, st.ADMITTED, "admitted by the queue: creating the gang", condition_status=False
    )
    after = job(conditions=[{**queued(), "status": "False"}])
    assert decide(after, [], NOW, ADMITTED).create_ranks == (0, 1)


def test_eviction_deletes_the_gang_then_requeues_without_counting_a_restart():
    evicted = QueueView(exists=True, admitted=True, reserved=True, evicted=True, message="Preempted by urgent")
    stop = decide(job(st.RUNNING), [pod(0), pod(1)], NOW, evicted)
    assert (stop.transition.phase, stop.transition.reason) == (st.PENDING, st.EVICTED)
    assert len(stop.delete_pods) == 2 and "restarts" not in stop.status
    assert decide(job(conditions=[queued(st.EVICTED)]), [pod(0, deleting=True)], NOW, evicted) == WAIT
    assert decide(job(conditions=[queued(st.EVICTED)]), [], NOW, evicted).requeue_workload


# --- failure policy and root cause ---------------------------------------------------------------

POLICY = {
    "podFailurePolicy": {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }
}


def test_fail_job_rule_fails_at_once():
    decision = decide(job(st.RUNNING, run_policy=POLICY), [pod(0), pod(1, "Failed", exit_code=42)], NOW, ADMITTED)
    assert (decision.transition.phase, decision.transition.reason) == (st.FAILED, st.POD_FAILURE_POLICY)


def test_ignore_rule_restarts_without_counting_against_backoff_limit():
    disrupted = pod(1, "Failed", exit_code=137, conditions=(("DisruptionTarget", "True"),))
    policy = {**POLICY, "backoffLimit": 0}
    decision = decide(job(st.RUNNING, run_policy=policy), [pod(0), disrupted], NOW, ADMITTED)
    assert decision.transition.phase == st.RESTARTING
    assert decision.status["ignoredRestarts"] == 1 and decision.status["restarts"] == 1


def test_final_message_names_the_first_root_cause():
    later = pod(1, "Failed", attempt=3, exit_code=1, termination_message="EADDRINUSE")
    decision = decide(
        job(st.RUNNING, restarts=3, firstFailure="rank 0 failed: model not found"),
        [pod(0, attempt=3), later],
        NOW,
        ADMITTED,
    )
    assert decision.transition.reason == st.BACKOFF_LIMIT_EXCEEDED
    assert decision.transition.message.startswith("rank 0 failed: model not found (first failure; last: rank 1")


# --- pending causes ------------------------------------------------------------------------------


def test_a_missing_secret_is_named_in_a_condition_at_once_and_only_once():
    waiting = pod(
        0, "Pending", waiting_reason="CreateContainerConfigError", waiting_message='secret "s3-creds" not found'
    )
    decision = decide(job(), [waiting, pod(1, "Pending")], NOW)
    assert (decision.transition.condition, decision.transition.reason) == (
        st.PODS_PENDING,
        "CreateContainerConfigError",
    )
    assert decision.transition.message == 'pod cats-worker-0: secret "s3-creds" not found'
    again = job(conditions=[{"type": st.PODS_PENDING, "status": "True", "message": decision.transition.message}])
    assert decide(again, [waiting, pod(1, "Pending")], NOW) == WAIT
