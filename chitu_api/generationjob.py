"""The GenerationJob spec as typed values: the one model of the document, for the CRD, the operator and the worker.

Each field carries its description, default, bounds and enum, and each section its CEL rules (chitu_api.schema),
so the CRD (`make crds`, chitu_api.crd) is generated from this file and adding a field is one edit here. The
apiserver rejects bad specs with the CEL rules; this model is the second line for what slips past it (an
object stored under an older CRD, a manifest file run by a worker without a cluster) and runs the same rules
in Python: the facts they share (frame and pixel strides, strategy names, what DiTango needs of the layout) come
from the engine's torch-free modules, and tests/unit/test_contract_cel.py checks each CEL rule against its Python
twin on a grid of values. Every failure is an InvalidSpec naming the exact field (`spec.prompts[1]`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from chitu_api import kubernetes_cel
from chitu_api.corev1 import EnvVar, ResourceRequirements, Toleration
from chitu_api.failurepolicy import PodFailurePolicy
from chitu_api.names import WORKER_IDENTITY
from chitu_api.podpolicy import PodPolicy, pod_value_problems
from chitu_api.podtemplate import KubeObject, PodTemplateFields
from chitu_api.schema import FREE_FORM, ContractModel, cel, error_message, immutable, rules
from chitu_diffusion.config import CompileBlocks, ModelDtype, ParallelDecode, Precision, PrecisionCheck
from chitu_diffusion.flex_cache.registry import requires_ring_attention, strategy_names, strategy_problem
from chitu_diffusion.parallel.degrees import MAX_CFG_DEGREE, RING_ATTENTION_CEL
from chitu_diffusion.task import FRAME_STRIDE, SPATIAL_STRIDE, frames_problem, spatial_problem

# A bucket name as S3 allows it (3-63 lower-case letters, digits, '.', '-'), then an optional /prefix.
S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
#: FlexCache strategies that work on ring attention states (today DiTango), from the strategies' own traits.
RING_ATTENTION_STRATEGIES = tuple(name for name in strategy_names() if requires_ring_attention(name))


class InvalidSpec(ValueError):
    """A spec that cannot run: `field` is the offending field (spec.x.y), the message starts with it."""

    def __init__(self, field: str, detail: str):
        super().__init__(f"{field}: {detail}")
        self.field, self.detail = field, detail


BLANK = "must be a non-empty text, not only whitespace"


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError(BLANK)
    return text


def _at_least_one(prompts: tuple[str, ...]) -> tuple[str, ...]:
    if not prompts:
        raise ValueError("must hold at least one prompt")
    return prompts


#: A prompt: non-empty, not only whitespace. `trim()` is Kubernetes' CEL strings extension (Python's strip()).
PromptText = Annotated[
    str,
    Field(max_length=4096, json_schema_extra=rules(cel("self.trim().size() > 0", BLANK))),
    AfterValidator(_not_blank),
]


class ModelSource(ContractModel):
    """Where the diffusers model directory comes from."""

    uri: str = Field(
        max_length=1024,
        description="A path inside the pod (absolute) or s3://bucket/prefix (copied "
        "once to a local cache on the node).",
        json_schema_extra=rules(
            cel(
                "self.startsWith('/') || self.startsWith('s3://')", "model.uri must be an absolute path or an s3:// URI"
            )
        ),
    )
    volume: dict[str, Any] | None = Field(
        None,
        description="Optional Kubernetes volume source (any core/v1 "
        "VolumeSource, e.g. persistentVolumeClaim) mounted read-only at mountPath.",
        json_schema_extra=FREE_FORM,
    )
    mount_path: str = Field(
        "/models",
        max_length=1024,
        description="Where the volume is mounted in the pod.",
        json_schema_extra=rules(cel("self.startsWith('/')", "model.mountPath must be an absolute path")),
    )

    @field_validator("uri")
    @classmethod
    def _absolute_or_s3(cls, uri: str) -> str:
        if not uri.startswith(("/", "s3://")):
            raise ValueError(f"must be an absolute path or an s3:// URI, got {uri!r}")
        return uri

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"must be an absolute path, got {path!r}")
        return path


def _spatial_rule(field: str) -> dict[str, Any]:
    return rules(cel(f"self % {SPATIAL_STRIDE} == 0", f"generation.{field} must be a multiple of {SPATIAL_STRIDE}"))


class Generation(ContractModel):
    """Generation settings shared by every prompt of the job."""

    steps: int = Field(50, ge=1, le=1000, description="Denoising steps.")
    guidance_scale: float = Field(
        5.0, ge=0, le=50, description="Classifier-free guidance scale (> 1 runs both guidance branches)."
    )
    height: int = Field(
        480,
        ge=16,
        le=4096,
        description=f"Pixels; a multiple of {SPATIAL_STRIDE}.",
        json_schema_extra=_spatial_rule("height"),
    )
    width: int = Field(
        832,
        ge=16,
        le=4096,
        description=f"Pixels; a multiple of {SPATIAL_STRIDE}.",
        json_schema_extra=_spatial_rule("width"),
    )
    frames: int = Field(
        81,
        ge=1,
        le=1001,
        description=f"Frames per video: {FRAME_STRIDE}k+1 (Wan's VAE compresses time {FRAME_STRIDE}x).",
        json_schema_extra=rules(
            cel(f"self % {FRAME_STRIDE} == 1", "generation.frames must be 4k+1 (1, 5, 9, ..., 81)")
        ),
    )
    fps: int = Field(16, ge=1, le=120, description="Frames per second of the video file.")
    seed: int | None = Field(
        None,
        ge=0,
        description="Optional seed; each prompt's generator is seeded from it.",
        json_schema_extra=rules(format="int64"),
    )

    @field_validator("height", "width")
    @classmethod
    def _spatial_stride(cls, pixels: int) -> int:
        if problem := spatial_problem(pixels):
            raise ValueError(problem)
        return pixels

    @field_validator("frames")
    @classmethod
    def _frame_stride(cls, frames: int) -> int:
        if problem := frames_problem(frames):
            raise ValueError(problem)
        return frames


class FlexCache(ContractModel):
    """FlexCache: feature reuse across denoising steps (docs/flexcache.md)."""

    strategy: Literal[strategy_names()] = Field(
        "none",
        description=f"The strategy, one of the engine's registry: {', '.join(strategy_names())} "
        f"({', '.join(RING_ATTENTION_STRATEGIES)} needs ring attention: parallelism.cpSize >= 2 and upLimit < cpSize).",
    )
    cache_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description="0 = quality first, 1 = speed first; each strategy maps it onto its own thresholds.",
    )
    warmup: int = Field(1, ge=0, le=1000, description="First steps always computed in full.")
    cooldown: int = Field(1, ge=0, le=1000, description="Last steps always computed in full.")


class Parallelism(ContractModel):
    """The gang's parallel degrees: world size = cfg x cpSize processes, pods = world size / gpusPerPod."""

    cfg: Literal[tuple(range(1, MAX_CFG_DEGREE + 1))] = Field(
        1, description="Classifier-free-guidance parallel degree: 2 runs the two guidance branches on different ranks."
    )
    cp_size: int = Field(1, ge=1, le=64, description="Context-parallel degree (Ulysses x ring).")
    up_limit: int = Field(
        8,
        ge=1,
        le=64,
        description="Largest Ulysses degree; the rest of cpSize goes to ring "
        "attention (1 puts all of cpSize on the ring).",
    )
    gpus_per_pod: int = Field(
        1,
        ge=0,
        le=16,
        description="GPUs (= processes) per pod; 0 = CPU-only pods with one "
        "process each. The world size must be a multiple of it.",
    )

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "self.gpusPerPod == 0 || (self.cfg * self.cpSize) % self.gpusPerPod == 0",
                "world size (cfg x cpSize) must be a multiple of gpusPerPod",
                ".gpusPerPod",
            )
        )
    )

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

    @field_validator("gpus_per_pod")
    @classmethod
    def _whole_pods(cls, gpus_per_pod: int, info: ValidationInfo) -> int:
        world_size = info.data.get("cfg", 1) * info.data.get("cp_size", 1)
        if gpus_per_pod and world_size % gpus_per_pod:
            raise ValueError(f"world size cfg*cpSize = {world_size} must be a multiple of gpusPerPod = {gpus_per_pod}")
        return gpus_per_pod


