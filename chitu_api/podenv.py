"""The worker pod's environment: one model for the operator that writes it and the worker that reads it.

Each field is one variable (aliased to its name, so errors name the variable) and says who writes it:
- `FromOperator()`: written into every worker container; reserved, so spec.worker.env may not set it
  (RESERVED_ENV, which the spec model checks and the CRD rejects at apply).
- `FromOperator(reserved=False)`: written when spec.output asks for it (endpoint, region, credentials); a user
  may instead set it through spec.worker.env.
- no marker: read by the worker, never written by the operator (a knob for spec.worker.env).
The operator's env list is `container_env(PodEnv(...), credentials)`; the worker parses `PodEnv.from_environ()`.
Outside a cluster (`chitu-worker --job-file`) most are absent and the spec supplies the topology instead. An empty
value counts as unset, because a pod spec renders an absent optional field (say output.endpoint) as "".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from chitu_api.schema import error_message

if TYPE_CHECKING:
    from chitu_api.generationjob import CredentialsSecretRef

DEFAULT_MODEL_CACHE = Path.home() / ".cache" / "chitu" / "models"


@dataclass(frozen=True)
class FromOperator:
    """Marks a PodEnv field the operator writes (Annotated metadata), and how it fills the value.

    `field_ref`: from the pod's own object (downward API) instead of a literal value. `secret_key`: from the
    Secret of spec.output.credentialsSecretRef, under the key named by that attribute of CredentialsSecretRef.
    """

    reserved: bool = True
    field_ref: str | None = None
    secret_key: str | None = None


class InvalidPodEnv(ValueError):
    """A variable the worker cannot use: `variable` is its name, the message starts with it."""

    def __init__(self, variable: str, detail: str):
        super().__init__(f"{variable}: {detail}")
        self.variable, self.detail = variable, detail


class PodEnv(BaseModel):
    """The variables of a worker container (docs/generationjob.md lists them)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    job_name: Annotated[str | None, FromOperator()] = Field(
        None, alias="CHITU_JOB_NAME", description="The GenerationJob's name."
    )
    job_namespace: Annotated[str | None, FromOperator()] = Field(
        None, alias="CHITU_JOB_NAMESPACE", description="Its namespace."
    )
    job_uid: Annotated[str | None, FromOperator()] = Field(
        None, alias="CHITU_JOB_UID", description="Its uid (object keys start with its first 8 characters)."
    )
    restart_attempt: Annotated[int, FromOperator()] = Field(
        0, ge=0, alias="CHITU_RESTART_ATTEMPT", description="Gang restarts before this pod (0 on the first attempt)."
    )
    master_addr: Annotated[str | None, FromOperator()] = Field(
        None, alias="MASTER_ADDR", description="Rank 0's DNS name: <job>-worker-0.<job>-workers.<ns>.svc."
    )
    master_port: Annotated[int | None, FromOperator()] = Field(
        None, gt=0, lt=65536, alias="MASTER_PORT", description="The rendezvous port on rank 0."
    )
    nnodes: Annotated[int | None, FromOperator()] = Field(None, ge=1, alias="NNODES", description="Pods in the gang.")
    node_rank: Annotated[int | None, FromOperator()] = Field(
        None, ge=0, alias="NODE_RANK", description="This pod's rank, 0 .. NNODES-1."
    )
    nproc_per_node: Annotated[int | None, FromOperator()] = Field(
        None, ge=1, alias="NPROC_PER_NODE", description="Processes in this pod: max(gpusPerPod, 1)."
    )
    world_size: Annotated[int | None, FromOperator()] = Field(
        None, ge=1, alias="WORLD_SIZE", description="Processes in the gang: cfg x cpSize."
    )
    pod_name: Annotated[str | None, FromOperator(field_ref="metadata.name")] = Field(
        None, alias="POD_NAME", description="This pod's name."
    )
    pod_namespace: Annotated[str | None, FromOperator(field_ref="metadata.namespace")] = Field(
        None, alias="POD_NAMESPACE", description="This pod's namespace."
    )
    access_key_id: Annotated[SecretStr | None, FromOperator(reserved=False, secret_key="access_key_id_key")] = Field(
        None, alias="AWS_ACCESS_KEY_ID", description="S3 access key id, from output.credentialsSecretRef."
    )
    secret_access_key: Annotated[SecretStr | None, FromOperator(reserved=False, secret_key="secret_access_key_key")] = (
        Field(None, alias="AWS_SECRET_ACCESS_KEY", description="S3 secret key, from output.credentialsSecretRef.")
    )
    s3_endpoint: Annotated[str | None, FromOperator(reserved=False)] = Field(
        None, alias="CHITU_S3_ENDPOINT", description="output.endpoint."
    )
    region: Annotated[str | None, FromOperator(reserved=False)] = Field(
        None, alias="AWS_DEFAULT_REGION", description="output.region."
    )
    output_uri: Annotated[str | None, FromOperator(reserved=False)] = Field(
        None,
        alias="CHITU_OUTPUT_URI",
        description="output.uri with the platform defaults applied (the job's spec may name none).",
    )
    model_cache: Path = Field(
        DEFAULT_MODEL_CACHE,
        alias="CHITU_MODEL_CACHE",
        description="Where an s3:// model is copied on the node (default ~/.cache/chitu/models).",
    )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> PodEnv:
        """The variables of `environ`, or InvalidPodEnv naming the first unusable one."""
        try:
            return cls.model_validate({name: value for name, value in environ.items() if value != ""})
        except ValidationError as err:
            first = err.errors()[0]
            raise InvalidPodEnv(".".join(map(str, first["loc"])), error_message(first)) from None


def writer(field: FieldInfo) -> FromOperator | None:
    """How the operator writes a PodEnv field, or None for the worker's own knobs."""
    return next((marker for marker in field.metadata if isinstance(marker, FromOperator)), None)


#: Written by the operator into every worker container: spec.worker.env may not set these.
RESERVED_ENV = frozenset(
    field.alias for field in PodEnv.model_fields.values() if (marker := writer(field)) is not None and marker.reserved
)


def container_env(values: PodEnv, credentials: CredentialsSecretRef | None) -> list[dict[str, Any]]:
    """The operator's part of a worker container's `env`: every operator-written variable that has a value, in
    field order; downward-API variables as fieldRefs, the S3 keys as secretKeyRefs into `credentials`."""
    env: list[dict[str, Any]] = []
    for name, field in PodEnv.model_fields.items():
        marker = writer(field)
        if marker is None:
            continue
        if marker.field_ref is not None:
            env.append({"name": field.alias, "valueFrom": {"fieldRef": {"fieldPath": marker.field_ref}}})
        elif marker.secret_key is not None:
            if credentials is not None:
                key = getattr(credentials, marker.secret_key)
                env.append({"name": field.alias, "valueFrom": {"secretKeyRef": {"name": credentials.name, "key": key}}})
        elif (value := getattr(values, name)) is not None:
            env.append({"name": field.alias, "value": str(value)})
    return env
