"""health.py through decide(): a stalled gang and ranks on a lost node restart the gang (counted), on plain values."""

from __future__ import annotations

import datetime

import pytest
from test_operator_lifecycle import NOW, job, pod

from chitu_api.generationjob import InvalidSpec, parse_spec
from chitu_operator import health
from chitu_operator import status as st
from chitu_operator.lifecycle import WAIT, decide
from chitu_operator.pods import PodView

LOST = (("Ready", "False"),)  # what kube-controller-manager leaves on a pod of a node that stopped reporting


def ago(seconds: float) -> str:
    return st.timestamp(NOW - datetime.timedelta(seconds=seconds))


def running(seconds_ago: float, reported_ago: float | None, limit: int = 60, restarts: int = 0):
    """A Running job (Running since `seconds_ago`), rank 0's last report `reported_ago` seconds back."""
    conditions = [{"type": st.RUNNING, "status": "True", "lastTransitionTime": ago(seconds_ago)}]
    progress = {"currentStep": 3, "totalSteps": 20, "promptsDone": 1, "promptsTotal": 2}
    if reported_ago is not None:
        progress["lastUpdateTime"] = ago(reported_ago)
    return job(
        st.RUNNING,
        restarts=restarts,
        run_policy={"stallTimeoutSeconds": limit, "backoffLimit": 2},
        conditions=conditions,
        progress=progress,
    )


def test_a_gang_silent_past_the_timeout_is_restarted_as_stalled():
    decision = decide(running(300, 61), [pod(0), pod(1)], NOW)
    assert decision.transition.phase == st.RESTARTING
    assert decision.transition.reason == health.STALLED
    assert "no progress for 61 s (stallTimeoutSeconds 60): rank 0 (pod cats-worker-0)" in decision.transition.message
    assert "at step 3/20 with 1/2 prompts done" in decision.transition.message
    assert decision.status["restarts"] == 1
    assert {p.name for p in decision.delete_pods} == {"cats-worker-0", "cats-worker-1"}


def test_a_reporting_gang_is_left_alone():
    assert decide(running(300, 59), [pod(0), pod(1)], NOW) == WAIT


def test_the_clock_starts_with_the_attempt_not_with_an_older_attempts_report():
    """The last report came from the attempt before (restarted 30 s ago): not a stall yet."""
    assert decide(running(30, 500, restarts=1), [pod(0, attempt=1), pod(1, attempt=1)], NOW) == WAIT
    assert decide(running(30, None), [pod(0), pod(1)], NOW) == WAIT


def test_a_finished_reporter_is_not_stalled():
    """Rank 0 succeeded long ago (the operator was down meanwhile): the gang finishes, it is not restarted."""
    assert decide(running(3000, 2000), [pod(0, "Succeeded"), pod(1, "Succeeded")], NOW).transition.phase == (
        st.SUCCEEDED
    )
    assert decide(running(3000, 2000), [pod(0, "Succeeded"), pod(1)], NOW) == WAIT


def test_a_stall_past_the_backoff_limit_fails_the_job():
    decision = decide(running(300, 100, restarts=2), [pod(0, attempt=2), pod(1, attempt=2)], NOW)
    assert decision.transition.phase == st.FAILED
    assert decision.transition.reason == st.BACKOFF_LIMIT_EXCEEDED
    assert "no progress for 100 s" in decision.transition.message


def test_a_rank_on_a_lost_node_restarts_the_gang_naming_the_node():
    lost = pod(1, conditions=LOST, node_name="node-b")
    decision = decide(running(300, 1), [pod(0), lost], NOW)
    assert decision.transition.reason == health.NODE_LOST
    assert decision.transition.message.startswith(
        "rank 1 (pod cats-worker-1) was lost with node node-b: the node stopped reporting"
    )
    assert decision.status["restarts"] == 1
    assert health.node_lost(lost) and not health.node_lost(pod(0))


def test_pods_of_a_lost_node_already_deleted_are_deleted_again_to_be_forced():
    """The taint manager (or the restart) deleted it; no kubelet confirms, so the name would stay taken."""
    stranded = pod(1, conditions=LOST, deleting=True)
    decision = decide(job(st.RESTARTING, restarts=1), [stranded, pod(0, "Succeeded")], NOW)
    assert decision.delete_pods == (stranded,)


def test_a_finished_pod_is_not_lost():
    assert not health.node_lost(pod(0, "Succeeded", conditions=LOST))


def test_pod_view_reads_the_node_name():
    view = PodView.from_pod(
        {
            "metadata": {"name": "p", "labels": {"chitu.dev/rank": "0"}},
            "spec": {"nodeName": "node-b"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]},
        }
    )
    assert view.node_name == "node-b" and health.node_lost(view)


@pytest.mark.parametrize("value", [5, 604801])
def test_stall_timeout_bounds_name_the_field(value):
    spec = {"model": {"uri": "/m"}, "prompt": "a", "worker": {"image": "w"}, "output": {"uri": "s3://videos/p"}}
    with pytest.raises(InvalidSpec, match=r"^spec\.runPolicy\.stallTimeoutSeconds: "):
        parse_spec({**spec, "runPolicy": {"stallTimeoutSeconds": value}})


def test_a_lost_final_report_restarts_without_counting():
    """Exit 5 (ReportLost): every output is stored, the next attempt only reports them; even backoffLimit 0 allows
    it, so a job whose videos are all in storage never fails for want of a status write."""
    base = job(st.RUNNING, run_policy={"backoffLimit": 0})
    decision = decide(base, [pod(0, "Failed", exit_code=5), pod(1, "Succeeded")], NOW)
    assert decision.transition.phase == st.RESTARTING and decision.transition.reason == st.RANK_FAILED
    assert "not counted: every output is stored, the next attempt reports them" in decision.transition.message
    assert decision.status == {"restarts": 1, "firstFailure": decision.status["firstFailure"], "ignoredRestarts": 1}