class Engine(ContractModel):
    """Engine settings: these infer.diffusion.* settings, each defined once in chitu_diffusion.config."""

    dtype: ModelDtype
    compile: CompileBlocks
    precision: Precision
    precision_check: PrecisionCheck
    parallel_decode: ParallelDecode


class WorkerTemplate(PodTemplateFields):
    """The worker pods' container, and the pod fields a GPU cluster needs (platform defaults fill the unset ones)."""

    image: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="The worker image (runs "
        "chitu-worker); default: the platform's (chart value jobDefaults.worker.image).",
        json_schema_extra=rules(kubernetes_cel.image_rule()),
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="When the kubelet pulls the image."
    )
    resources: ResourceRequirements = Field(
        default_factory=dict,
        description="Container requests and limits; the "
        "operator adds the nvidia.com/gpu limit from parallelism.gpusPerPod.",
    )
    env: tuple[EnvVar, ...] = Field(
        (),
        max_length=64,
        description="Extra environment variables; the ones the "
        "operator sets on every pod (docs/generationjob.md) cannot be overridden.",
    )
    service_account_name: str = Field(
        WORKER_IDENTITY,
        max_length=253,
        description=f"Left at {WORKER_IDENTITY}, the pods run as the job's own identity <job name>-worker, which "
        "the operator creates with a Role that may read only this job and patch only its status; another name is "
        "yours to create and bind.",
        json_schema_extra=rules(kubernetes_cel.dns1123_subdomain_rule("worker.serviceAccountName")),
    )
    pod_annotations: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict,
        max_length=64,
        description="Annotations on every worker pod.",
        json_schema_extra=rules(kubernetes_cel.annotation_keys_rule()),
    )
    pod_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict,
        max_length=64,
        description="Labels on every worker pod (the operator's chitu.dev/* labels cannot be overridden).",
        json_schema_extra=rules(
            *kubernetes_cel.label_map_rules("worker.podLabels"), kubernetes_cel.owned_labels_rule()
        ),
    )
    command: tuple[Annotated[str, Field(max_length=4096)], ...] = Field(
        (), max_length=64, description="Advanced / testing: replaces the container command (default [chitu-worker])."
    )


