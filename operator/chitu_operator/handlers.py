"""kopf handlers, one per reaction; each reads top to bottom and delegates the thinking.

- ``worker_pods`` (index): every worker pod's PodView by (namespace, job name), fed by the pod watch.
- ``create_gang`` (on.create): validate, create the worker identity, Service and attempt 0's pods
  (unless suspended), write the initial status. Its status patch also starts the reconcile timer.
- ``reconcile`` (timer, while the job is active): decide(job, pods, now), carry it out, record it.
  The timer is also how a restarted operator resumes its jobs: kopf respawns it for every active
  job, and the decision is derived from the cluster (deterministic pod names, the index, the status),
  so nothing is duplicated.
- ``expire_finished`` (timer, finished jobs with ttlSecondsAfterFinished): first fires when the TTL
  runs out, then deletes the job; the garbage collector removes its pods and Service.

kopf's finalizer sits on a job only while one of the timers serves it (kopf needs it to stop them
cleanly); deletion then cascades through ownerReferences and the real garbage collector.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from chitu_api.generationjob import InvalidSpec
from chitu_api.names import FINALIZER, GROUP, JOB_NAME_LABEL, OPERATOR_PREFIX, PLURAL, ROLE_LABEL, VERSION, WORKER_ROLE

from . import gang, lifecycle
from . import status as st
from .lifecycle import Decision, Job
from .pods import PodView

RECONCILE_INTERVAL_SECONDS = 1.0  # how soon a pod's change is acted on; ticks without news cost no API call
TTL_RECHECK_SECONDS = 30.0  # only matters when ttlSecondsAfterFinished is raised after the job finished
RETRY_SECONDS = 5.0  # after an API error (kopf's default is 60 s)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=OPERATOR_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=OPERATOR_PREFIX, key="last-handled-configuration")
    # Server-side filtering: the operator watches worker pods only, not every pod in the cluster.
    settings.watching.label_selectors["v1", "pods"] = f"{ROLE_LABEL}={WORKER_ROLE}"
    # A job deleted while one of its timers runs (expire_finished deleting it, a reconcile tick) keeps kopf's
    # finalizer until the timer has exited: check again after a second, not kopf's default minute.
    settings.background.cancellation_polling = RECONCILE_INTERVAL_SECONDS


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """--kubeconfig wins; otherwise the pod's service account, then the default kubeconfig."""
    if memo.kubeconfig:
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.index("v1", "pods", labels={ROLE_LABEL: WORKER_ROLE, JOB_NAME_LABEL: kopf.PRESENT})
def worker_pods(namespace: str, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> dict:
    view = PodView.from_pod(body)
    return {(namespace, labels[JOB_NAME_LABEL]): view} if view else {}


@kopf.on.create(GROUP, VERSION, PLURAL, backoff=RETRY_SECONDS)
def create_gang(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    now = _now()
    try:
        job = Job.from_body(body)
    except InvalidSpec as err:
        _record(body, patch, lifecycle.reject_invalid(body.metadata.uid, (), str(err), now), now, logger)
        raise kopf.PermanentError(str(err)) from err
    suspended = job.spec.run_policy.suspend
    if not suspended:
        gang.ensure_gang(memo.kube, body, job, range(job.spec.parallelism.pods))
    patch.status.update(st.initial_status(
        prompts=len(job.spec.prompt_list), steps=job.spec.generation.steps,
        world_size=job.spec.parallelism.world_size, suspended=suspended, now=now, generation=job.generation))
    message = (f"{job.spec.parallelism.pods} worker pods for {len(job.spec.prompt_list)} prompts, "
               f"world size {job.spec.parallelism.world_size}" + (" (suspended)" if suspended else ""))
    kopf.info(body, reason=st.JOB_CREATED, message=message)
    logger.info("created: %s", message)


def _is_active(status: Mapping[str, Any], **_: Any) -> bool:
    return status.get("phase") in st.ACTIVE_PHASES


@kopf.timer(GROUP, VERSION, PLURAL, interval=RECONCILE_INTERVAL_SECONDS, backoff=RETRY_SECONDS, when=_is_active)
def reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, worker_pods: kopf.Index,
              logger: logging.Logger, **_: Any) -> None:
    now = _now()
    meta = body.metadata
    pods = tuple(worker_pods.get((meta.namespace, meta.name), ()))
    try:
        job: Job | None = Job.from_body(body)
        decision = lifecycle.decide(job, pods, now)
    except InvalidSpec as err:
        job, decision = None, lifecycle.reject_invalid(meta.uid, pods, str(err), now)
    gang.carry_out(memo.kube, body, job, decision)
    _record(body, patch, decision, now, logger)
    patch.status.update(st.derived_patch(body.status, meta.get("generation")))


def _expires(status: Mapping[str, Any], spec: Mapping[str, Any], **_: Any) -> bool:
    return status.get("phase") in st.FINISHED_PHASES and _ttl(spec) is not None


def _seconds_left(status: Mapping[str, Any], spec: Mapping[str, Any], **_: Any) -> float:
    return max(0.0, lifecycle.seconds_until_expiry(status, _ttl(spec) or 0, _now()))


@kopf.timer(GROUP, VERSION, PLURAL, interval=TTL_RECHECK_SECONDS, backoff=RETRY_SECONDS, initial_delay=_seconds_left,
            when=_expires)
def expire_finished(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    if _seconds_left(body.status, body.spec) > 0:
        return  # the TTL was raised after this timer was scheduled
    logger.info("deleting: ttlSecondsAfterFinished (%ss) passed", _ttl(body.spec))
    gang.delete_job(memo.kube, body.metadata.namespace, body.metadata.name, body.metadata.uid)


def _record(body: kopf.Body, patch: kopf.Patch, decision: Decision, now: datetime.datetime,
            logger: logging.Logger) -> None:
    """The decision's status patch, and an event plus a log line for a transition."""
    transition = decision.transition
    if transition:
        patch.status.update(st.transition_patch(body.status, transition, now, body.metadata.get("generation")))
        kopf.event(body, type="Warning" if transition.warning else "Normal", reason=transition.reason,
                   message=transition.message)
        logger.log(logging.WARNING if transition.warning else logging.INFO, "%s (%s): %s",
                   transition.phase, transition.reason, transition.message)
    patch.status.update(decision.status)


def _ttl(spec: Mapping[str, Any]) -> int | None:
    return (spec.get("runPolicy") or {}).get("ttlSecondsAfterFinished")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
