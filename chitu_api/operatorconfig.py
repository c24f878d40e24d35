"""The operator's configuration: the defaults a platform team sets once for every GenerationJob.

The chart renders its values into one file (a ConfigMap mounted into the operator, `chitu-operator --config`);
a job's spec overrides each default field by field (chitu_operator.podtemplate.layer). Without a file, the
built-in defaults below apply: worker pods that pass the `restricted` Pod Security Standard (non-root, no
privilege escalation, all capabilities dropped, seccomp RuntimeDefault, read-only root filesystem with a
writable scratch emptyDir) and a memory-backed /dev/shm on every pod with GPUs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError

from chitu_api.podtemplate import KubeObject, PodTemplateFields
from chitu_api.schema import ContractModel, error_message

#: The uid/gid of the worker image's user (worker/Dockerfile), so runAsNonRoot can be checked by the kubelet.
WORKER_UID = 10001
RESTRICTED_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": WORKER_UID,
    "runAsGroup": WORKER_UID,
    "fsGroup": WORKER_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}
#: Where the scratch emptyDir is mounted (subPath = the path's last part): temporary files and the model cache
#: (the worker image's CHITU_MODEL_CACHE lives under /var/cache/chitu).
SCRATCH_MOUNTS: tuple[str, ...] = ("/tmp", "/var/cache/chitu")


class InvalidConfig(ValueError):
    """The operator's configuration file is unusable; the message names the field."""


class WorkerDefaults(PodTemplateFields):
    """Defaults of every worker pod; a job's spec.worker / spec.scheduling value wins over each."""

    pod_security_context: KubeObject | None = Field(
        RESTRICTED_POD_SECURITY, description="Default PodSecurityContext (restricted PSS)."
    )
    security_context: KubeObject | None = Field(
        RESTRICTED_CONTAINER_SECURITY, description="Default container SecurityContext (restricted PSS)."
    )
    shm_size: str | None = Field("8Gi", max_length=64, description="Default /dev/shm size on pods with GPUs.")
    scratch_size: str | None = Field("20Gi", max_length=64, description="Default scratch emptyDir size limit.")
    scratch_mounts: tuple[Annotated[str, Field(pattern=r"^/")], ...] = Field(
        SCRATCH_MOUNTS, max_length=8, description="Writable paths backed by the scratch emptyDir."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels every worker pod requires.")
    tolerations: tuple[KubeObject, ...] = Field((), max_length=32, description="Taints every worker pod tolerates.")
    affinity: KubeObject | None = Field(None, description="Default core/v1 Affinity.")
    priority_class_name: str = Field("", max_length=253, description="Default PriorityClass.")
    scheduler_name: str = Field(
        "",
        max_length=253,
        description="Default scheduler (e.g. volcano, or the coscheduling plugin's scheduler for PodGroup gangs).",
    )
    pod_labels: dict[str, str] = Field(default_factory=dict, description="Labels on every worker pod.")
    pod_annotations: dict[str, str] = Field(default_factory=dict, description="Annotations on every worker pod.")


class OperatorConfig(ContractModel):
    """The whole file; every section is optional."""

    worker: WorkerDefaults = Field(default_factory=WorkerDefaults, description="Worker pod defaults.")


def parse_operator_config(document: Mapping[str, Any] | None) -> OperatorConfig:
    try:
        return OperatorConfig.model_validate(document or {})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidConfig(f"operator config {where}: {error_message(first)}") from err


def load_operator_config(path: Path | str | None) -> OperatorConfig:
    """The configuration in ``path`` (YAML or JSON); the built-in defaults when ``path`` is None."""
    if path is None:
        return OperatorConfig()
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise InvalidConfig(f"operator config {path}: {err}") from err
    if document is not None and not isinstance(document, Mapping):
        raise InvalidConfig(f"operator config {path}: must be a mapping of sections (worker: ...)")
    return parse_operator_config(document)
