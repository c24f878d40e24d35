"""The pod env contract: what the operator writes is what the worker reads, and the reserved names follow from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from chitu_api.generationjob import CredentialsSecretRef, InvalidSpec, parse_spec
from chitu_api.podenv import RESERVED_ENV, InvalidPodEnv, PodEnv, container_env, writer

REPO = Path(__file__).resolve().parents[2]
VALUES = PodEnv(
    job_name="cats",
    job_namespace="ns",
    job_uid="0123456789abcdef",
    restart_attempt=2,
    master_addr="cats-worker-0.cats-workers.ns.svc",
    master_port=29500,
    nnodes=2,
    node_rank=1,
    nproc_per_node=2,
    world_size=4,
    s3_endpoint="http://s3.local:8333",
    region="eu-west-1",
)
POD = {"metadata.name": "cats-worker-1", "metadata.namespace": "ns"}
SECRET = {"s3-creds": {"id": "AKIA", "key": "shh"}}


def environ_of(env: list[dict]) -> dict[str, str]:
    """The variables a kubelet would give the container for `env` (downward API and Secrets resolved)."""
    resolved = {}
    for var in env:
        source = var.get("valueFrom", {})
        if "fieldRef" in source:
            resolved[var["name"]] = POD[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            resolved[var["name"]] = SECRET[source["secretKeyRef"]["name"]][source["secretKeyRef"]["key"]]
        else:
            resolved[var["name"]] = var["value"]
    return resolved


def test_the_worker_reads_back_what_the_operator_writes():
    credentials = CredentialsSecretRef(name="s3-creds", access_key_id_key="id", secret_access_key_key="key")
    read = PodEnv.from_environ(environ_of(container_env(VALUES, credentials)))
    assert read.model_dump(
        exclude={"pod_name", "pod_namespace", "access_key_id", "secret_access_key"}
    ) == VALUES.model_dump(exclude={"pod_name", "pod_namespace", "access_key_id", "secret_access_key"})
    assert (read.pod_name, read.pod_namespace) == ("cats-worker-1", "ns")
    assert (read.access_key_id.get_secret_value(), read.secret_access_key.get_secret_value()) == ("AKIA", "shh")
    assert "AKIA" not in repr(read)


def test_optional_output_settings_write_nothing_when_absent():
    env = container_env(PodEnv(**VALUES.model_dump(exclude={"s3_endpoint", "region"})), None)
    assert {var["name"] for var in env} == RESERVED_ENV


def test_reserved_names_are_every_variable_the_operator_always_writes():
    always_written = {
        "CHITU_JOB_NAME",
        "CHITU_JOB_NAMESPACE",
        "CHITU_JOB_UID",
        "CHITU_RESTART_ATTEMPT",
        "MASTER_ADDR",
        "MASTER_PORT",
        "NNODES",
        "NODE_RANK",
        "NPROC_PER_NODE",
        "WORLD_SIZE",
        "POD_NAME",
        "POD_NAMESPACE",
    }
    assert always_written == RESERVED_ENV
    knobs = {field.alias for field in PodEnv.model_fields.values() if writer(field) is None}
    assert knobs == {"CHITU_MODEL_CACHE"}


@pytest.mark.parametrize("name", sorted(RESERVED_ENV))
def test_spec_env_may_not_set_a_reserved_name(name):
    spec = {
        "model": {"uri": "/m"},
        "prompt": "a",
        "output": {"uri": "s3://videos"},
        "worker": {"image": "w", "env": [{"name": name, "value": "1"}]},
    }
    with pytest.raises(InvalidSpec, match=rf"^spec\.worker\.env\[0\]\.name: {name} is set by the operator"):
        parse_spec(spec)


def test_a_bad_variable_is_named():
    with pytest.raises(InvalidPodEnv, match=r"^NODE_RANK: Input should be greater than or equal to 0"):
        PodEnv.from_environ({"NODE_RANK": "-1"})
    assert PodEnv.from_environ({"CHITU_S3_ENDPOINT": "", "NNODES": ""}).nnodes is None  # empty = unset


def test_every_variable_is_described_and_documented():
    docs = (REPO / "docs" / "generationjob.md").read_text()
    for field in PodEnv.model_fields.values():
        assert field.description and f"`{field.alias}`" in docs, field.alias
