"""Phases, conditions and the status patches the operator writes (a public contract: printer columns
and users read them).

The operator owns phase, conditions, message, startTime, completionTime, restarts, worldSize,
observedGeneration and progress.summary; the worker's rank 0 owns the rest of progress and
outputs. Every write is a merge patch of the operator's own keys, so neither overwrites the other.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Phases (status.phase); each but Pending is also the condition type set True on entering it.
PENDING, RUNNING, RESTARTING = "Pending", "Running", "Restarting"
SUCCEEDED, FAILED, SUSPENDED = "Succeeded", "Failed", "Suspended"
CREATED = "Created"  # condition only
QUEUED = "Queued"  # condition only: waiting for (or evicted by) Kueue, no pod exists
PODS_PENDING = "PodsPending"  # condition only: a pod waits for something to fix (reason: the pod's)
ACTIVE_PHASES = frozenset({PENDING, RUNNING, RESTARTING, SUSPENDED})
FINISHED_PHASES = frozenset({SUCCEEDED, FAILED})
# At most one of these is True: entering one turns the others False.
EXCLUSIVE_CONDITIONS = (RUNNING, RESTARTING, SUSPENDED, QUEUED)
# Entering one of these (True) settles PodsPending: the pods started, or the job ended.
SETTLES_PENDING = (RUNNING, SUCCEEDED, FAILED, QUEUED, SUSPENDED)

# Reasons (conditions and events). A pod that never starts reports its own waiting reason instead.
JOB_CREATED = "JobCreated"
PODS_RUNNING = "PodsRunning"
RANK_FAILED = "RankFailed"
INVALID_INPUT = "InvalidInput"  # a rank exited with a permanent exit code (chitu_api.exitcodes): never retried
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
DEADLINE_EXCEEDED = "DeadlineExceeded"
PRE_RUNNING_DEADLINE_EXCEEDED = "PreRunningDeadlineExceeded"
INVALID_SPEC = "InvalidSpec"
CREATE_REFUSED = "CreateRefused"  # the apiserver refused a pod or another object the job needs (403, 422)
CREATE_RETRIED = "CreateRetried"  # PodsPending: a refusal that may pass later (quota, the operator's RBAC)
JOB_SUCCEEDED = "JobSucceeded"
JOB_SUSPENDED = "JobSuspended"
JOB_RESUMED = "JobResumed"
POD_FAILURE_POLICY = "PodFailurePolicy"
WAITING_FOR_ADMISSION, ADMITTED, EVICTED = "WaitingForAdmission", "Admitted", "Evicted"  # Queued reasons


def timestamp(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes times."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Transition:
    """A move to a new phase, with the condition that records why."""

    phase: str
    condition: str
    reason: str
    message: str
    condition_status: bool = True

    @property
    def warning(self) -> bool:
        return self.phase == FAILED or self.condition == RESTARTING


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    kind: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime.datetime,
    generation: int | None,
) -> list[dict[str, Any]]:
    """A new condition list with ``kind`` set; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    old = next((c for c in conditions if c.get("type") == kind), None)
    changed = old is None or old.get("status") != value
    condition = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": timestamp(now) if changed else old.get("lastTransitionTime", timestamp(now)),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    if old is None:
        return [*map(dict, conditions), condition]
    return [condition if c.get("type") == kind else dict(c) for c in conditions]


def transition_patch(
    status: Mapping[str, Any], transition: Transition, now: datetime.datetime, generation: int | None
) -> dict[str, Any]:
    """The status fields a transition writes: phase, message, conditions, observedGeneration."""
    conditions = list(status.get("conditions") or [])
    if transition.condition_status and transition.condition in (*EXCLUSIVE_CONDITIONS, *FINISHED_PHASES):
        for other in EXCLUSIVE_CONDITIONS:
            if other != transition.condition and _is_true(conditions, other):
                conditions = set_condition(
                    conditions, other, False, transition.reason, transition.message, now, generation
                )
    if transition.condition_status and transition.condition in SETTLES_PENDING and _is_true(conditions, PODS_PENDING):
        conditions = set_condition(
            conditions, PODS_PENDING, False, transition.reason, transition.message, now, generation
        )
    conditions = set_condition(
        conditions,
        transition.condition,
        transition.condition_status,
        transition.reason,
        transition.message,
        now,
        generation,
    )
    patch = {"phase": transition.phase, "message": transition.message, "conditions": conditions}
    if generation is not None:
        patch["observedGeneration"] = generation
    return patch


def initial_status(
    *, prompts: int, steps: int, world_size: int, suspended: bool, now: datetime.datetime, generation: int | None
) -> dict[str, Any]:
    """What a freshly created job's status holds (the worker has not reported anything yet)."""
    created = transition_patch({}, Transition(PENDING, CREATED, JOB_CREATED, "worker gang created"), now, generation)
    status = {
        **created,
        "restarts": 0,
        "worldSize": world_size,
        "progress": {
            "currentStep": 0,
            "totalSteps": steps,
            "percent": 0,
            "promptsDone": 0,
            "promptsTotal": prompts,
            "summary": f"0/{prompts}",
        },
    }
    if suspended:  # the activeDeadlineSeconds clock starts on resume
        suspend = Transition(SUSPENDED, SUSPENDED, JOB_SUSPENDED, "job created suspended: no pods until resumed")
        return {**status, **transition_patch(status, suspend, now, generation)}
    return {**status, "startTime": timestamp(now)}


def derived_patch(status: Mapping[str, Any], generation: int | None) -> dict[str, Any]:
    """Fields that follow others, when they fell behind: progress.summary ("done/total", the Prompts
    column) after the worker's counts, observedGeneration after a spec change (runPolicy)."""
    patch: dict[str, Any] = {}
    progress = status.get("progress") or {}
    if "promptsTotal" in progress:
        summary = f"{progress.get('promptsDone', 0)}/{progress['promptsTotal']}"
        if progress.get("summary") != summary:
            patch["progress"] = {"summary": summary}
    if generation is not None and status.get("observedGeneration") != generation:
        patch["observedGeneration"] = generation
    return patch


def _is_true(conditions: Sequence[Mapping[str, Any]], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def condition_since(status: Mapping[str, Any], kind: str) -> datetime.datetime | None:
    """When condition ``kind`` last became True (None unless it is True now)."""
    found = next(
        (c for c in status.get("conditions") or [] if c.get("type") == kind and c.get("status") == "True"), None
    )
    stamp = (found or {}).get("lastTransitionTime")
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None
