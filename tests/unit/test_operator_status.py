"""Conditions, transitions and the status patches the operator writes."""

from __future__ import annotations

import datetime

from chitu_operator import status as st

T0 = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def by_type(conditions):
    return {c["type"]: c for c in conditions}


def test_timestamp_is_rfc3339_utc():
    assert st.timestamp(T0) == "2026-01-01T12:00:00Z"


def test_set_condition_adds_then_keeps_transition_time_while_status_holds():
    first = st.set_condition([], st.RUNNING, True, "PodsRunning", "running", T0, 1)
    assert first == [
        {
            "type": "Running",
            "status": "True",
            "reason": "PodsRunning",
            "message": "running",
            "lastTransitionTime": "2026-01-01T12:00:00Z",
            "observedGeneration": 1,
        }
    ]
    same = st.set_condition(first, st.RUNNING, True, "PodsRunning", "still running", T1, 2)
    assert same[0]["lastTransitionTime"] == "2026-01-01T12:00:00Z" and same[0]["message"] == "still running"
    flipped = st.set_condition(same, st.RUNNING, False, "JobSucceeded", "done", T1, 2)
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T12:05:00Z" and flipped[0]["status"] == "False"
    assert first[0]["message"] == "running"  # inputs are not modified


def test_transition_turns_the_other_exclusive_conditions_false():
    running = st.transition_patch({}, st.Transition(st.RUNNING, st.RUNNING, st.PODS_RUNNING, "up"), T0, 1)
    restart = st.Transition(st.RESTARTING, st.RESTARTING, st.RANK_FAILED, "boom")
    restarting = st.transition_patch(running, restart, T1, 1)
    conditions = by_type(restarting["conditions"])
    assert restarting["phase"] == st.RESTARTING and restarting["message"] == "boom"
    assert conditions["Running"]["status"] == "False" and conditions["Running"]["reason"] == st.RANK_FAILED
    assert conditions["Restarting"]["status"] == "True"
    back = st.transition_patch(restarting, st.Transition(st.RUNNING, st.RUNNING, st.PODS_RUNNING, "up again"), T1, 1)
    assert by_type(back["conditions"])["Restarting"]["status"] == "False"
    assert by_type(back["conditions"])["Running"]["status"] == "True"


def test_finishing_ends_running_but_keeps_created():
    created = st.initial_status(prompts=2, steps=50, world_size=2, suspended=False, now=T0, generation=1)
    run = st.Transition(st.RUNNING, st.RUNNING, st.PODS_RUNNING, "")
    running = {**created, **st.transition_patch(created, run, T0, 1)}
    done = st.transition_patch(running, st.Transition(st.SUCCEEDED, st.SUCCEEDED, st.JOB_SUCCEEDED, "ok"), T1, 1)
    conditions = by_type(done["conditions"])
    assert {k: c["status"] for k, c in conditions.items()} == {
        "Created": "True",
        "Running": "False",
        "Succeeded": "True",
    }
    assert done["observedGeneration"] == 1


def test_resume_sets_suspended_false_without_touching_others():
    suspended = st.transition_patch({}, st.Transition(st.SUSPENDED, st.SUSPENDED, st.JOB_SUSPENDED, "s"), T0, 1)
    resumed = st.transition_patch(
        suspended, st.Transition(st.PENDING, st.SUSPENDED, st.JOB_RESUMED, "r", condition_status=False), T1, 1
    )
    assert resumed["phase"] == st.PENDING
    assert by_type(resumed["conditions"])["Suspended"] | {"lastTransitionTime": None} == {
        "type": "Suspended",
        "status": "False",
        "reason": "JobResumed",
        "message": "r",
        "lastTransitionTime": None,
        "observedGeneration": 1,
    }


def test_initial_status_sets_totals_and_start_time():
    status = st.initial_status(prompts=2, steps=30, world_size=4, suspended=False, now=T0, generation=1)
    assert status["phase"] == st.PENDING and status["restarts"] == 0 and status["worldSize"] == 4
    assert status["startTime"] == "2026-01-01T12:00:00Z"
    assert status["progress"] == {
        "currentStep": 0,
        "totalSteps": 30,
        "percent": 0,
        "promptsDone": 0,
        "promptsTotal": 2,
        "summary": "0/2",
    }
    assert by_type(status["conditions"])["Created"]["reason"] == st.JOB_CREATED


def test_initial_status_of_a_suspended_job_has_no_start_time():
    status = st.initial_status(prompts=1, steps=30, world_size=1, suspended=True, now=T0, generation=1)
    assert status["phase"] == st.SUSPENDED and "startTime" not in status
    assert by_type(status["conditions"])["Suspended"]["reason"] == st.JOB_SUSPENDED


def test_derived_fields_follow_the_workers_counts_and_the_generation():
    status = {"progress": {"promptsDone": 1, "promptsTotal": 2, "summary": "0/2"}, "observedGeneration": 1}
    assert st.derived_patch(status, 1) == {"progress": {"summary": "1/2"}}
    assert st.derived_patch(status, 2) == {"progress": {"summary": "1/2"}, "observedGeneration": 2}
    assert st.derived_patch({"progress": {"promptsDone": 1, "promptsTotal": 2, "summary": "1/2"}}, None) == {}
    assert st.derived_patch({}, None) == {}


def test_warnings_are_failures_and_restarts():
    assert st.Transition(st.FAILED, st.FAILED, "X", "").warning
    assert st.Transition(st.RESTARTING, st.RESTARTING, "X", "").warning
    assert not st.Transition(st.RUNNING, st.RUNNING, "X", "").warning
