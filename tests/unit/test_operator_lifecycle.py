"""decide(job, pods, now): every lifecycle rule on plain values, no cluster."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from chitu_api.exitcodes import EXIT_FAILED, EXIT_INVALID_INPUT, EXIT_PEER_LOST, PERMANENT_EXIT_CODES
from chitu_api.generationjob import parse_spec
from chitu_operator import status as st
from chitu_operator.lifecycle import WAIT, Job, decide, reject_invalid, seconds_until_expiry
from chitu_operator.pods import PodView
from chitu_operator.rootcause import PEER_LOSS_GRACE_SECONDS, awaiting_root_cause, in_quoting_order

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
UID = "job-uid"


def job(
    phase: str = st.PENDING, restarts: int = 0, run_policy: dict | None = None, started: int | None = 10, **status
) -> Job:
    """A 2-pod job (cfg 2, one GPU per pod) in ``phase``, started ``started`` seconds ago."""
    spec = {
        "model": {"uri": "/models/wan"},
        "prompts": ["a", "b"],
        "parallelism": {"cfg": 2, "gpusPerPod": 1},
        "worker": {"image": "w"},
        "output": {"uri": "s3://videos/p"},
        "runPolicy": run_policy or {},
    }
    if started is not None:
        status["startTime"] = st.timestamp(NOW - datetime.timedelta(seconds=started))
    return Job("cats", "ns", UID, 1, parse_spec(spec), {"phase": phase, "restarts": restarts, **status})


def pod(rank: int, phase: str = "Running", attempt: int = 0, age: int = 5, **fields) -> PodView:
    values = dict(
        name=f"cats-worker-{rank}",
        uid=f"uid-{rank}-{attempt}",
        owner_uid=UID,
        rank=rank,
        attempt=attempt,
        phase=phase,
        deleting=False,
        created=NOW - datetime.timedelta(seconds=age),
    )
    return PodView(**{**values, **fields})


def names(pods) -> list[str]:
    return sorted(p.name for p in pods)


# --- creation and progress -----------------------------------------------------------------------


def test_missing_pods_are_created():
    assert decide(job(), [], NOW).create_ranks == (0, 1)
    assert decide(job(), [pod(0, "Pending")], NOW).create_ranks == (1,)


def test_pending_gang_waits():
    assert decide(job(), [pod(0, "Pending"), pod(1, "Running")], NOW) == WAIT


def test_all_running_moves_to_running():
    decision = decide(job(), [pod(0), pod(1)], NOW)
    assert decision.transition == st.Transition(
        st.RUNNING, st.RUNNING, st.PODS_RUNNING, "all 2 worker pods are running (attempt 0)"
    )
    assert decide(job(st.RUNNING), [pod(0), pod(1)], NOW) == WAIT


def test_some_succeeded_rest_running_counts_as_running():
    assert decide(job(), [pod(0), pod(1, "Succeeded")], NOW).transition.phase == st.RUNNING


def test_all_succeeded_finishes_and_cleans_only_unfinished_pods():
    decision = decide(job(st.RUNNING), [pod(0, "Succeeded"), pod(1, "Succeeded")], NOW)
    assert decision.transition.phase == st.SUCCEEDED and decision.transition.reason == st.JOB_SUCCEEDED
    assert decision.status == {"completionTime": st.timestamp(NOW)}
    assert decision.delete_pods == ()  # cleanPodPolicy Running keeps finished pods (their logs)
    assert decision.delete_service


@pytest.mark.parametrize(
    "policy, deleted, service",
    [("All", ["cats-worker-0", "cats-worker-1"], True), ("Running", ["cats-worker-1"], True), ("None", [], False)],
)
def test_clean_pod_policy_on_failure(policy, deleted, service):
    failed = pod(0, "Failed", exit_code=1)
    decision = decide(job(st.RUNNING, run_policy={"backoffLimit": 0, "cleanPodPolicy": policy}), [failed, pod(1)], NOW)
    assert decision.transition.reason == st.BACKOFF_LIMIT_EXCEEDED
    assert names(decision.delete_pods) == deleted
    assert decision.delete_service is service


# --- gang restarts -------------------------------------------------------------------------------


def test_failed_rank_restarts_the_whole_gang():
    failed = pod(1, "Failed", exit_code=3, termination_message="CUDA out of memory")
    decision = decide(job(st.RUNNING), [pod(0), failed], NOW)
    assert decision.transition.phase == st.RESTARTING and decision.transition.reason == st.RANK_FAILED
    assert "rank 1 (pod cats-worker-1) failed with exit code 3: CUDA out of memory" in decision.transition.message
    assert decision.status == {"restarts": 1, "firstFailure": decision.transition.message.split(";")[0]}
    assert names(decision.delete_pods) == ["cats-worker-0", "cats-worker-1"]
    assert decision.create_ranks == ()  # only once the old pods are gone


def test_first_failure_is_reported_when_several_ranks_fail():
    early = pod(
        1, "Failed", exit_code=1, termination_message="root cause", finished=NOW - datetime.timedelta(seconds=9)
    )
    late = pod(0, "Failed", exit_code=1, termination_message="peer gone", finished=NOW)
    assert "root cause" in decide(job(st.RUNNING), [late, early], NOW).transition.message


# --- the root cause: a rank that lost its peer is a symptom ----------------------------------------

PEER_LOST = "rank 0: RuntimeError: [/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:547] Connection closed by peer"


def lost_peer(rank: int, seconds_ago: float) -> PodView:
    finished = NOW - datetime.timedelta(seconds=seconds_ago)
    return pod(rank, "Failed", exit_code=EXIT_PEER_LOST, termination_message=PEER_LOST, finished=finished)


def crashed(rank: int, seconds_ago: float, code: int = EXIT_FAILED, message: str = "injected crash") -> PodView:
    finished = NOW - datetime.timedelta(seconds=seconds_ago)
    return pod(rank, "Failed", exit_code=code, termination_message=message, finished=finished)


def test_a_crash_is_quoted_before_a_peer_loss_that_finished_earlier():
    for victim, cause in ((lost_peer(0, 9), crashed(1, 0)), (lost_peer(0, 0), crashed(1, 0))):  # earlier; same second
        assert in_quoting_order([victim, cause], NOW) == [cause, victim]
        decision = decide(job(st.RUNNING), [victim, cause], NOW)
        quoted = "rank 1 (pod cats-worker-1) failed with exit code 1: injected crash"
        assert decision.transition.reason == st.RANK_FAILED and decision.transition.message.startswith(quoted)
        assert decision.status["firstFailure"] == quoted


def test_peer_losses_wait_for_their_cause_while_another_rank_runs():
    within = PEER_LOSS_GRACE_SECONDS - 1
    assert awaiting_root_cause([lost_peer(0, within), pod(1)], NOW)
    assert decide(job(st.RUNNING), [lost_peer(0, within), pod(1)], NOW) == WAIT
    # the cause arrives within the grace: quoted
    assert "injected crash" in decide(job(st.RUNNING), [lost_peer(0, within), crashed(1, 0)], NOW).transition.message


def test_after_the_grace_a_peer_loss_is_quoted():
    pods = [lost_peer(0, PEER_LOSS_GRACE_SECONDS), pod(1)]
    assert not awaiting_root_cause(pods, NOW)
    decision = decide(job(st.RUNNING), pods, NOW)
    assert decision.transition.phase == st.RESTARTING and decision.transition.reason == st.RANK_FAILED
    assert decision.transition.message.startswith(f"rank 0 (pod cats-worker-0) failed with exit code 6: {PEER_LOST}")
    assert names(decision.delete_pods) == ["cats-worker-0", "cats-worker-1"]


def test_peer_losses_with_no_rank_left_to_report_restart_at_once():
    pods = [lost_peer(0, 0), lost_peer(1, 0)]
    assert not awaiting_root_cause(pods, NOW)
    assert decide(job(st.RUNNING), pods, NOW).transition.phase == st.RESTARTING


def test_invalid_input_wins_over_peer_losses_at_once():
    invalid = crashed(1, 0, EXIT_INVALID_INPUT, "spec.model.uri: missing")
    decision = decide(job(st.RUNNING), [lost_peer(0, 1), invalid], NOW)
    assert decision.transition.reason == st.INVALID_INPUT and "spec.model.uri: missing" in decision.transition.message


def test_invalid_input_exit_fails_the_job_at_once_with_the_workers_reason():
    reason = "rank 0: InvalidInput: spec.model.uri: /models/wan is not a folder on this machine"
    invalid = pod(0, "Failed", exit_code=EXIT_INVALID_INPUT, termination_message=reason)
    decision = decide(job(st.RUNNING, run_policy={"backoffLimit": 3}), [invalid, pod(1)], NOW)
    assert decision.transition.phase == st.FAILED and decision.transition.reason == st.INVALID_INPUT
    assert reason in decision.transition.message and "not retried" in decision.transition.message
    assert decision.status == {"completionTime": st.timestamp(NOW)}  # restarts stay 0: no second attempt
    assert names(decision.delete_pods) == ["cats-worker-1"] and decision.delete_service  # the rest of the gang
    assert decision.create_ranks == ()


def test_invalid_input_wins_over_an_earlier_retryable_failure():
    """Every rank runs the same input: one rank's invalid-input exit means no attempt can succeed."""
    crashed = pod(
        1,
        "Failed",
        exit_code=EXIT_FAILED,
        termination_message="peer gone",
        finished=NOW - datetime.timedelta(seconds=9),
    )
    invalid = pod(
        0, "Failed", exit_code=EXIT_INVALID_INPUT, termination_message="spec.model.uri: missing", finished=NOW
    )
    decision = decide(job(st.RUNNING), [crashed, invalid], NOW)
    assert decision.transition.reason == st.INVALID_INPUT and "spec.model.uri: missing" in decision.transition.message


