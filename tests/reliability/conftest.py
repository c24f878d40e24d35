"""The reliability tier (issue 14) runs on the e2e tier's hermetic cluster: the same fixtures (``cluster``,
``operator_process``, ``k8s``, ``namespace``, ``s3``), taken from tests/e2e/conftest.py rather than copied.

It is slower than e2e (faults, many jobs, property-based specs), so it runs only when asked for by path
(``make reliability``, ``pytest tests/reliability/...``), never as part of a bare ``pytest``; each test bounds
its own waiting so the tier stays within CI's budget.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch import Batch

TIER = Path(__file__).resolve().parent
_E2E_CONFTEST = Path(__file__).resolve().parents[1] / "e2e" / "conftest.py"
_spec = importlib.util.spec_from_file_location("chitu_e2e_fixtures", _E2E_CONFTEST)
_e2e = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _e2e  # its dataclasses look their module up there
_spec.loader.exec_module(_e2e)

cluster = _e2e.cluster
operator_process = _e2e.operator_process
k8s = _e2e.k8s
namespace = _e2e.namespace
s3 = _e2e.s3
pytest_runtest_makereport = _e2e.pytest_runtest_makereport


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Collect this tier only when a command-line path points into it."""
    asked = any(Path(arg.split("::")[0]).resolve().is_relative_to(TIER) for arg in config.args)
    return None if asked else True


@pytest.fixture
def batch(k8s, operator_process, namespace, s3, tmp_path) -> Batch:
    """Fast-worker jobs in the test's namespace, writing to the test's bucket (batch.py)."""
    return Batch(k8s, operator_process, namespace, s3.name, tmp_path / "runs.txt")


@pytest.fixture(scope="session")
def reliability_report() -> Iterator[list]:
    """Outcomes of the fault and load tests (batch.Outcome), written as JSON at the end of the session to
    $CHITU_RELIABILITY_REPORT (make reliability: bench/results/reliability.json). A session that ran some of the
    tests replaces their faults' entries and keeps the others'."""
    outcomes: list = []
    yield outcomes
    target = os.environ.get("CHITU_RELIABILITY_REPORT")
    if target and outcomes:
        fresh = [dataclasses.asdict(outcome) for outcome in outcomes]
        kept = json.loads(Path(target).read_text())["faults"] if Path(target).exists() else []
        entries = [e for e in kept if e["fault"] not in {f["fault"] for f in fresh}] + fresh
        totals = {
            key: sum(entry[key] for entry in entries) for key in ("injected", "jobs", "lost", "duplicates", "stuck")
        }
        Path(target).write_text(json.dumps({"faults": entries, "totals": totals}, indent=2) + "\n")
