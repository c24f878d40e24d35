"""The job's lifecycle as a pure function: ``decide(job, pods, now) -> Decision``.

Everything the decision needs is in the job object (spec and status) and the pods the cluster holds,
so a restarted operator decides exactly as the old one would have. The reconcile timer carries the
decision out (gang.carry_out) and writes its status patch; nothing here touches the cluster.

Gang semantics follow Kubeflow's PyTorchJob and JobSet: the pods of one attempt live and die
together. A failed rank (or a rank lost while the gang runs) deletes the whole attempt; once its
pods are gone, the next attempt's pods (same names, label restart-attempt = status.restarts) are
created (after runPolicy.restartBackoffSeconds, doubling with each restart), until
runPolicy.backoffLimit restarts are spent. The failed rank quoted is the root cause (rootcause.py): a rank
whose collective only lost its peer yields to any other failure, which is waited for briefly. A rank that exits
with a permanent exit code (chitu_api.exitcodes: invalid input, such as a model path that does not exist) fails
the job at once: the same input would fail again; spec.runPolicy.podFailurePolicy rules may fail the job or
restart without counting. A queued job (Kueue, docs/kueue.md) has no pod until its Workload is admitted and
loses its gang, without a restart being counted, when evicted. A job without a status is new (or its first status was
lost with the operator): it is started. A gang that has not failed but stopped working (no progress for
runPolicy.stallTimeoutSeconds, or a rank on a node that stopped reporting: health.py) is restarted like one that
failed. Rules are checked in this order: suspension, the queue, activeDeadlineSeconds,
preRunningDeadlineSeconds, failed ranks, pending causes, health, then the gang's progress.

Decisions tolerate a stale read (the job's status or the pod index a moment behind the cluster):
repeated, a decision writes the same status values (restarts = status.restarts + 1 of the same
status) and its creations and deletions are idempotent.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chitu_api.exitcodes import EXIT_REPORT_LOST
from chitu_api.failurepolicy import FAIL_JOB, IGNORE
from chitu_api.generationjob import GenerationJobSpec, parse_spec
from chitu_api.names import KUEUE_QUEUE_LABEL, pod_name
from chitu_api.operatorconfig import OperatorConfig, with_platform_defaults

from . import health, rootcause
from . import status as st
from .pods import FAILED, PENDING, RUNNING, SUCCEEDED, PodView, parse_time
from .queueing import QueueView

# Pods waiting for something a user can fix: the kubelet's or the scheduler's reason, surfaced at once.
PENDING_CAUSES = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "Unschedulable",
    }
)


MAX_RESTART_BACKOFF_SECONDS = 300


@dataclass(frozen=True)
class Job:
    """A GenerationJob as the lifecycle sees it."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    spec: GenerationJobSpec
    status: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any], config: OperatorConfig | None = None) -> Job:
        """The job with the platform's defaults (`config`) under its spec; raises InvalidSpec when it cannot run."""
        meta, config = body["metadata"], config or OperatorConfig()
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=meta.get("generation"),
            spec=parse_spec(with_platform_defaults(body.get("spec") or {}, config), policy=config.policy),
            status=body.get("status") or {},
            labels=meta.get("labels") or {},
        )

    @property
    def phase(self) -> str | None:
        return self.status.get("phase")

    @property
    def queue_name(self) -> str:
        """The Kueue LocalQueue the gang waits in ("" = none): the job's label, else spec.scheduling.queueName."""
        return self.labels.get(KUEUE_QUEUE_LABEL) or self.spec.scheduling.queue_name

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
    create_workload: bool = False  # the queued job's Kueue Workload
    requeue_workload: bool = False  # an evicted gang is gone: give the quota back and queue again


WAIT = Decision()


def decide(job: Job, pods: Iterable[PodView], now: datetime.datetime, queue: QueueView | None = None) -> Decision:
    """The next step for an unfinished job (new: no status yet, Pending, Running, Restarting or Suspended);
    ``queue``: its Workload when the job names a queue."""
    pods = tuple(pods)
    owned = tuple(p for p in pods if p.owner_uid == job.uid)
    if job.phase is None:
        return _start(job, now)
    if job.spec.run_policy.suspend:
        return _suspend(job, owned)
    if job.phase == st.SUSPENDED:
        return _resume(now)
    return (
        _queue_gate(job, owned, queue)
        or _past_active_deadline(job, owned, now)
        or _stuck_before_running(job, owned, now)
        or _rank_lost(job, owned, now)
        or _pending_cause(job, owned)
        or _unhealthy(job, owned, now)
        or _advance_gang(job, pods, owned, now)
    )