def test_every_permanent_exit_code_fails_and_others_restart():
    for code in PERMANENT_EXIT_CODES:
        assert decide(job(st.RUNNING), [pod(0, "Failed", exit_code=code), pod(1)], NOW).transition.phase == st.FAILED
    for code in (EXIT_FAILED, 3, 137, None):
        restarted = decide(job(st.RUNNING), [pod(0, "Failed", exit_code=code), pod(1)], NOW)
        assert restarted.transition.phase == st.RESTARTING, code


def test_restart_waits_for_the_old_pods_then_creates_the_next_attempt():
    restarting = job(st.RESTARTING, restarts=1)
    terminating = [pod(0, attempt=0, deleting=True), pod(1, "Failed", attempt=0, deleting=True)]
    assert decide(restarting, terminating, NOW) == WAIT
    assert decide(restarting, terminating[:1], NOW) == WAIT  # same names: all must be gone
    assert decide(restarting, [], NOW).create_ranks == (0, 1)


def test_leftover_pods_of_an_older_attempt_are_deleted():
    decision = decide(job(st.RESTARTING, restarts=1), [pod(0, attempt=0), pod(1, attempt=1)], NOW)
    assert names(decision.delete_pods) == ["cats-worker-0"] and decision.transition is None


def test_restarted_gang_running_again_clears_restarting():
    decision = decide(job(st.RESTARTING, restarts=1), [pod(0, attempt=1), pod(1, attempt=1)], NOW)
    assert decision.transition.phase == st.RUNNING
    assert "attempt 1" in decision.transition.message


