"""kopf handlers, one per reaction; each reads top to bottom and delegates the thinking.

- ``worker_pods`` (index): every worker pod's PodView by (namespace, job name), fed by the pod watch.
- ``reconcile`` (timer, from creation until the job finishes): decide(job, pods, now), carry it out,
  record it. It runs on kopf's event loop, so the many ticks with nothing to do cost no thread; only a
  decision's cluster I/O goes to a thread (with 200 jobs, ticks queued behind the threads that wait on the
  apiserver for other jobs' creates). A new job (no status yet) gets its worker identity, Service and pods
  and its initial status the same way. The timer is also how a restarted operator resumes its jobs: kopf
  respawns it for every unfinished job, and the decision is derived from the cluster (deterministic pod
  names, the index, the status), so nothing is duplicated and no job is left without a status.
- ``expire_finished`` (timer, finished jobs with ttlSecondsAfterFinished): first fires when the TTL
  runs out, then deletes the job; the garbage collector removes its pods and Service.

kopf's finalizer sits on a job only while one of the timers serves it (kopf needs it to stop them
cleanly); deletion then cascades through ownerReferences and the real garbage collector. kopf adds it in the
cycle that starts the timer, with a JSON patch conditioned on the job's resourceVersion: the reconcile writes
nothing before the finalizer is seen, so its status patch cannot make kopf's fail (422) and be redone.

A tick whose previous writes (status patch, pods created or deleted) have not come back through the watches
yet waits (expectations.py): deciding on the stale view would repeat them (409s, 404s).

There is deliberately no on.create/on.update handler: kopf keeps state for those on the object (a copy of the
whole spec in a `last-handled-configuration` annotation, handler progress in others), which a spec of more
than 256 KiB pushes past the apiserver's annotation limit (every patch then fails with 422), and which an
operator killed between kopf's writes can leave claiming a creation that never happened. Timers keep no
state on the object; everything is decided level-based from the job and its pods.

A create the apiserver refuses (403 Forbidden, 422 Invalid: a PodSecurity violation, a missing
PriorityClass) cannot succeed by retrying: the job fails with the apiserver's message (reason CreateRefused).
Other API errors are retried with exponential backoff, logged as one line per retry (no traceback).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from chitu_api.generationjob import InvalidSpec
from chitu_api.names import (
    FINALIZER,
    GROUP,
    JOB_NAME_LABEL,
    OPERATOR_PREFIX,
    PLURAL,
    ROLE_LABEL,
    VERSION,
    WORKER_ROLE,
    pod_name,
)

from . import gang, lifecycle
from . import status as st
from .lifecycle import Decision, Job
from .pods import PodView

RECONCILE_INTERVAL_SECONDS = 1.0  # how soon a pod's change is acted on; ticks without news cost no API call
TTL_RECHECK_SECONDS = 30.0  # only matters when ttlSecondsAfterFinished is raised after the job finished
RETRY_SECONDS = 5.0  # after an API error (kopf's default is 60 s), doubling on each failure in a row ...
MAX_RETRY_SECONDS = 300.0  # ... up to this
# A decision's cluster I/O runs off kopf's event loop, on threads: gangs to start (several creates each) on
# threads of their own, so that a burst of new jobs does not hold up the reactions of running ones (a finish,
# a restart's deletions) queued behind them.
_STARTS = ThreadPoolExecutor(max_workers=6, thread_name_prefix="start")
_CHANGES = ThreadPoolExecutor(max_workers=6, thread_name_prefix="change")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # The reconcile posts one Event per transition itself (kopf.event): kopf would post each log line too.
    settings.posting.level = logging.CRITICAL
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=OPERATOR_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=OPERATOR_PREFIX, key="last-handled-configuration"
    )
    # Server-side filtering: the operator watches worker pods only, not every pod in the cluster.
    settings.watching.label_selectors["v1", "pods"] = f"{ROLE_LABEL}={WORKER_ROLE}"
    # A job deleted while one of its timers runs (expire_finished deleting it, a reconcile tick) keeps kopf's
    # finalizer until the timer has exited: check again after a second, not kopf's default minute.
    settings.background.cancellation_polling = RECONCILE_INTERVAL_SECONDS


@kopf.on.login()
async def login(memo: kopf.Memo, **kwargs: Any) -> kopf.AiohttpSession | None:
    """--kubeconfig wins; otherwise the pod's service account, then the default kubeconfig. kopf's own session
    opens a connection for every concurrent request (no limit): 200 jobs moving at once opened ~200 TLS
    connections with their buffers (+90 MB RSS). Ours keeps at most ``memo.api_connections``; more requests
    wait for one."""
    if memo.kubeconfig:
        info = kopf.login_with_kubeconfig(**kwargs)
    else:
        info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        return None
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=memo.api_connections, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        auth=info.as_aiohttp_basic_auth(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        priority=info.priority,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
        aiohttp_session=session,
    )


@kopf.index("v1", "pods", labels={ROLE_LABEL: WORKER_ROLE, JOB_NAME_LABEL: kopf.PRESENT})
async def worker_pods(namespace: str, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> dict:
    view = PodView.from_pod(body)
    return {(namespace, labels[JOB_NAME_LABEL]): view} if view else {}


def _is_unfinished(status: Mapping[str, Any], **_: Any) -> bool:
    return status.get("phase") not in st.FINISHED_PHASES


@kopf.timer(GROUP, VERSION, PLURAL, interval=RECONCILE_INTERVAL_SECONDS, backoff=RETRY_SECONDS, when=_is_unfinished)
async def reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    worker_pods: kopf.Index,
    logger: logging.Logger,
    retry: int,
    **_: Any,
) -> None:
    now = _now()
    meta = body.metadata
    pods = tuple(worker_pods.get((meta.namespace, meta.name), ()))
    if body.status.get("phase") in st.FINISHED_PHASES:
        return  # kopf stops this timer once it sees the job finished; a tick in between must not finish it again
    if FINALIZER not in (meta.get("finalizers") or ()):
        return  # kopf's finalizer patch is on its way (see the module docstring)
    if not memo.expectations.satisfied(meta.uid, body.status, pods):
        return  # the previous tick's writes are not back yet
    with memo.metrics.reconcile_seconds.time():
        queue = None
        try:
            job: Job | None = Job.from_body(body, memo.config)
            queue = await _in_thread(_CHANGES, gang.read_queue, memo.kube, job) if job.queue_name else None
            decision = lifecycle.decide(job, pods, now, queue.view if queue else None)
        except InvalidSpec as err:
            job, decision = None, lifecycle.reject_invalid(meta.uid, pods, str(err), now)
        try:
            if gang.touches_cluster(decision, queue):
                starts = decision.create_ranks or decision.create_workload
                await _in_thread(
                    _STARTS if starts else _CHANGES,
                    gang.carry_out,
                    memo.kube,
                    body,
                    job,
                    decision,
                    memo.config.worker,
                    queue,
                )
        except gang.CreateRefused as refused:
            decision = lifecycle.reject_invalid(meta.uid, pods, str(refused), now, reason=st.CREATE_REFUSED)
            await _in_thread(_CHANGES, gang.carry_out, memo.kube, body, None, decision, memo.config.worker)
        except (ApiException, urllib3.exceptions.HTTPError) as err:
            delay = min(RETRY_SECONDS * 2**retry, MAX_RETRY_SECONDS)
            if isinstance(err, ApiException) and err.status == 403:  # quota, or the operator's own RBAC
                _record(body, patch, _create_retried(body.status, err), now, logger)
            raise kopf.TemporaryError(f"{_api_error(err)}; retrying in {delay:.0f} s", delay=delay) from None
        _record(body, patch, decision, now, logger)
        patch.status.update(st.derived_patch(body.status, meta.get("generation")))
    memo.expectations.expect(
        meta.uid,
        status=patch.get("status") or {},
        created=[pod_name(meta.name, rank) for rank in decision.create_ranks] if job else (),
        deleted=[pod.uid for pod in decision.delete_pods],
    )
    _count(memo, (meta.namespace, meta.name), job, decision, now)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def observe_job(
    event: Mapping[str, Any],
    namespace: str,
    name: str,
    uid: str,
    status: Mapping[str, Any],
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Every job event feeds the phase gauge and the prompts counter (metrics.py); a finished or deleted job
    has no more expectations to wait for."""
    deleted = event.get("type") == "DELETED"
    memo.metrics.observe_job((namespace, name), status, deleted=deleted)
    if deleted or status.get("phase") in st.FINISHED_PHASES:
        memo.expectations.forget(uid)


