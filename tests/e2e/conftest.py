"""Fixtures of the e2e tier: one hermetic cluster per session, a fresh namespace per test.

``cluster`` runs the real control plane, SeaweedFS and the node agent, but not the operator:
``operator_process`` starts it per test (and stops it after), so a test can also kill and restart
it (``cluster.kill_operator()``, ``cluster.start_operator()``). The first session on a machine
builds the control-plane binaries (minutes, once); later sessions start in a few seconds.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from chitu_devcluster import platform
from chitu_devcluster.cluster import DevCluster, operator_installed
from chitu_operator.gang import KubeClients

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bucket:
    """A fresh bucket and a client holding the right credentials."""

    client: object  # a boto3 S3 client
    name: str


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """On a failure, show the tails of the node agent's and the operator's logs (there is no kubectl logs)."""
    report = yield
    dev = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and report.when == "call" and isinstance(dev, DevCluster):
        for name in ("node-agent", "operator"):
            report.sections.append((f"{name} log (tail; all logs in {dev.state.logs})", dev.procs.log_tail(name, 40)))
    return report


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    state_dir = tmp_path_factory.mktemp("dev-cluster")
    dev = DevCluster.up(state_dir, with_operator=False)
    log.info("dev cluster state (logs, pods) in %s", state_dir)
    try:
        yield dev
    finally:
        dev.down()


@pytest.fixture
def operator_process(cluster: DevCluster) -> Iterator[DevCluster]:
    """The operator running against ``cluster`` for one test; skipped where it is not installed yet."""
    if not operator_installed():
        pytest.skip("chitu-operator is not installed")
    cluster.start_operator()
    try:
        yield cluster
    finally:
        cluster.stop_operator()


@pytest.fixture(scope="session")
def k8s(cluster: DevCluster) -> KubeClients:
    """Admin clients (system:masters) of the session's cluster: the operator's own client bundle."""
    return KubeClients.from_api_client(cluster.api_client())


@pytest.fixture
def namespace(cluster: DevCluster, k8s: KubeClients) -> Iterator[str]:
    """A fresh namespace holding the S3 credentials Secret the dev cluster's platform defaults name (as a platform
    team provisions it in each tenant namespace), deleted with everything in it after the test."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    k8s.core.create_namespace({"metadata": {"name": name}})
    secret = platform.credentials_secret(cluster.s3)
    k8s.core.create_namespaced_secret(name, {**secret, "metadata": {**secret["metadata"], "namespace": name}})
    yield name
    k8s.core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def s3(cluster: DevCluster) -> Iterator[Bucket]:
    s3_client = cluster.s3.client()
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=name)
    yield Bucket(s3_client, name)
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3_client.delete_object(Bucket=name, Key=obj["Key"])
    s3_client.delete_bucket(Bucket=name)
