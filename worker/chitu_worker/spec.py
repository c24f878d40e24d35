"""The GenerationJob document as the worker reads it: a manifest file or the API object -> typed `JobSpec`.

The models mirror docs/generationjob.md and crds/generationjob.yaml (camelCase on the wire, the CRD's defaults).
They check shapes and types only: the values' rules (multiples of 16, 4k+1 frames, known strategies, ...) are
chitu_diffusion's, applied when config.py builds the engine requests. Sections only the operator reads
(worker, runPolicy, scheduling, the model volume) are ignored; a typo inside the sections the worker maps is an
error, because a local `--job-file` run has no apiserver schema to catch it.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from chitu_worker.failures import InvalidInput, validation_message
from chitu_worker.storage import split_uri


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")


class ModelSpec(_Spec):
    model_config = ConfigDict(extra="ignore")  # volume and mountPath are the operator's business

    uri: str = Field(min_length=1)


class GenerationSpec(_Spec):
    steps: int = 50
    guidance_scale: float = 5.0
    height: int = 480
    width: int = 832
    frames: int = 81
    fps: int = 16
    seed: int | None = None


class FlexCacheSpec(_Spec):
    strategy: str = "none"
    cache_ratio: float = 0.5
    warmup: int = 1
    cooldown: int = 1


class ParallelismSpec(_Spec):
    cfg: int = Field(1, ge=1, le=2, description="CFG degree: the two guidance branches on 1 or 2 ranks")
    cp_size: int = Field(1, ge=1)
    up_limit: int = Field(8, ge=1)
    gpus_per_pod: int = Field(1, ge=0)

    @property
    def world_size(self) -> int:
        return self.cfg * self.cp_size


class EngineSpec(_Spec):
    dtype: str = "auto"
    compile: bool = False


class OutputSpec(_Spec):
    model_config = ConfigDict(extra="ignore")  # credentialsSecretRef reaches the pod as AWS_* variables

    uri: str
    endpoint: str | None = None
    region: str | None = None

    @field_validator("uri")
    @classmethod
    def _s3_prefix(cls, value: str) -> str:
        try:
            split_uri(value)
        except ValueError:
            raise ValueError(f"must look like s3://bucket/prefix, got {value!r}") from None
        return value


class JobSpec(_Spec):
    model_config = ConfigDict(extra="ignore")  # worker, runPolicy, scheduling: the operator's business

    model: ModelSpec
    prompts: list[str] | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    generation: GenerationSpec = GenerationSpec()
    flex_cache: FlexCacheSpec = FlexCacheSpec()
    parallelism: ParallelismSpec = ParallelismSpec()
    engine: EngineSpec = EngineSpec()
    output: OutputSpec


def parse_spec(spec: object) -> JobSpec:
    if not isinstance(spec, dict):
        raise InvalidInput("spec", "must be a mapping")
    try:
        return JobSpec.model_validate(spec)
    except ValidationError as err:
        first = err.errors()[0]
        raise InvalidInput(".".join(["spec", *map(str, first["loc"])]), validation_message(first)) from None


def read_job_file(path: Path) -> dict:
    """A GenerationJob manifest (YAML or JSON) for running without a cluster."""
    try:
        job = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise InvalidInput("--job-file", f"cannot read {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise InvalidInput("--job-file", f"{path} is not YAML or JSON: {' '.join(str(err).split())}") from None
    if not isinstance(job, dict):
        raise InvalidInput("--job-file", f"{path} must hold one GenerationJob mapping")
    return job
