"""The pod's environment, parsed once (a rank's own variables are chitu_diffusion.parallel.launch's to read).

docs/generationjob.md lists what the operator puts in a worker pod. Outside a cluster (`--job-file`) most are
absent and the spec supplies the topology instead (config.build_topology). An empty value counts as unset,
because a pod spec renders an absent optional field (say output.endpoint) as "".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chitu_api.generationjob import error_message
from chitu_worker.failures import InvalidInput

DEFAULT_MODEL_CACHE = Path.home() / ".cache" / "chitu" / "models"


class PodEnv(BaseModel):
    """What the operator's pod spec sets; fields are aliased to the variable names, so errors name those."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    job_name: str | None = Field(None, alias="CHITU_JOB_NAME")
    job_namespace: str | None = Field(None, alias="CHITU_JOB_NAMESPACE")
    job_uid: str | None = Field(None, alias="CHITU_JOB_UID")
    restart_attempt: int = Field(0, ge=0, alias="CHITU_RESTART_ATTEMPT")
    master_addr: str | None = Field(None, alias="MASTER_ADDR")
    master_port: int | None = Field(None, gt=0, lt=65536, alias="MASTER_PORT")
    nnodes: int | None = Field(None, ge=1, alias="NNODES")
    node_rank: int | None = Field(None, ge=0, alias="NODE_RANK")
    nproc_per_node: int | None = Field(None, ge=1, alias="NPROC_PER_NODE")
    world_size: int | None = Field(None, ge=1, alias="WORLD_SIZE")
    s3_endpoint: str | None = Field(None, alias="CHITU_S3_ENDPOINT")
    region: str | None = Field(None, alias="AWS_DEFAULT_REGION")
    model_cache: Path = Field(DEFAULT_MODEL_CACHE, alias="CHITU_MODEL_CACHE")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> PodEnv:
        try:
            return cls.model_validate({name: value for name, value in environ.items() if value != ""})
        except ValidationError as err:
            first = err.errors()[0]
            raise InvalidInput(".".join(map(str, first["loc"])), error_message(first)) from None
