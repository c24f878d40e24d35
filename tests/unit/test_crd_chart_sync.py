"""The chart's generated files (CRD copy, RBAC rules) match their sources, and the chart stays hardened."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chitu_operator.rbac import build_operator_cluster_role, build_worker_cluster_role

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "chitu"
SCRIPT = REPO / "scripts" / "sync-chart-crds.py"


@pytest.fixture
def sync(tmp_path, monkeypatch):
    """The sync script as a module, pointed at a copy of the sources and the chart."""
    spec = importlib.util.spec_from_file_location("sync_chart_crds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shutil.copytree(REPO / "crds", tmp_path / "crds")
    shutil.copytree(CHART, tmp_path / "charts" / "chitu")
    monkeypatch.setattr(module, "REPO", tmp_path)
    monkeypatch.setattr(module, "CRDS", tmp_path / "crds")
    monkeypatch.setattr(module, "CHART", tmp_path / "charts" / "chitu")
    return module


def test_chart_is_in_sync_with_its_sources():
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_drift_is_detected_and_fixed(sync, tmp_path):
    assert sync.drift() == []
    crd = tmp_path / "crds" / "generationjob.yaml"
    crd.write_text(crd.read_text() + "# changed\n")
    (tmp_path / "charts" / "chitu" / "crds" / "old.yaml").write_text("kind: Old\n")
    (tmp_path / "charts" / "chitu" / "files" / "worker-rules.yaml").unlink()
    assert sync.drift() == ["charts/chitu/crds/generationjob.yaml is outdated",
                            "charts/chitu/files/worker-rules.yaml is missing",
                            "charts/chitu/crds/old.yaml has no source in crds/"]
    sync.write()
    assert sync.drift() == []


def test_rendered_rules_are_the_builders_rules():
    for name, role in (("operator", build_operator_cluster_role()), ("worker", build_worker_cluster_role())):
        assert yaml.safe_load((CHART / "files" / f"{name}-rules.yaml").read_text()) == role["rules"]


def test_templates_include_the_generated_rules_and_the_fixed_worker_role_name():
    operator = (CHART / "templates" / "clusterrole-operator.yaml").read_text()
    worker = (CHART / "templates" / "clusterrole-worker.yaml").read_text()
    assert '.Files.Get "files/operator-rules.yaml"' in operator
    assert '.Files.Get "files/worker-rules.yaml"' in worker and "name: chitu-worker\n" in worker


def test_operator_pod_is_hardened_by_default():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsNonRoot"] is True
    assert values["podSecurityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert values["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                         "capabilities": {"drop": ["ALL"]}}
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert "type: Recreate" in deployment and "replicas: 1" in deployment
    assert "toYaml .Values.securityContext" in deployment and "toYaml .Values.podSecurityContext" in deployment
