"""The job's lifecycle as a pure function: ``decide(job, pods, now) -> Decision``.

Everything the decision needs is in the job object (spec and status) and the pods the cluster holds,
so a restarted operator decides exactly as the old one would have. The reconcile timer carries the
decision out (gang.carry_out) and writes its status patch; nothing here touches the cluster.

Gang semantics follow Kubeflow's PyTorchJob and JobSet: the pods of one attempt live and die
together. A failed rank (or a rank lost while the gang runs) deletes the whole attempt; once its
pods are gone, the next attempt's pods (same names, label restart-attempt = status.restarts) are
created, until runPolicy.backoffLimit restarts are spent. A rank that exits with a permanent exit code
(chitu_api.exitcodes: invalid input, such as a model path that does not exist) fails the job at once: the
same input would fail again. Rules are checked in this order: suspension, activeDeadlineSeconds,
preRunningDeadlineSeconds, failed ranks, then the gang's progress.

Decisions tolerate a stale read (the job's status or the pod index a moment behind the cluster):
repeated, a decision writes the same status values (restarts = status.restarts + 1 of the same
status) and its creations and deletions are idempotent.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chitu_api.generationjob import GenerationJobSpec, parse_spec
from chitu_api.names import pod_name

from . import status as st
from .pods import FAILED, PENDING, RUNNING, SUCCEEDED, PodView, parse_time


@dataclass(frozen=True)
class Job:
    """A GenerationJob as the lifecycle sees it."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    spec: GenerationJobSpec
    status: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Job:
        """Raises InvalidSpec when the spec cannot be run."""
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"],
                   generation=meta.get("generation"), spec=parse_spec(body.get("spec") or {}),
                   status=body.get("status") or {})

    @property
    def phase(self) -> str | None:
        return self.status.get("phase")

    @property
    def attempt(self) -> int:
        """The current attempt: 0, then one more per gang restart."""
        return int(self.status.get("restarts") or 0)


@dataclass(frozen=True)
class Decision:
    """What to do now. Empty means wait for the next tick."""

    transition: st.Transition | None = None
    status: Mapping[str, Any] = field(default_factory=dict)  # more status fields (restarts, times)
    delete_pods: tuple[PodView, ...] = ()
    create_ranks: tuple[int, ...] = ()  # pods to create for job.attempt
    delete_service: bool = False


WAIT = Decision()


def decide(job: Job, pods: Iterable[PodView], now: datetime.datetime) -> Decision:
    """The next step for an active job (phase Pending, Running, Restarting or Suspended)."""
    pods = tuple(pods)
    owned = tuple(p for p in pods if p.owner_uid == job.uid)
    if job.spec.run_policy.suspend:
        return _suspend(job, owned)
    if job.phase == st.SUSPENDED:
        return _resume(now)
    return (_past_active_deadline(job, owned, now) or _stuck_before_running(job, owned, now)
            or _rank_lost(job, owned, now) or _advance_gang(job, pods, owned, now))


def reject_invalid(uid: str, pods: Iterable[PodView], message: str, now: datetime.datetime) -> Decision:
    """A job whose spec became unrunnable (see spec.py): Failed/InvalidSpec, its unfinished pods deleted."""
    unfinished = tuple(p for p in pods if p.owner_uid == uid and p.phase in (PENDING, RUNNING) and not p.deleting)
    return Decision(st.Transition(st.FAILED, st.FAILED, st.INVALID_SPEC, message),
                    {"completionTime": st.timestamp(now)}, delete_pods=unfinished)


def seconds_until_expiry(status: Mapping[str, Any], ttl_seconds: int, now: datetime.datetime) -> float:
    """How long a finished job has left before ttlSecondsAfterFinished deletes it (<= 0: now)."""
    finished = parse_time(status.get("completionTime")) or now
    return (finished + datetime.timedelta(seconds=ttl_seconds) - now).total_seconds()


# --- the rules, in the order decide() applies them ------------------------------------------------


def _suspend(job: Job, owned: Sequence[PodView]) -> Decision:
    alive = tuple(p for p in owned if not p.deleting)
    if job.phase == st.SUSPENDED:
        return Decision(delete_pods=alive) if alive else WAIT
    suspended = st.Transition(st.SUSPENDED, st.SUSPENDED, st.JOB_SUSPENDED, "job suspended: worker pods deleted")
    # As Kubeflow does, suspension resets startTime, so activeDeadlineSeconds counts from the resume.
    return Decision(suspended, {"startTime": None}, delete_pods=alive)


def _resume(now: datetime.datetime) -> Decision:
    resumed = st.Transition(st.PENDING, st.SUSPENDED, st.JOB_RESUMED, "job resumed: recreating worker pods",
                            condition_status=False)
    return Decision(resumed, {"startTime": st.timestamp(now)})


def _past_active_deadline(job: Job, owned: Sequence[PodView], now: datetime.datetime) -> Decision | None:
    deadline = job.spec.run_policy.active_deadline_seconds
    started = parse_time(job.status.get("startTime"))
    if deadline is None or started is None or (now - started).total_seconds() < deadline:
        return None
    return _finish(job, owned, now, st.FAILED, st.DEADLINE_EXCEEDED,
                   f"job was active longer than activeDeadlineSeconds ({deadline}s)")