def reject_invalid(
    uid: str, pods: Iterable[PodView], message: str, now: datetime.datetime, reason: str = st.INVALID_SPEC
) -> Decision:
    """A job that cannot run: its spec is invalid (InvalidSpec), or the apiserver refused an object it needs
    (CreateRefused). Failed with ``message``, its unfinished pods deleted."""
    unfinished = tuple(p for p in pods if p.owner_uid == uid and p.phase in (PENDING, RUNNING) and not p.deleting)
    return Decision(
        st.Transition(st.FAILED, st.FAILED, reason, message),
        {"completionTime": st.timestamp(now)},
        delete_pods=unfinished,
    )


def seconds_until_expiry(status: Mapping[str, Any], ttl_seconds: int, now: datetime.datetime) -> float:
    """How long a finished job has left before ttlSecondsAfterFinished deletes it (<= 0: now)."""
    finished = parse_time(status.get("completionTime")) or now
    return (finished + datetime.timedelta(seconds=ttl_seconds) - now).total_seconds()


# --- the rules, in the order decide() applies them ------------------------------------------------


def _start(job: Job, now: datetime.datetime) -> Decision:
    """A job without a status: its initial status and, unless suspended or queued (a queued gang waits for
    Kueue's admission), every pod of attempt 0. A restarted operator repeats this for a job whose first status
    never landed; the creations are idempotent."""
    spec = job.spec
    suspended = spec.run_policy.suspend
    message = (
        f"{spec.parallelism.pods} worker pods for {len(spec.prompt_list)} prompts, world size "
        f"{spec.parallelism.world_size}" + (" (suspended)" if suspended else "")
    )
    status = st.initial_status(
        prompts=len(spec.prompt_list),
        steps=spec.generation.steps,
        world_size=spec.parallelism.world_size,
        suspended=suspended,
        now=now,
        generation=job.generation,
    )
    return Decision(
        st.Transition(st.PENDING, st.CREATED, st.JOB_CREATED, message),
        status,
        create_ranks=() if suspended or job.queue_name else tuple(range(spec.parallelism.pods)),
    )


def _suspend(job: Job, owned: Sequence[PodView]) -> Decision:
    alive = tuple(p for p in owned if not p.deleting)
    if job.phase == st.SUSPENDED:
        return Decision(delete_pods=alive) if alive else WAIT
    suspended = st.Transition(st.SUSPENDED, st.SUSPENDED, st.JOB_SUSPENDED, "job suspended: worker pods deleted")
    # As Kubeflow does, suspension resets startTime, so activeDeadlineSeconds counts from the resume.
    return Decision(suspended, {"startTime": None}, delete_pods=alive)


def _resume(now: datetime.datetime) -> Decision:
    resumed = st.Transition(
        st.PENDING, st.SUSPENDED, st.JOB_RESUMED, "job resumed: recreating worker pods", condition_status=False
    )
    return Decision(resumed, {"startTime": st.timestamp(now)})


def _queue_gate(job: Job, owned: Sequence[PodView], queue: QueueView | None) -> Decision | None:
    """A queued job runs only while Kueue admits its Workload; None lets the other rules decide."""
    if queue is None or queue.finished:
        return None
    alive = tuple(p for p in owned if not p.deleting)
    queued = _condition(job, st.QUEUED)
    if not queue.exists:
        waiting = (
            None
            if queued.get("status") == "True"
            else _queued(job, st.WAITING_FOR_ADMISSION, "waiting for the queue to admit the gang")
        )
        return Decision(waiting, create_workload=True)
    if queue.evicted:  # stop the gang, then give the quota back (not a failure: no restart is counted)
        if alive:
            return Decision(_queued(job, st.EVICTED, f"evicted by the queue: {queue.message}"), delete_pods=alive)
        gone = not any(p.deleting for p in owned)
        return Decision(requeue_workload=True) if gone and queue.reserved else WAIT
    if not queue.admitted:
        message = queue.message or "waiting for the queue to admit the gang"
        # An eviction's reason stays until Kueue admits again; a waiting message is refreshed when Kueue's changes.
        evicted = queued.get("reason") == st.EVICTED
        stale = queued.get("status") != "True" or (not evicted and queued.get("message") != message)
        return Decision(_queued(job, st.WAITING_FOR_ADMISSION, message) if stale else None, delete_pods=alive)
    if queued.get("status") == "True":
        return Decision(
            st.Transition(
                job.phase or st.PENDING,
                st.QUEUED,
                st.ADMITTED,
                "admitted by the queue: creating the gang",
                condition_status=False,
            )
        )
    return None


