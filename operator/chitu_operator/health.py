"""A gang that is alive on paper but not working: a stalled gang, or ranks on a lost node.

Neither shows up as a failed pod. A rank that hangs (a deadlocked collective, a stuck read) keeps its pod
Running for ever; a node that stops renewing its Lease leaves its pods Running in the API while nobody runs
them. Both are found here from what the lifecycle already has (the job's status and the pod views), as pure
functions, so a restarted operator finds the same; the lifecycle turns a finding into a counted gang restart.

- Stall: rank 0 reports progress for the whole gang (every rank takes part in every prompt, so one hung rank
  stops rank 0 too) and stamps ``status.progress.lastUpdateTime`` on each report. A Running gang silent for
  ``runPolicy.stallTimeoutSeconds``, counted from the later of that stamp and the attempt's Running
  transition, is stalled. The stamp is the worker's clock, as a kubelet's Lease renewTime is the node's.
- Lost node: kube-controller-manager's node-lifecycle controller marks a node Unknown once its Lease is older
  than ``--node-monitor-grace-period`` and then sets Ready=False on every pod bound to it. Worker pods have no
  readiness probe, so nothing else makes a Running worker unready. Such a pod's deletion is never confirmed
  (no kubelet), and the next attempt reuses its name: it is deleted with grace 0 (gang.delete_pod), as
  ``kubectl delete --force`` would, so the gang can start again on a node that works.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chitu_api.names import pod_name

from . import status as st
from .pods import RUNNING, PodView, parse_time

if TYPE_CHECKING:
    from .lifecycle import Job

STALLED = "Stalled"  # reason of the Restarting condition and event
NODE_LOST = "NodeLost"


@dataclass(frozen=True)
class Finding:
    """Why a gang that has not failed must be restarted: a condition reason and a message for people."""

    reason: str
    message: str


def node_lost(pod: PodView) -> bool:
    """A Running worker pod the node-lifecycle controller marked not Ready: its node stopped reporting."""
    return pod.phase == RUNNING and ("Ready", "False") in pod.conditions


def lost_node(current: Iterable[PodView]) -> Finding | None:
    """The lowest rank of the attempt whose node was lost, if any."""
    lost = sorted((p for p in current if node_lost(p) and not p.deleting), key=lambda p: p.rank)
    if not lost:
        return None
    pod = lost[0]
    node = f"node {pod.node_name}" if pod.node_name else "its node"
    return Finding(
        NODE_LOST,
        f"rank {pod.rank} (pod {pod.name}) was lost with {node}: the node stopped reporting "
        "(kube-controller-manager marked the pod not Ready)",
    )


def stall(job: Job, current: Iterable[PodView], now: datetime.datetime) -> Finding | None:
    """A Running gang whose rank 0 has reported nothing for stallTimeoutSeconds while its pod runs (a rank 0 that
    finished has nothing more to report: its gang is done, however long ago, say while the operator was down)."""
    reporter = next((p for p in current if p.rank == 0), None)
    if job.phase != st.RUNNING or reporter is None or reporter.phase != RUNNING or reporter.deleting:
        return None
    limit = job.spec.run_policy.stall_timeout_seconds
    progress = job.status.get("progress") or {}
    reported = parse_time(progress.get("lastUpdateTime"))
    running = st.condition_since(job.status, st.RUNNING)
    since = max((t for t in (reported, running) if t is not None), default=None)
    if since is None:
        return None
    silent = (now - since).total_seconds()
    if silent < limit:
        return None
    where = (
        f"at step {progress.get('currentStep', 0)}/{progress.get('totalSteps', '?')} with "
        f"{progress.get('promptsDone', 0)}/{progress.get('promptsTotal', '?')} prompts done"
    )
    return Finding(
        STALLED,
        f"no progress for {silent:.0f} s (stallTimeoutSeconds {limit}): rank 0 (pod {pod_name(job.name, 0)}), "
        f"which reports for the whole gang, last reported {where}",
    )
