"""Prometheus metrics and health probes of the operator, on one port (``chitu-operator --metrics-port``):
``/metrics`` (Prometheus text), ``/healthz`` (liveness: the process serves) and ``/readyz`` (readiness: it has
started; a follower waiting for the leader Lease is ready too, so a rollout of two replicas never stalls).

- ``chitu_operator_leader``: 1 on the replica holding the leader Lease (the one serving jobs).
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

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
        self.leader = Gauge("chitu_operator_leader", "1 on the replica serving GenerationJobs", registry=self.registry)
        self._phases: dict[tuple[str, str], str] = {}
        self._prompts_done: dict[tuple[str, str], int] = {}
        for phase in PHASES:
            self.jobs.labels(phase=phase).set(0)

    def serve(self, port: int, address: str = "0.0.0.0") -> ThreadingHTTPServer:
        """Serve /metrics, /healthz and /readyz from a daemon thread; port 0 picks a free one."""
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    body, kind = generate_latest(registry), CONTENT_TYPE_LATEST
                elif self.path in ("/healthz", "/readyz"):
                    body, kind = b"ok", "text/plain"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((address, port), Handler)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        return server

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
