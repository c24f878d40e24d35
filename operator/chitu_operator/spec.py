"""The GenerationJob spec as typed values, parsed once from the custom resource.

The CRD's schema and CEL rules reject bad specs at the apiserver; this model is the second line for
what slips past it (an object stored under an older CRD, a spec edited while the operator was down)
and for the checks only the operator can make (env names the operator owns). Defaults equal the
CRD's, so a spec read from an older object behaves like a new one. Every failure is an InvalidSpec
naming the field, which the handlers turn into phase Failed / reason InvalidSpec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from .names import WORKER_IDENTITY

FRAME_STRIDE = 4  # Wan's VAE compresses time 4x: frames = 4k+1
SPATIAL_STRIDE = 16  # 8x VAE x 2x2 patches
# Set by the operator on every worker (manifests.build_worker_env); a user's env may not override them.
RESERVED_ENV = frozenset({
    "CHITU_JOB_NAME", "CHITU_JOB_NAMESPACE", "CHITU_JOB_UID", "CHITU_RESTART_ATTEMPT", "MASTER_ADDR",
    "MASTER_PORT", "NNODES", "NODE_RANK", "NPROC_PER_NODE", "WORLD_SIZE", "POD_NAME", "POD_NAMESPACE",
})


class InvalidSpec(ValueError):
    """A spec the operator cannot run; the message starts with the offending field (spec.x.y)."""


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


class ModelSource(_Spec):
    uri: str
    volume: dict[str, Any] | None = None
    mount_path: str = "/models"

    @model_validator(mode="after")
    def _absolute(self) -> ModelSource:
        if not (self.uri.startswith("/") or self.uri.startswith("s3://")):
            raise ValueError(f"uri must be an absolute path or an s3:// URI, got {self.uri!r}")
        if not self.mount_path.startswith("/"):
            raise ValueError(f"mountPath must be an absolute path, got {self.mount_path!r}")
        return self


class Generation(_Spec):
    steps: int = Field(50, ge=1, le=1000)
    guidance_scale: float = Field(5.0, ge=0, le=50)
    height: int = Field(480, ge=16, le=4096, multiple_of=SPATIAL_STRIDE)
    width: int = Field(832, ge=16, le=4096, multiple_of=SPATIAL_STRIDE)
    frames: int = Field(81, ge=1, le=1001)
    fps: int = Field(16, ge=1, le=120)
    seed: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _frames_4k_plus_1(self) -> Generation:
        if self.frames % FRAME_STRIDE != 1:
            raise ValueError(f"frames must be 4k+1 (1, 5, 9, ..., 81), got {self.frames}")
        return self


class FlexCache(_Spec):
    strategy: Literal["none", "teacache", "pab", "ditango"] = "none"
    cache_ratio: float = Field(0.5, ge=0, le=1)
    warmup: int = Field(1, ge=0, le=1000)
    cooldown: int = Field(1, ge=0, le=1000)


class Parallelism(_Spec):
    cfg: Literal[1, 2] = 1
    cp_size: int = Field(1, ge=1, le=64)
    up_limit: int = Field(8, ge=1, le=64)
    gpus_per_pod: int = Field(1, ge=0, le=16)

    @property
    def world_size(self) -> int:
        """Processes in the gang: one per (guidance branch x context-parallel rank)."""
        return self.cfg * self.cp_size

    @property
    def procs_per_pod(self) -> int:
        """One process per GPU; a CPU-only pod (gpusPerPod 0) runs one process."""
        return max(self.gpus_per_pod, 1)

    @property
    def pods(self) -> int:
        return self.world_size // self.procs_per_pod

    @model_validator(mode="after")
    def _whole_pods(self) -> Parallelism:
        if self.world_size % self.procs_per_pod:
            raise ValueError(f"world size cfg*cpSize = {self.world_size} must be a multiple of "
                             f"gpusPerPod = {self.gpus_per_pod}")
        return self


class Engine(_Spec):
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    compile: bool = False


class WorkerTemplate(_Spec):
    image: str = Field(min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: dict[str, Any] = Field(default_factory=dict)
    env: tuple[dict[str, Any], ...] = ()
    service_account_name: str = WORKER_IDENTITY
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    pod_labels: dict[str, str] = Field(default_factory=dict)
    command: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _no_reserved_env(self) -> WorkerTemplate:
        for index, var in enumerate(self.env):
            if var.get("name") in RESERVED_ENV:
                raise ValueError(f"env[{index}].name: {var['name']} is set by the operator and cannot be overridden")
        return self


class CredentialsSecretRef(_Spec):
    name: str = Field(min_length=1)
    access_key_id_key: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_key: str = "AWS_SECRET_ACCESS_KEY"


class Output(_Spec):
    uri: str
    endpoint: str | None = None
    region: str | None = None
    credentials_secret_ref: CredentialsSecretRef | None = None

    @model_validator(mode="after")
    def _s3(self) -> Output:
        if not self.uri.startswith("s3://") or len(self.uri) <= len("s3://"):
            raise ValueError(f"uri must start with s3:// and name a bucket, got {self.uri!r}")
        return self


class RunPolicy(_Spec):
    backoff_limit: int = Field(3, ge=0, le=100)
    active_deadline_seconds: int | None = Field(None, ge=1)
    pre_running_deadline_seconds: int = Field(600, ge=1)
    ttl_seconds_after_finished: int | None = Field(None, ge=0)
    clean_pod_policy: Literal["None", "Running", "All"] = "Running"
    suspend: bool = False


class Scheduling(_Spec):
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    priority_class_name: str = ""
    queue_name: str = ""


class GenerationJobSpec(_Spec):
    model: ModelSource
    prompt: str | None = None
    prompts: tuple[str, ...] | None = None
    negative_prompt: str = ""
    generation: Generation = Generation()
    flex_cache: FlexCache = FlexCache()
    parallelism: Parallelism = Parallelism()
    engine: Engine = Engine()
    worker: WorkerTemplate
    output: Output
    run_policy: RunPolicy = RunPolicy()
    scheduling: Scheduling = Scheduling()

    @property
    def prompt_list(self) -> tuple[str, ...]:
        return self.prompts if self.prompts is not None else (self.prompt,)

    @model_validator(mode="after")
    def _cross_field(self) -> GenerationJobSpec:
        if (self.prompt is None) == (self.prompts is None):
            raise ValueError("exactly one of prompt or prompts must be set")
        if not self.prompt_list or any(not text.strip() for text in self.prompt_list):
            raise ValueError("prompts must be non-empty texts")
        cache = self.flex_cache
        if cache.strategy != "none" and cache.warmup + cache.cooldown >= self.generation.steps:
            raise ValueError(f"flexCache.warmup + flexCache.cooldown ({cache.warmup} + {cache.cooldown}) must be "
                             f"less than generation.steps ({self.generation.steps})")
        if cache.strategy == "ditango" and self.parallelism.cp_size < 2:
            raise ValueError("parallelism.cpSize must be at least 2 for the ditango strategy")
        return self


def parse_spec(spec: Mapping[str, Any]) -> GenerationJobSpec:
    """The typed spec, or InvalidSpec whose message starts with the first offending field."""
    try:
        return GenerationJobSpec.model_validate(spec)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(["spec", *(str(part) for part in first["loc"])])
        raise InvalidSpec(f"{where}: {first['msg'].removeprefix('Value error, ')}") from err