def _queued(job: Job, reason: str, message: str) -> st.Transition:
    return st.Transition(st.PENDING, st.QUEUED, reason, message)


def _past_active_deadline(job: Job, owned: Sequence[PodView], now: datetime.datetime) -> Decision | None:
    deadline = job.spec.run_policy.active_deadline_seconds
    started = parse_time(job.status.get("startTime"))
    if deadline is None or started is None or (now - started).total_seconds() < deadline:
        return None
    return _finish(
        job,
        owned,
        now,
        st.FAILED,
        st.DEADLINE_EXCEEDED,
        f"job was active longer than activeDeadlineSeconds ({deadline}s)",
    )


def _stuck_before_running(job: Job, owned: Sequence[PodView], now: datetime.datetime) -> Decision | None:
    limit = job.spec.run_policy.pre_running_deadline_seconds
    for pod in _current(job, owned):
        if pod.phase == PENDING and not pod.deleting and pod.created and (now - pod.created).total_seconds() >= limit:
            detail = f": {pod.waiting_message}" if pod.waiting_message else ""
            return _finish(
                job,
                owned,
                now,
                st.FAILED,
                pod.waiting_reason or st.PRE_RUNNING_DEADLINE_EXCEEDED,
                f"pod {pod.name} did not start within preRunningDeadlineSeconds ({limit}s){detail}",
            )
    return None


def _rank_lost(job: Job, owned: Sequence[PodView], now: datetime.datetime) -> Decision | None:
    """A failed rank ends the attempt (and the job, on invalid input); so does a rank deleted or gone while the
    gang was running. The failure quoted is the root cause's (rootcause.py)."""
    current = _current(job, owned)
    failed = rootcause.in_quoting_order((p for p in current if p.phase == FAILED), now)
    invalid = next((p for p in failed if p.failed_permanently), None)
    if invalid:
        return _finish(
            job, current, now, st.FAILED, st.INVALID_INPUT, f"{invalid.failure()} (invalid input: not retried)"
        )
    if rootcause.awaiting_root_cause(current, now):
        return WAIT
    if failed and failed[0].exit_code == EXIT_REPORT_LOST:
        lost = "every output is stored, the next attempt reports them"
        return _restart_or_fail(job, current, now, failed[0].failure(), counted=False, uncounted_because=lost)
    if failed:
        action = (
            job.spec.run_policy.pod_failure_policy.action(failed[0].exit_code, dict(failed[0].conditions))
            if (job.spec.run_policy.pod_failure_policy)
            else None
        )
        if action == FAIL_JOB:
            return _finish(
                job,
                current,
                now,
                st.FAILED,
                st.POD_FAILURE_POLICY,
                f"{failed[0].failure()} (podFailurePolicy: FailJob)",
            )
        return _restart_or_fail(job, current, now, failed[0].failure(), counted=action != IGNORE)
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


def _restart_or_fail(
    job: Job,
    current: Sequence[PodView],
    now: datetime.datetime,
    reason: str,
    counted: bool = True,
    restart_reason: str = st.RANK_FAILED,
    uncounted_because: str = "podFailurePolicy Ignore",
) -> Decision:
    """Restart the gang, or fail once backoffLimit counted restarts are spent, quoting the first root cause
    (a later attempt often fails of a symptom: a port still bound, a peer gone)."""
    limit, ignored = job.spec.run_policy.backoff_limit, int(job.status.get("ignoredRestarts") or 0)
    first = job.status.get("firstFailure") or reason
    if counted and job.attempt - ignored >= limit:
        cause = reason if first == reason else f"{first} (first failure; last: {reason})"
        return _finish(
            job,
            current,
            now,
            st.FAILED,
            st.BACKOFF_LIMIT_EXCEEDED,
            f"{cause} (backoffLimit {limit} reached after {job.attempt} restarts)",
        )
    note = "" if counted else f", not counted: {uncounted_because}"
    restarting = st.Transition(
        st.RESTARTING,
        st.RESTARTING,
        restart_reason,
        f"{reason}; restarting the gang (restart {job.attempt + 1 - ignored - (not counted)} of {limit}{note})",
    )
    status: dict[str, Any] = {"restarts": job.attempt + 1}
    if not job.status.get("firstFailure"):
        status["firstFailure"] = reason
    if not counted:
        status["ignoredRestarts"] = ignored + 1
    return Decision(restarting, status, delete_pods=tuple(p for p in current if not p.deleting))


