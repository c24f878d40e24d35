"""The GenerationJob spec as typed values: the one model of the document, for the operator and the worker.

The CRD's schema and CEL rules reject bad specs at the apiserver; this model is the second line for
what slips past it (an object stored under an older CRD, a spec edited while the operator was down)
and for the checks only the operator can make (env names the operator owns). Defaults equal the
CRD's, so a spec read from an older object behaves like a new one. Unknown fields are ignored here
(forward compatibility; the apiserver prunes them); the worker, which also reads local manifest files
that no apiserver has seen, rejects them first (chitu_worker.spec). Every failure is an InvalidSpec
naming the exact field (`spec.prompts[1]`), which the handlers turn into phase Failed / reason
InvalidSpec and the worker into its termination message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from chitu_api.names import WORKER_IDENTITY

FRAME_STRIDE = 4  # Wan's VAE compresses time 4x: frames = 4k+1
SPATIAL_STRIDE = 16  # 8x VAE x 2x2 patches
# Set by the operator on every worker (manifests.build_worker_env); a user's env may not override them.
RESERVED_ENV = frozenset({
    "CHITU_JOB_NAME", "CHITU_JOB_NAMESPACE", "CHITU_JOB_UID", "CHITU_RESTART_ATTEMPT", "MASTER_ADDR",
    "MASTER_PORT", "NNODES", "NODE_RANK", "NPROC_PER_NODE", "WORLD_SIZE", "POD_NAME", "POD_NAMESPACE",
})


class InvalidSpec(ValueError):
    """A spec that cannot run: `field` is the offending field (spec.x.y), the message starts with it."""

    def __init__(self, field: str, detail: str):
        super().__init__(f"{field}: {detail}")
        self.field, self.detail = field, detail


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


class ModelSource(_Spec):
    uri: str
    volume: dict[str, Any] | None = None
    mount_path: str = "/models"

    @field_validator("uri")
    @classmethod
    def _absolute_or_s3(cls, uri: str) -> str:
        if not (uri.startswith("/") or uri.startswith("s3://")):
            raise ValueError(f"must be an absolute path or an s3:// URI, got {uri!r}")
        return uri

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"must be an absolute path, got {path!r}")
        return path


class Generation(_Spec):
    steps: int = Field(50, ge=1, le=1000)
    guidance_scale: float = Field(5.0, ge=0, le=50)
    height: int = Field(480, ge=16, le=4096, multiple_of=SPATIAL_STRIDE)
    width: int = Field(832, ge=16, le=4096, multiple_of=SPATIAL_STRIDE)
    frames: int = Field(81, ge=1, le=1001)
    fps: int = Field(16, ge=1, le=120)
    seed: int | None = Field(None, ge=0)

    @field_validator("frames")
    @classmethod
    def _frames_4k_plus_1(cls, frames: int) -> int:
        if frames % FRAME_STRIDE != 1:
            raise ValueError(f"must be 4k+1 (1, 5, 9, ..., 81), got {frames}")
        return frames


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


class CredentialsSecretRef(_Spec):
    name: str = Field(min_length=1)
    access_key_id_key: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_key: str = "AWS_SECRET_ACCESS_KEY"


class Output(_Spec):
    uri: str
    endpoint: str | None = None
    region: str | None = None
    credentials_secret_ref: CredentialsSecretRef | None = None

    @field_validator("uri")
    @classmethod
    def _s3(cls, uri: str) -> str:
        if not uri.startswith("s3://") or len(uri) <= len("s3://"):
            raise ValueError(f"must look like s3://bucket/prefix, got {uri!r}")
        return uri


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
    worker: WorkerTemplate | None = None  # required on the cluster (parse_spec); a local worker run needs none
    output: Output
    run_policy: RunPolicy = RunPolicy()
    scheduling: Scheduling = Scheduling()

    @property
    def prompt_list(self) -> tuple[str, ...]:
        return self.prompts if self.prompts is not None else (self.prompt,)



def _check_across_fields(spec: GenerationJobSpec) -> None:
    """The rules that tie fields together, each reported at the field to change."""
    if (spec.prompt is None) == (spec.prompts is None):
        raise InvalidSpec("spec.prompts", "exactly one of spec.prompt or spec.prompts must be set")
    if spec.prompts is not None and not spec.prompts:
        raise InvalidSpec("spec.prompts", "must hold at least one prompt")
    named = [("spec.prompt", spec.prompt)] if spec.prompt is not None else [
        (f"spec.prompts[{index}]", text) for index, text in enumerate(spec.prompts)]
    for field, text in named:
        if not text.strip():
            raise InvalidSpec(field, "must be a non-empty text")
    cache = spec.flex_cache
    if cache.strategy != "none" and cache.warmup + cache.cooldown >= spec.generation.steps:
        raise InvalidSpec("spec.flexCache", f"warmup + cooldown ({cache.warmup} + {cache.cooldown}) must be less "
                          f"than generation.steps ({spec.generation.steps}) so that some steps may reuse")
    if cache.strategy == "ditango" and spec.parallelism.cp_size < 2:
        raise InvalidSpec("spec.parallelism.cpSize", "must be at least 2 for the ditango strategy (it reuses "
                          "ring attention states)")
    for index, var in enumerate(spec.worker.env if spec.worker else ()):
        if var.get("name") in RESERVED_ENV:
            raise InvalidSpec(f"spec.worker.env[{index}].name",
                              f"{var['name']} is set by the operator and cannot be overridden")


def field_path(loc: tuple) -> str:
    """A pydantic error location as the user writes the field: ('prompts', 1) -> spec.prompts[1]."""
    path = "spec"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def error_message(error: Mapping[str, Any]) -> str:
    """One pydantic error as text, quoting the value for its built-in checks (our validators' messages do)."""
    if error["type"] == "value_error":
        return error["msg"].removeprefix("Value error, ")
    if "input" in error and not isinstance(error["input"], dict):
        return f"{error['msg']} (got {error['input']!r})"
    return error["msg"]


def parse_spec(spec: Mapping[str, Any], *, require_worker: bool = True) -> GenerationJobSpec:
    """The typed spec, or InvalidSpec naming the first offending field. `require_worker`: the pod template is
    needed to run on a cluster (the CRD requires it), not by a worker running a manifest file locally."""
    try:
        parsed = GenerationJobSpec.model_validate(spec)
    except ValidationError as err:
        first = err.errors()[0]
        raise InvalidSpec(field_path(first["loc"]), error_message(first)) from err
    if require_worker and parsed.worker is None:
        raise InvalidSpec("spec.worker", "Field required")
    _check_across_fields(parsed)
    return parsed
