"""Prometheus metrics of the operator, served at ``/metrics`` (``chitu-operator --metrics-port``).

- ``chitu_generationjobs{phase}``: jobs the operator sees, by phase (from the job watch, so a restarted
  or newly elected operator reports the cluster's state, not its own memory).
- ``chitu_reconcile_duration_seconds``: time of one reconcile tick (decide + carry out + record).
- ``chitu_gang_restarts_total``: gang restarts the operator decided (a failed or lost rank).
- ``chitu_prompts_completed_total``: prompts the workers reported done (status.progress.promptsDone grows).
- ``chitu_gpu_seconds_total``: GPUs held by running gangs x wall time, counted each reconcile tick.

Counters count what this process saw; after a takeover they start at 0 on the new leader, as Prometheus
counters do after a restart (rate() handles it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .status import ACTIVE_PHASES, FINISHED_PHASES

PHASES = tuple(sorted(ACTIVE_PHASES | FINISHED_PHASES))


class OperatorMetrics:
    """One registry per operator process (tests build their own without touching the global one)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.jobs = Gauge("chitu_generationjobs", "GenerationJobs by phase", ["phase"], registry=self.registry)
        self.reconcile_seconds = Histogram(
            "chitu_reconcile_duration_seconds",
            "Duration of one reconcile tick",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.gang_restarts = Counter("chitu_gang_restarts", "Gang restarts decided", ["reason"], registry=self.registry)
        self.prompts_completed = Counter(
            "chitu_prompts_completed", "Prompts reported done by the workers", registry=self.registry
        )
        self.gpu_seconds = Counter("chitu_gpu_seconds", "GPU-seconds held by running gangs", registry=self.registry)
        self._phases: dict[tuple[str, str], str] = {}
        self._prompts_done: dict[tuple[str, str], int] = {}
        for phase in PHASES:
            self.jobs.labels(phase=phase).set(0)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        start_http_server(port, addr=address, registry=self.registry)

    def observe_job(self, key: tuple[str, str], status: Mapping[str, Any] | None, deleted: bool = False) -> None:
        """A job event: keep the phase gauge and the prompts counter in step with its status."""
        if deleted:
            self._phases.pop(key, None)
            self._prompts_done.pop(key, None)
        else:
            status = status or {}
            if status.get("phase"):
                self._phases[key] = status["phase"]
            done = int((status.get("progress") or {}).get("promptsDone") or 0)
            seen = self._prompts_done.get(key)
            if seen is not None and done > seen:
                self.prompts_completed.inc(done - seen)
            if seen is None or done > seen:  # the first sight of a job is its baseline, not new work
                self._prompts_done[key] = done
        counts = dict.fromkeys(PHASES, 0)
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            self.jobs.labels(phase=phase).set(count)