def _stuck_before_running(job: Job, owned: Sequence[PodView], now: datetime.datetime) -> Decision | None:
    limit = job.spec.run_policy.pre_running_deadline_seconds
    for pod in _current(job, owned):
        if pod.phase == PENDING and not pod.deleting and pod.created and (now - pod.created).total_seconds() >= limit:
            detail = f": {pod.waiting_message}" if pod.waiting_message else ""
            return _finish(job, owned, now, st.FAILED, pod.waiting_reason or st.PRE_RUNNING_DEADLINE_EXCEEDED,
                           f"pod {pod.name} did not start within preRunningDeadlineSeconds ({limit}s){detail}")
    return None


def _rank_lost(job: Job, owned: Sequence[PodView], now: datetime.datetime) -> Decision | None:
    """A failed rank ends the attempt (and the job, on invalid input); so does a rank deleted or gone while the
    gang was running."""
    current = _current(job, owned)
    failed = sorted((p for p in current if p.phase == FAILED), key=lambda p: (p.finished or now, p.rank))
    invalid = next((p for p in failed if p.failed_permanently), None)
    if invalid:
        return _finish(job, current, now, st.FAILED, st.INVALID_INPUT,
                       f"{invalid.failure()} (invalid input: not retried)")
    if failed:
        return _restart_or_fail(job, current, now, failed[0].failure())
    if job.phase != st.RUNNING:
        return None
    # Running means every rank was seen running: one deleted or gone since then breaks the gang.
    deleted = sorted((p for p in current if p.deleting and p.phase != SUCCEEDED), key=lambda p: p.rank)
    if deleted:
        return _restart_or_fail(job, current, now, f"rank {deleted[0].rank} (pod {deleted[0].name}) was deleted")
    present = {p.rank for p in current}
    gone = [rank for rank in range(job.spec.parallelism.pods) if rank not in present]
    if gone:
        return _restart_or_fail(job, current, now, f"rank {gone[0]} (pod {pod_name(job.name, gone[0])}) disappeared")
    return None


def _restart_or_fail(job: Job, current: Sequence[PodView], now: datetime.datetime, reason: str) -> Decision:
    limit = job.spec.run_policy.backoff_limit
    if job.attempt >= limit:
        return _finish(job, current, now, st.FAILED, st.BACKOFF_LIMIT_EXCEEDED,
                       f"{reason} (backoffLimit {limit} reached after {job.attempt} restarts)")
    restarting = st.Transition(st.RESTARTING, st.RESTARTING, st.RANK_FAILED,
                               f"{reason}; restarting the gang (restart {job.attempt + 1} of {limit})")
    return Decision(restarting, {"restarts": job.attempt + 1},
                    delete_pods=tuple(p for p in current if not p.deleting))


def _advance_gang(job: Job, pods: Sequence[PodView], owned: Sequence[PodView], now: datetime.datetime) -> Decision:
    """Clear leftovers of older attempts, create missing pods, then follow the gang to Running/Succeeded."""
    stale = tuple(p for p in owned if p.attempt != job.attempt and not p.deleting)
    if stale:
        return Decision(delete_pods=stale)
    current = {p.rank: p for p in _current(job, owned)}
    ranks = range(job.spec.parallelism.pods)
    # Names repeat across attempts (and across jobs of the same name): wait until the old pods are gone.
    names = {pod_name(job.name, rank) for rank in ranks}
    ours = {p.uid for p in current.values()}
    if any(p.name in names and p.uid not in ours for p in pods):
        return WAIT
    missing = tuple(rank for rank in ranks if rank not in current)
    if missing:
        return Decision(create_ranks=missing)
    if any(p.deleting for p in current.values()):
        return WAIT
    if all(p.phase == SUCCEEDED for p in current.values()):
        return _finish(job, tuple(current.values()), now, st.SUCCEEDED, st.JOB_SUCCEEDED,
                       f"all {len(current)} worker pods succeeded")
    if job.phase != st.RUNNING and all(p.phase in (RUNNING, SUCCEEDED) for p in current.values()):
        return Decision(st.Transition(st.RUNNING, st.RUNNING, st.PODS_RUNNING,
                                      f"all {len(current)} worker pods are running (attempt {job.attempt})"))
    return WAIT


def _finish(job: Job, pods: Sequence[PodView], now: datetime.datetime, phase: str, reason: str,
            message: str) -> Decision:
    """Succeeded or Failed, cleaning pods by runPolicy.cleanPodPolicy (Kubeflow semantics):
    All deletes every pod, Running the unfinished ones (Pending or Running), None keeps them all."""
    policy = job.spec.run_policy.clean_pod_policy
    doomed = tuple(p for p in pods if not p.deleting and (policy == "All" or (
        policy == "Running" and p.phase in (PENDING, RUNNING))))
    return Decision(st.Transition(phase, phase, reason, message), {"completionTime": st.timestamp(now)},
                    delete_pods=doomed, delete_service=policy != "None")


def _current(job: Job, owned: Iterable[PodView]) -> tuple[PodView, ...]:
    return tuple(p for p in owned if p.attempt == job.attempt)
