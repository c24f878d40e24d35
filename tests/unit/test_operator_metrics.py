"""The operator's Prometheus metrics follow the jobs' status as the watch delivers it."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import generate_latest

from chitu_operator.metrics import OperatorMetrics


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_phase_gauge_counts_each_job_once():
    metrics = OperatorMetrics()
    metrics.observe_job(("ns", "a"), {"phase": "Pending"})
    metrics.observe_job(("ns", "b"), {"phase": "Pending"})
    metrics.observe_job(("ns", "a"), {"phase": "Running"})
    assert value(metrics, "chitu_generationjobs", phase="Pending") == 1
    assert value(metrics, "chitu_generationjobs", phase="Running") == 1
    metrics.observe_job(("ns", "a"), None, deleted=True)
    assert value(metrics, "chitu_generationjobs", phase="Running") == 0


def test_prompts_counter_moves_by_the_progress_reported_after_first_sight():
    metrics = OperatorMetrics()
    metrics.observe_job(("ns", "old"), {"phase": "Running", "progress": {"promptsDone": 5}})  # baseline only
    metrics.observe_job(("ns", "old"), {"phase": "Running", "progress": {"promptsDone": 7}})
    metrics.observe_job(("ns", "old"), {"phase": "Running", "progress": {"promptsDone": 7}})
    assert value(metrics, "chitu_prompts_completed_total") == 2


def test_exposition_names_every_metric():
    metrics = OperatorMetrics()
    metrics.gang_restarts.labels(reason="RankFailed").inc()
    metrics.gpu_seconds.inc(4.0)
    with metrics.reconcile_seconds.time():
        pass
    text = generate_latest(metrics.registry).decode()
    for name in (
        "chitu_generationjobs{",
        "chitu_reconcile_duration_seconds_count",
        "chitu_gang_restarts_total{",
        "chitu_prompts_completed_total",
        "chitu_gpu_seconds_total 4.0",
    ):
        assert name in text


def test_one_port_serves_metrics_and_probes():
    metrics = OperatorMetrics()
    metrics.gpu_seconds.inc(2.5)
    server = metrics.serve(0, "127.0.0.1")
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with urllib.request.urlopen(f"{base}/metrics") as response:
            assert "chitu_gpu_seconds_total 2.5" in response.read().decode()
        for probe in ("/healthz", "/readyz"):
            with urllib.request.urlopen(base + probe) as response:
                assert response.status == 200
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/other")
    finally:
        server.shutdown()