def _count(memo: kopf.Memo, key: tuple[str, str], job: Job | None, decision: Decision, now: datetime.datetime) -> None:
    """Gang restarts decided, and GPU-seconds of a running gang since its previous tick."""
    if decision.transition and decision.transition.phase == st.RESTARTING:
        memo.metrics.gang_restarts.labels(reason=decision.transition.reason).inc()
    previous = memo.gpu_clock.pop(key, None)
    if job is None or job.phase != st.RUNNING:
        return
    since = previous or st.condition_since(job.status, st.RUNNING) or now  # a gang seen first: since it runs
    gpus = job.spec.parallelism.gpus_per_pod * job.spec.parallelism.pods
    memo.metrics.gpu_seconds.inc(gpus * max((now - since).total_seconds(), 0.0))
    if not (decision.transition and decision.transition.phase != st.RUNNING):
        memo.gpu_clock[key] = now


def _expires(status: Mapping[str, Any], spec: Mapping[str, Any], **_: Any) -> bool:
    return status.get("phase") in st.FINISHED_PHASES and _ttl(spec) is not None


def _seconds_left(status: Mapping[str, Any], spec: Mapping[str, Any], **_: Any) -> float:
    return max(0.0, lifecycle.seconds_until_expiry(status, _ttl(spec) or 0, _now()))


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=TTL_RECHECK_SECONDS,
    backoff=RETRY_SECONDS,
    initial_delay=_seconds_left,
    when=_expires,
)
def expire_finished(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    if _seconds_left(body.status, body.spec) > 0:
        return  # the TTL was raised after this timer was scheduled
    logger.info("deleting: ttlSecondsAfterFinished (%ss) passed", _ttl(body.spec))
    gang.delete_job(memo.kube, body.metadata.namespace, body.metadata.name, body.metadata.uid)


def _record(
    body: kopf.Body, patch: kopf.Patch, decision: Decision, now: datetime.datetime, logger: logging.Logger
) -> None:
    """The decision's status patch, and an event plus a log line for a transition."""
    transition = decision.transition
    if transition:
        patch.status.update(st.transition_patch(body.status, transition, now, body.metadata.get("generation")))
        kopf.event(
            body,
            type="Warning" if transition.warning else "Normal",
            reason=transition.reason,
            message=transition.message,
        )
        logger.log(
            logging.WARNING if transition.warning else logging.INFO,
            "%s (%s): %s",
            transition.phase,
            transition.reason,
            transition.message,
        )
    patch.status.update(decision.status)


def _create_retried(status: Mapping[str, Any], err: ApiException) -> Decision:
    """A create the apiserver refused but may accept later (gang.refused_for_good: a quota, the operator's RBAC)
    is retried with backoff, and said on the job once per cause: condition PodsPending with the apiserver's
    message, so `kubectl describe` shows why nothing starts, not only the operator's log."""
    message = f"creating the gang's objects was refused (403), retried with backoff: {gang.api_message(err)}"
    known = next((c for c in status.get("conditions") or [] if c.get("type") == st.PODS_PENDING), {})
    if known.get("status") == "True" and known.get("message") == message:
        return lifecycle.WAIT
    return Decision(st.Transition(status.get("phase") or st.PENDING, st.PODS_PENDING, st.CREATE_RETRIED, message))


async def _in_thread(executor: ThreadPoolExecutor, call: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(call, *args))


def _api_error(err: Exception) -> str:
    """One line for the log: an API error's status and reason, or the connection problem."""
    if isinstance(err, ApiException):
        return f"Kubernetes API error {err.status} {err.reason}: {gang.api_message(err)}"
    return f"Kubernetes API unreachable: {type(err).__name__}"


def _ttl(spec: Mapping[str, Any]) -> int | None:
    return (spec.get("runPolicy") or {}).get("ttlSecondsAfterFinished")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