class CredentialsSecretRef(ContractModel):
    """A Secret in the job's namespace holding the S3 keys."""

    name: str = Field(
        min_length=1,
        max_length=253,
        description="The Secret's name.",
        json_schema_extra=rules(kubernetes_cel.dns1123_subdomain_rule("the Secret's name")),
    )
    access_key_id_key: str = Field(
        "AWS_ACCESS_KEY_ID",
        max_length=253,
        description="The key holding the access key id.",
        json_schema_extra=rules(kubernetes_cel.config_key_rule()),
    )
    secret_access_key_key: str = Field(
        "AWS_SECRET_ACCESS_KEY",
        max_length=253,
        description="The key holding the secret access key.",
        json_schema_extra=rules(kubernetes_cel.config_key_rule()),
    )


class Output(ContractModel):
    """Where videos, metrics and policy files go."""

    uri: str | None = Field(
        None,
        max_length=1024,
        description="s3://bucket/prefix; objects land under <prefix>/"
        "<job name>-<uid[:8]>/prompt-<index:04d>/. Default: the platform's (chart value "
        "jobDefaults.output.uri).",
        json_schema_extra=rules(
            cel(f"self.matches('{S3_URI_PATTERN}')", "output.uri must start with s3:// and name a bucket")
        ),
    )
    endpoint: str | None = Field(
        None,
        max_length=1024,
        description="S3 endpoint URL (default AWS).",
        json_schema_extra=rules(
            cel("self.startsWith('http://') || self.startsWith('https://')", "output.endpoint must be an http(s) URL")
        ),
    )
    region: str | None = Field(None, max_length=64, description="Sets AWS_DEFAULT_REGION.")
    credentials_secret_ref: CredentialsSecretRef | None = Field(
        None, description="A Secret holding the S3 keys (omit for ambient credentials, e.g. a cloud workload identity)."
    )

    @field_validator("uri")
    @classmethod
    def _s3(cls, uri: str | None) -> str | None:
        if uri is not None and not re.match(S3_URI_PATTERN, uri):
            raise ValueError(
                f"must look like s3://bucket/prefix (a bucket of 3-63 lower-case letters, digits, "
                f"'.' or '-'), got {uri!r}"
            )
        return uri

    @field_validator("endpoint")
    @classmethod
    def _http(cls, endpoint: str | None) -> str | None:
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {endpoint!r}")
        return endpoint


