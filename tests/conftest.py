"""The test tiers, and fixtures shared by every tier: a tiny random Wan2.1 model folder and an engine loaded from it,
built once; SeaweedFS as S3, and the worker's store on it.

A test's tier is its folder: everything under tests/e2e is marked ``e2e`` and everything under tests/distributed
``distributed`` here, so ``-m "not e2e"`` deselects a whole folder and no file can forget its marker.
Imports happen inside the fixtures so tiers that never use them (e2e) do not pay for torch and diffusers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent
TIER_OF_FOLDER = {"e2e": pytest.mark.e2e, "distributed": pytest.mark.distributed}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else None
        if folder in TIER_OF_FOLDER:
            item.add_marker(TIER_OF_FOLDER[folder])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Wan2.1 T2V folder (`chitu make-tiny-model`, seed 0), shared by the session: treat it as
    read-only (copy it, or make your own with `make_tiny_model`, before writing into it)."""
    from chitu_diffusion.models.random_init import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-wan", seed=0)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model_dir):
    """An `Engine` loaded from `tiny_model_dir` on the CPU in fp32, shared by the session. Sharing it is safe
    because the engine removes each request's FlexCache hooks afterwards; a test that changes the engine's
    transformer otherwise must build its own (`Engine(build_random_pipeline())`)."""
    from chitu_diffusion.config import EngineConfig
    from chitu_diffusion.engines.single import Engine

    return Engine.load(tiny_model_dir, EngineConfig.from_overrides(["infer.diffusion.device=cpu"]))


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """A SeaweedFS S3 server on loopback with keys enforced (the dev cluster's own `start_s3`), for tests that
    need S3 without a control plane. Yields its `S3Credentials`."""
    from chitu_devcluster.paths import StateDir
    from chitu_devcluster.processes import ProcessTable
    from chitu_devcluster.s3 import start_s3

    state = StateDir(tmp_path_factory.mktemp("seaweedfs"))
    procs = ProcessTable(state.pids, state.logs)
    try:
        yield start_s3(state, procs)
    finally:
        procs.stop_all()


@pytest.fixture
def bucket(seaweedfs) -> str:
    """A fresh bucket on `seaweedfs`."""
    import uuid

    name = f"t-{uuid.uuid4().hex[:12]}"
    seaweedfs.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_env(seaweedfs, monkeypatch):
    """`seaweedfs`'s variables, as a pod has them, in this process (boto3 reads the keys from the environment)."""
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    return seaweedfs


@pytest.fixture
def store(s3_env):
    """The worker's `S3Store` on `seaweedfs`."""
    from chitu_worker.storage import S3Settings, S3Store

    return S3Store.connect(S3Settings(endpoint=s3_env.endpoint, region=s3_env.region))
