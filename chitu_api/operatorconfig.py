"""The operator's configuration: the defaults a platform team sets once for every GenerationJob.

The chart renders its values (`jobDefaults`) into a ConfigMap, handed to the operator as the YAML text of
$CHITU_OPERATOR_CONFIG (or `chitu-operator --config FILE`). Two kinds of defaults:
- spec defaults (`with_platform_defaults`): the worker image and resources, the model volume, the S3 output
  (uri, endpoint, region, credentials Secret) fill in the fields a job's spec leaves out, so a manifest holds
  only what its author decides; a job's own value wins field by field (a map is replaced whole);
- pod-template defaults, layered under a job's spec.worker / spec.scheduling (chitu_operator.podtemplate.layer).
"" and {} in the chart's values mean "not set". Without a configuration, the built-in defaults below apply:
worker pods that pass the `restricted` Pod Security Standard (non-root, no privilege escalation, all capabilities
dropped, seccomp RuntimeDefault, read-only root filesystem with a writable scratch emptyDir) and a memory-backed
/dev/shm on every pod with GPUs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, Field, ValidationError

from chitu_api.corev1 import ResourceRequirements
from chitu_api.podpolicy import PodPolicy
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


def _unset_if_empty(value: Any) -> Any:
    return None if value in ("", {}, None) else value


#: A default the chart's values may leave empty ("" or {}): then the platform sets nothing there.
Unset = BeforeValidator(_unset_if_empty)


class WorkerDefaults(PodTemplateFields):
    """Defaults of every worker pod; a job's spec.worker / spec.scheduling value wins over each."""

    image: Annotated[str | None, Unset] = Field(
        None,
        max_length=1024,
        description="spec.worker.image of jobs that name none (the chart: ghcr.io/chitu/worker:<appVersion>).",
    )
    resources: Annotated[ResourceRequirements | None, Unset] = Field(
        None, description="spec.worker.resources of jobs that set none."
    )

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


class ModelDefaults(ContractModel):
    """Defaults of spec.model: the volume holding the platform's models (mounted at spec.model.mountPath)."""

    volume: Annotated[KubeObject | None, Unset] = Field(
        None, description="A core/v1 volume source, e.g. {persistentVolumeClaim: {claimName: models}}."
    )


class SecretName(ContractModel):
    name: Annotated[str | None, Unset] = Field(None, max_length=253)


class OutputDefaults(ContractModel):
    """Defaults of spec.output: the platform's object store."""

    uri: Annotated[str | None, Unset] = Field(
        None, pattern=r"^s3://[^/]", max_length=1024, description="Output prefix s3://bucket/prefix."
    )
    endpoint: Annotated[str | None, Unset] = Field(
        None, pattern=r"^https?://", max_length=1024, description="S3 API endpoint (none: AWS)."
    )
    region: Annotated[str | None, Unset] = Field(None, max_length=64, description="S3 region.")
    credentials_secret_ref: Annotated[SecretName | None, Unset] = Field(
        None, description="The Secret, in each job's namespace, holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
    )


class OperatorConfig(ContractModel):
    """The whole file; every section is optional."""

    worker: WorkerDefaults = Field(default_factory=WorkerDefaults, description="Worker pod defaults.")
    model: ModelDefaults = Field(default_factory=ModelDefaults, description="spec.model defaults.")
    output: OutputDefaults = Field(default_factory=OutputDefaults, description="spec.output defaults.")
    policy: PodPolicy = Field(
        default_factory=PodPolicy,
        description="What a job's pods may carry (volume types, "
        "hostPath, the Secrets a job may name): chitu_api.podpolicy.",
    )

    def spec_defaults(self) -> dict[str, dict[str, Any]]:
        """The spec fields this configuration fills in, by section, as a spec writes them (camelCase)."""
        worker = self.worker.model_dump(by_alias=True, include={"image", "resources"}, exclude_none=True)
        output = self.output.model_dump(by_alias=True, exclude_none=True)
        if not (output.get("credentialsSecretRef") or {}).get("name"):
            output.pop("credentialsSecretRef", None)
        sections = {
            "worker": worker,
            "model": self.model.model_dump(by_alias=True, exclude_none=True),
            "output": output,
        }
        return {section: fields for section, fields in sections.items() if fields}


def with_platform_defaults(spec: Mapping[str, Any], config: OperatorConfig) -> dict[str, Any]:
    """`spec` (as the API holds it) with the platform's spec defaults under it: a field the job sets wins."""
    merged = dict(spec)
    for section, defaults in config.spec_defaults().items():
        merged[section] = {**defaults, **(spec.get(section) or {})}
    return merged


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