def _pending_cause(job: Job, owned: Sequence[PodView]) -> Decision | None:
    """The first current pod waiting for a fixable cause becomes condition PodsPending (once per new cause);
    preRunningDeadlineSeconds still ends the wait."""
    waiting = next(
        (
            p
            for p in sorted(_current(job, owned), key=lambda p: p.rank)
            if p.phase == PENDING and not p.deleting and p.waiting_reason in PENDING_CAUSES
        ),
        None,
    )
    if waiting is None:
        return None
    message = f"pod {waiting.name}: {waiting.waiting_message or waiting.waiting_reason}"
    known = _condition(job, st.PODS_PENDING)
    if known.get("status") == "True" and known.get("message") == message:
        return None
    return Decision(st.Transition(job.phase or st.PENDING, st.PODS_PENDING, waiting.waiting_reason, message))


def _unhealthy(job: Job, owned: Sequence[PodView], now: datetime.datetime) -> Decision | None:
    """A gang that stopped working without a failed rank (health.py) is restarted, counted, with the finding's
    reason (Stalled, NodeLost). Pods on a lost node already being deleted are deleted again: gang.delete_pod
    forces them, since no kubelet will confirm, and the next attempt needs their names."""
    stranded = tuple(p for p in owned if p.deleting and health.node_lost(p))
    if stranded:
        return Decision(delete_pods=stranded)
    current = _current(job, owned)
    finding = health.lost_node(current) if job.phase == st.RUNNING else None
    finding = finding or health.stall(job, current, now)
    if finding is None:
        return None
    return _restart_or_fail(job, current, now, finding.message, restart_reason=finding.reason)


def _condition(job: Job, kind: str) -> Mapping[str, Any]:
    return next((c for c in job.status.get("conditions") or [] if c.get("type") == kind), {})


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
        return WAIT if _restart_backoff_left(job, now) > 0 else Decision(create_ranks=missing)
    if any(p.deleting for p in current.values()):
        return WAIT
    if all(p.phase == SUCCEEDED for p in current.values()):
        return _finish(
            job,
            tuple(current.values()),
            now,
            st.SUCCEEDED,
            st.JOB_SUCCEEDED,
            f"all {len(current)} worker pods succeeded",
        )
    if job.phase != st.RUNNING and all(p.phase in (RUNNING, SUCCEEDED) for p in current.values()):
        return Decision(
            st.Transition(
                st.RUNNING,
                st.RUNNING,
                st.PODS_RUNNING,
                f"all {len(current)} worker pods are running (attempt {job.attempt})",
            )
        )
    return WAIT


def _finish(
    job: Job, pods: Sequence[PodView], now: datetime.datetime, phase: str, reason: str, message: str
) -> Decision:
    """Succeeded or Failed, cleaning pods by runPolicy.cleanPodPolicy (Kubeflow semantics):
    All deletes every pod, Running the unfinished ones (Pending or Running), None keeps them all."""
    policy = job.spec.run_policy.clean_pod_policy
    doomed = tuple(
        p
        for p in pods
        if not p.deleting and (policy == "All" or (policy == "Running" and p.phase in (PENDING, RUNNING)))
    )
    return Decision(
        st.Transition(phase, phase, reason, message),
        {"completionTime": st.timestamp(now)},
        delete_pods=doomed,
        delete_service=policy != "None",
    )


def _restart_backoff_left(job: Job, now: datetime.datetime) -> float:
    """Seconds until a restarted gang's pods may be created: restartBackoffSeconds, doubling with each restart
    (capped), counted from the Restarting condition's transition. A cause that outlasts one attempt (storage or
    the network down for a minute) then does not spend backoffLimit in seconds."""
    base = job.spec.run_policy.restart_backoff_seconds
    restarting = next((c for c in job.status.get("conditions") or [] if c.get("type") == st.RESTARTING), None)
    since = parse_time(restarting.get("lastTransitionTime")) if restarting else None
    if job.attempt == 0 or not base or since is None:
        return 0.0
    backoff = min(base * 2 ** (job.attempt - 1), MAX_RESTART_BACKOFF_SECONDS)
    return backoff - (now - since).total_seconds()


def _current(job: Job, owned: Iterable[PodView]) -> tuple[PodView, ...]:
    return tuple(p for p in owned if p.attempt == job.attempt)