class RunPolicy(ContractModel):
    """How the job runs: the only section that may change while the job exists."""

    backoff_limit: int = Field(3, ge=0, le=100, description="Gang restarts allowed before the job fails.")
    active_deadline_seconds: int | None = Field(
        None,
        ge=1,
        description="The job fails once active this long (counted from startTime; resuming restarts the clock).",
        json_schema_extra=rules(format="int64"),
    )
    pre_running_deadline_seconds: int = Field(
        600,
        ge=1,
        description="The job fails when a pod stays Pending "
        "(unschedulable, pulling, ...) this long, with the pod's waiting "
        "reason.",
        json_schema_extra=rules(format="int64"),
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        description="Delete the finished job (and its pods) this long after completion.",
        json_schema_extra=rules(format="int64"),
    )
    restart_backoff_seconds: int = Field(
        10,
        ge=0,
        le=3600,
        description="Wait before a restarted gang's pods are "
        "created, doubling with each restart (at most 300 s): a cause that outlasts "
        "an attempt does not spend backoffLimit in seconds.",
    )
    stall_timeout_seconds: int = Field(
        1800,
        ge=10,
        le=604800,
        description="A Running gang whose rank 0 reports no progress (no denoising step, no prompt, no start) this "
        "long is restarted (counted; condition Restarting, reason Stalled); counted from the last report or the "
        "attempt's start, so copying and loading the model count as silence: keep it above the model's load time.",
        json_schema_extra=rules(format="int64"),
    )
    clean_pod_policy: Literal["None", "Running", "All"] = Field(
        "Running", description="Pods deleted when the job finishes: None, Running (unfinished ones) or All."
    )
    suspend: bool = Field(False, description="true deletes the pods (phase Suspended); false recreates them.")
    pod_failure_policy: PodFailurePolicy | None = Field(
        None,
        description="Rules on a failed rank's exit code or "
        "pod conditions: FailJob, Ignore (restart, not counted) or "
        "Count (chitu_api.failurepolicy); exit code 2 always fails.",
    )


