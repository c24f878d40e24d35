"""The worker pod's template fields a GPU cluster needs, shared by a job's spec.worker and the platform defaults.

A platform team sets these once (chart values -> the operator's configuration, chitu_api.operatorconfig); a job
overrides them field by field in spec.worker. Every field's empty value means "not set here", so the layering rule
is one function (chitu_operator.podtemplate.layer): a job's value wins, maps merge key by key (the job's key
wins), lists of named items (volumes, mounts, env) merge by name, other lists are appended.

Kubernetes objects (a volume, an affinity, a securityContext) are kept as the user wrote them (free-form in the
CRD, not pruned) and checked by the apiserver when the operator creates the pod; the names and sizes the operator
itself uses are checked here.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from chitu_api import kubernetes_cel
from chitu_api.schema import FREE_FORM, ContractModel, rules

#: A core/v1 object kept as written (a Volume, a VolumeMount, an EnvFromSource, a Toleration, ...).
KubeObject = Annotated[dict[str, Any], Field(json_schema_extra=FREE_FORM)]
#: resource.Quantity as text ("16Gi", "512Mi"); the apiserver parses it when the pod is created.
QuantityText = Annotated[str, Field(max_length=64, pattern=r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")]


class LocalObjectReference(ContractModel):
    """A Secret in the job's namespace, by name."""

    name: str = Field(
        min_length=1,
        max_length=253,
        description="The Secret's name.",
        json_schema_extra=rules(kubernetes_cel.dns1123_subdomain_rule("the Secret's name")),
    )


class PodTemplateFields(ContractModel):
    """What the operator copies into every worker pod besides the container it builds itself."""

    volumes: tuple[KubeObject, ...] = Field(
        (),
        max_length=32,
        description="Extra pod volumes (core/v1 Volume); the names model, scratch and dshm are the operator's.",
    )
    volume_mounts: tuple[KubeObject, ...] = Field(
        (), max_length=32, description="Extra mounts of the worker container (core/v1 VolumeMount)."
    )
    env_from: tuple[KubeObject, ...] = Field(
        (),
        max_length=16,
        description="Secrets/ConfigMaps whose keys become environment variables (core/v1 EnvFromSource).",
    )
    image_pull_secrets: tuple[LocalObjectReference, ...] = Field(
        (), max_length=16, description="Secrets holding registry credentials for the worker image."
    )
    runtime_class_name: str = Field("", max_length=253, description="The pods' RuntimeClass (e.g. nvidia).")
    pod_security_context: KubeObject | None = Field(
        None,
        description="core/v1 PodSecurityContext; default: the "
        "platform's, which passes the restricted Pod Security Standard.",
    )
    security_context: KubeObject | None = Field(
        None,
        description="core/v1 SecurityContext of the worker "
        "container; default: the platform's (non-root, no privilege "
        "escalation, all capabilities dropped, read-only root).",
    )
    shm_size: QuantityText | None = Field(
        None,
        description="Size of the memory-backed /dev/shm mounted on pods "
        "with GPUs (NCCL needs more than the runtime's 64 MiB).",
    )
    scratch_size: QuantityText | None = Field(
        None,
        description="Size limit of the writable scratch emptyDir "
        "(/tmp and the model cache) under a read-only root filesystem.",
    )