def test_backoff_limit_exceeded_fails_with_the_rank_message():
    failed = pod(0, "Failed", attempt=2, exit_code=1, termination_message="model not found")
    decision = decide(job(st.RUNNING, restarts=2, run_policy={"backoffLimit": 2}), [failed, pod(1, attempt=2)], NOW)
    assert decision.transition.phase == st.FAILED and decision.transition.reason == st.BACKOFF_LIMIT_EXCEEDED
    assert "model not found" in decision.transition.message and "backoffLimit 2" in decision.transition.message
    assert decision.status == {"completionTime": st.timestamp(NOW)}


def test_rank_deleted_or_gone_while_running_restarts_the_gang():
    deleted = decide(job(st.RUNNING), [pod(0), pod(1, deleting=True)], NOW)
    assert deleted.transition.reason == st.RANK_FAILED and "was deleted" in deleted.transition.message
    gone = decide(job(st.RUNNING), [pod(0)], NOW)
    assert gone.transition.reason == st.RANK_FAILED
    assert "rank 1 (pod cats-worker-1) disappeared" in gone.transition.message


def test_pod_deleted_before_the_gang_ran_is_recreated_without_a_restart():
    assert decide(job(), [pod(0, "Pending"), pod(1, "Pending", deleting=True)], NOW) == WAIT
    assert decide(job(), [pod(0, "Pending")], NOW).create_ranks == (1,)


def test_pods_of_another_job_with_the_same_name_block_creation():
    old = pod(0, owner_uid="old-uid", deleting=True)
    assert decide(job(), [old], NOW) == WAIT