class Scheduling(ContractModel):
    """Pod placement; may change only while the job is suspended (so a queue such as Kueue can place it)."""

    node_selector: dict[str, Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict,
        max_length=64,
        description="Node labels the worker pods require.",
        json_schema_extra=rules(*kubernetes_cel.label_map_rules("scheduling.nodeSelector")),
    )
    tolerations: tuple[Toleration, ...] = Field((), max_length=32, description="Taints the worker pods tolerate.")
    priority_class_name: str = Field(
        "",
        max_length=253,
        description="The worker pods' PriorityClass.",
        json_schema_extra=rules(kubernetes_cel.dns1123_subdomain_rule("scheduling.priorityClassName", optional=True)),
    )
    queue_name: str = Field(
        "",
        max_length=63,
        description="A Kueue LocalQueue: the gang waits, with no pod, until "
        "Kueue admits it whole (same as the job label kueue.x-k8s.io/queue-name; docs/kueue.md).",
        json_schema_extra=rules(kubernetes_cel.label_value_rule("scheduling.queueName")),
    )
    affinity: KubeObject | None = Field(None, description="core/v1 Affinity of the worker pods.")
    scheduler_name: str = Field("", max_length=253, description="The scheduler of the worker pods (e.g. volcano).")


def _ring_attention_rule() -> dict[str, str]:
    """RING_ATTENTION_CEL (written over the parallelism object) lifted to the spec, for the strategies needing it."""
    over_parallelism = re.sub(r"\bself\b", "self.parallelism", RING_ATTENTION_CEL)
    return cel(
        f"!(self.flexCache.strategy in {list(RING_ATTENTION_STRATEGIES)}) || ({over_parallelism})",
        f"flexCache.strategy {' and '.join(RING_ATTENTION_STRATEGIES)} needs ring attention over at least 2 "
        "ranks: set parallelism.cpSize >= 2 and parallelism.upLimit < parallelism.cpSize (upLimit 1 puts all "
        "of cpSize on the ring)",
        ".parallelism",
    )


class GenerationJobSpec(ContractModel):
    """What to generate, with which model, engine settings and parallelism, and where to put it."""

    #: Sections the CRD requires. None: the worker's image and the output come from the job or the platform
    #: defaults (chitu_api.operatorconfig.with_platform_defaults); parse_spec checks them after the merge.
    CLUSTER_REQUIRED: ClassVar[tuple[str, ...]] = ()

    model: ModelSource = Field(
        description="The diffusers model directory. Immutable.", json_schema_extra=rules(immutable("spec.model"))
    )
    prompt: PromptText | None = Field(
        None,
        description="One prompt (or use prompts; exactly one of the two). Immutable.",
        json_schema_extra=rules(immutable("spec.prompt")),
    )
    prompts: Annotated[tuple[PromptText, ...], Field(max_length=1024), AfterValidator(_at_least_one)] | None = Field(
        None,
        description="The prompts, one video each (or use prompt). Immutable.",
        json_schema_extra=rules(immutable("spec.prompts"), minItems=1),
    )
    negative_prompt: str = Field(
        "",
        max_length=4096,
        description="Negative prompt applied to every prompt. Immutable.",
        json_schema_extra=rules(immutable("spec.negativePrompt")),
    )
    generation: Generation = Field(
        Generation(),
        description="Generation settings shared by every prompt. Immutable.",
        json_schema_extra=rules(immutable("spec.generation")),
    )
    flex_cache: FlexCache = Field(
        FlexCache(),
        description="FlexCache feature reuse across denoising steps. Immutable.",
        json_schema_extra=rules(immutable("spec.flexCache")),
    )
    parallelism: Parallelism = Field(
        Parallelism(),
        description="World size = cfg x cpSize processes; pods = world "
        "size / gpusPerPod (one process per pod when gpusPerPod is 0). Immutable.",
        json_schema_extra=rules(immutable("spec.parallelism")),
    )
    engine: Engine = Field(
        Engine(),
        description="Engine settings (infer.diffusion.*). Immutable.",
        json_schema_extra=rules(immutable("spec.engine")),
    )
    worker: WorkerTemplate | None = Field(
        None,
        description="The worker pods' container; unset fields come from the platform defaults. Immutable.",
        json_schema_extra=rules(immutable("spec.worker")),
    )
    output: Output | None = Field(
        None,
        description="Where videos, metrics and policy files go; unset fields come "
        "from the platform defaults. Immutable.",
        json_schema_extra=rules(immutable("spec.output")),
    )
    run_policy: RunPolicy = Field(RunPolicy(), description="How the job runs. Mutable.")
    scheduling: Scheduling = Field(Scheduling(), description="Pod placement. Mutable only while the job is suspended.")

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "has(self.prompt) != has(self.prompts)",
                "exactly one of spec.prompt or spec.prompts must be set",
                ".prompts",
            ),
            cel(
                "self.flexCache.strategy == 'none' || self.flexCache.warmup + self.flexCache.cooldown < "
                "self.generation.steps",
                "flexCache.warmup + flexCache.cooldown must be less than generation.steps, to "
                "leave steps that may reuse the cache",
                ".flexCache",
            ),
            _ring_attention_rule(),
            cel(
                "has(self.prompts) == has(oldSelf.prompts)",
                "prompt and prompts are immutable: a job cannot switch between them",
                ".prompts",
            ),
            cel(
                "oldSelf.runPolicy.suspend || self.scheduling == oldSelf.scheduling",
                "spec.scheduling may change only while the job is suspended",
                ".scheduling",
            ),
        )
    )

    @property
    def prompt_list(self) -> tuple[str, ...]:
        return self.prompts if self.prompts is not None else (self.prompt,)