# --- deadlines -------------------------------------------------------------------------------------


def test_active_deadline_fails_the_job_and_deletes_running_pods():
    decision = decide(job(st.RUNNING, run_policy={"activeDeadlineSeconds": 10}, started=11), [pod(0), pod(1)], NOW)
    assert decision.transition.phase == st.FAILED and decision.transition.reason == st.DEADLINE_EXCEEDED
    assert names(decision.delete_pods) == ["cats-worker-0", "cats-worker-1"]
    assert decide(job(st.RUNNING, run_policy={"activeDeadlineSeconds": 10}, started=9), [pod(0), pod(1)], NOW) == WAIT


def test_pod_stuck_pending_fails_with_its_waiting_reason():
    stuck = pod(1, "Pending", age=31, waiting_reason="ImagePullBackOff", waiting_message='Back-off pulling image "w"')
    decision = decide(job(run_policy={"preRunningDeadlineSeconds": 30}), [pod(0), stuck], NOW)
    assert decision.transition.phase == st.FAILED and decision.transition.reason == "ImagePullBackOff"
    assert decision.transition.message == (
        'pod cats-worker-1 did not start within preRunningDeadlineSeconds (30s): Back-off pulling image "w"'
    )
    assert names(decision.delete_pods) == ["cats-worker-0", "cats-worker-1"]


def test_pod_pending_without_a_reason_fails_with_the_deadline_reason():
    decision = decide(job(run_policy={"preRunningDeadlineSeconds": 30}), [pod(0, "Pending", age=30), pod(1)], NOW)
    assert decision.transition.reason == st.PRE_RUNNING_DEADLINE_EXCEEDED
    assert decide(job(run_policy={"preRunningDeadlineSeconds": 30}), [pod(0, "Pending", age=29), pod(1)], NOW) == WAIT


# --- suspension ------------------------------------------------------------------------------------


def test_suspend_deletes_pods_and_resets_start_time():
    decision = decide(job(st.RUNNING, run_policy={"suspend": True}), [pod(0), pod(1, "Succeeded")], NOW)
    assert decision.transition == st.Transition(
        st.SUSPENDED, st.SUSPENDED, st.JOB_SUSPENDED, "job suspended: worker pods deleted"
    )
    assert decision.status == {"startTime": None}
    assert names(decision.delete_pods) == ["cats-worker-0", "cats-worker-1"]


def test_suspended_job_waits_and_deletes_stragglers():
    suspended = job(st.SUSPENDED, run_policy={"suspend": True}, started=None)
    assert decide(suspended, [], NOW) == WAIT
    assert names(decide(suspended, [pod(0)], NOW).delete_pods) == ["cats-worker-0"]


def test_resume_restarts_the_clock_then_recreates_pods():
    resumed = decide(job(st.SUSPENDED, started=None), [], NOW)
    assert resumed.transition == st.Transition(
        st.PENDING, st.SUSPENDED, st.JOB_RESUMED, "job resumed: recreating worker pods", condition_status=False
    )
    assert resumed.status == {"startTime": st.timestamp(NOW)}
    assert decide(job(st.PENDING, started=0), [], NOW).create_ranks == (0, 1)


def test_suspension_wins_over_deadlines():
    expired = job(st.RUNNING, run_policy={"suspend": True, "activeDeadlineSeconds": 1}, started=100)
    assert decide(expired, [pod(0), pod(1)], NOW).transition.phase == st.SUSPENDED


# --- invalid specs and TTL -------------------------------------------------------------------------


def test_reject_invalid_fails_and_deletes_only_this_jobs_unfinished_pods():
    pods = [pod(0), pod(1, "Succeeded"), pod(2, owner_uid="other")]
    decision = reject_invalid(UID, pods, "spec.generation: frames must be 4k+1", NOW)
    assert decision.transition.phase == st.FAILED and decision.transition.reason == st.INVALID_SPEC
    assert names(decision.delete_pods) == ["cats-worker-0"]


def test_seconds_until_expiry_counts_from_completion():
    status = {"completionTime": st.timestamp(NOW - datetime.timedelta(seconds=30))}
    assert seconds_until_expiry(status, 100, NOW) == 70
    assert seconds_until_expiry(status, 10, NOW) == -20


def test_job_attempt_follows_restarts():
    assert job(restarts=2).attempt == 2
    assert dataclasses.replace(job(), status={}).attempt == 0