def _check_across_fields(spec: GenerationJobSpec) -> None:
    """The rules that tie fields together (the spec's CEL rules above), each reported at the field to change."""
    if (spec.prompt is None) == (spec.prompts is None):
        raise InvalidSpec("spec.prompts", "exactly one of spec.prompt or spec.prompts must be set")
    cache, parallelism = spec.flex_cache, spec.parallelism
    if cache.strategy != "none" and cache.warmup + cache.cooldown >= spec.generation.steps:
        raise InvalidSpec(
            "spec.flexCache",
            f"warmup + cooldown ({cache.warmup} + {cache.cooldown}) must be less "
            f"than generation.steps ({spec.generation.steps}) so that some steps may reuse",
        )
    if problem := strategy_problem(cache.strategy, parallelism.cp_size, parallelism.up_limit, None):
        field = "cpSize" if parallelism.cp_size < 2 else "upLimit"
        raise InvalidSpec(f"spec.parallelism.{field}", problem)


def _check_runnable(spec: GenerationJobSpec) -> None:
    """What a cluster needs that the job or the platform defaults must give (checked after the merge)."""
    if spec.worker is None or spec.worker.image is None:
        raise InvalidSpec(
            "spec.worker.image",
            "not set by the job, and the platform has no default (chart value jobDefaults.worker.image)",
        )
    if spec.output is None or spec.output.uri is None:
        raise InvalidSpec(
            "spec.output.uri",
            "not set by the job, and the platform has no default (chart value jobDefaults.output.uri)",
        )


def field_path(loc: tuple) -> str:
    """A pydantic error location as the user writes the field: ('prompts', 1) -> spec.prompts[1]."""
    path = "spec"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def parse_spec(
    spec: Mapping[str, Any], *, require_worker: bool = True, policy: PodPolicy | None = None
) -> GenerationJobSpec:
    """The typed spec, or InvalidSpec naming the first offending field. `require_worker`: what a cluster needs
    (the worker image, the output URI) must be there, from the job or with_platform_defaults; a worker running a
    manifest file locally, or a client checking one, needs neither. Every value the worker pods will carry is
    checked against Kubernetes' rules and the platform's `policy` (chitu_api.podpolicy), so a pod the apiserver
    would refuse never leaves the job hanging."""
    try:
        parsed = GenerationJobSpec.model_validate(spec)
    except ValidationError as err:
        first = err.errors()[0]
        raise InvalidSpec(field_path(first["loc"]), error_message(first)) from err
    if require_worker:
        _check_runnable(parsed)
    _check_across_fields(parsed)
    if problems := pod_value_problems(parsed, policy):
        raise InvalidSpec(*problems[0])
    return parsed
