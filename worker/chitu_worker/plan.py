"""A GenerationJob and the pod env -> one typed `WorkerPlan`, the only input a rank process needs.

The spec, parsed with the GenerationJob model (chitu_worker.manifest), becomes chitu_diffusion's `DiffusionUserParams`
(one per prompt) and `EngineConfig`; the engine's own checks are translated back to the spec field the user wrote,
so every error is an `InvalidInput` naming that field (`spec.generation.height: Input should be a multiple of 16
(got 50)`). The launcher builds the plan once and hands it to its rank processes as JSON.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from chitu_api.generationjob import GenerationJobSpec, Output, Parallelism, error_message
from chitu_api.objectkeys import job_prefix, prompt_prefix
from chitu_diffusion.config import ConfigError, EngineConfig
from chitu_diffusion.task import DiffusionUserParams
from chitu_worker.env import PodEnv
from chitu_worker.failures import InvalidInput
from chitu_worker.manifest import parse_spec
from chitu_worker.storage import S3Settings

LOCALHOST = "127.0.0.1"
DEFAULT_MASTER_PORT = 29500


class JobRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    namespace: str | None
    uid: str


class Topology(BaseModel):
    """torchrun's static rendezvous: this pod is node `node_rank` of `nnodes`, running `nproc_per_node` ranks."""

    model_config = ConfigDict(frozen=True)

    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str
    master_port: int

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


class WorkerPlan(BaseModel):
    """Everything a rank needs, resolved and validated once by the launcher (handed to ranks as JSON)."""

    model_config = ConfigDict(frozen=True)

    job: JobRef
    prompts: list[DiffusionUserParams]
    engine: EngineConfig
    model_uri: str
    output_prefix: str  # s3://bucket/prefix/<job name>-<uid[:8]>, or a local run's folder (chitu run --output)
    s3: S3Settings
    topology: Topology
    model_cache: Path
    report_status: bool  # patch the job's status (True when the job came from the API), else log progress
    existing_outputs: list[dict] = []  # status.outputs as fetched: merge patches replace lists, so we extend it
    gpus_per_pod: int = 0  # spec.parallelism.gpusPerPod: the launcher checks CUDA sees that many (chitu_worker.gpus)

    def prompt_prefix(self, index: int) -> str:
        return prompt_prefix(self.output_prefix, index)


# DiffusionUserParams field -> the spec field it comes from (for error messages); "{prompt}" is filled per prompt.
PARAM_FIELDS = {
    "prompt": "{prompt}",
    "negative_prompt": "spec.negativePrompt",
    "num_inference_steps": "spec.generation.steps",
    "guidance_scale": "spec.generation.guidanceScale",
    "height": "spec.generation.height",
    "width": "spec.generation.width",
    "num_frames": "spec.generation.frames",
    "seed": "spec.generation.seed",
    "fps": "spec.generation.fps",
    "flexcache_params.strategy": "spec.flexCache.strategy",
    "flexcache_params.cache_ratio": "spec.flexCache.cacheRatio",
    "flexcache_params.warmup": "spec.flexCache.warmup",
    "flexcache_params.cooldown": "spec.flexCache.cooldown",
    # DiffusionUserParams' only cross-field rule: warmup + cooldown must leave steps that may reuse.
    "": "spec.flexCache",
}

# Engine config key -> (spec field, value), per docs/generationjob.md "Engine mapping".
ENGINE_FIELDS = {
    "infer.diffusion.cp_size": ("spec.parallelism.cpSize", lambda spec: spec.parallelism.cp_size),
    "infer.diffusion.up_limit": ("spec.parallelism.upLimit", lambda spec: spec.parallelism.up_limit),
    "infer.diffusion.dtype": ("spec.engine.dtype", lambda spec: spec.engine.dtype),
    "infer.diffusion.compile": ("spec.engine.compile", lambda spec: spec.engine.compile),
    "infer.diffusion.precision": ("spec.engine.precision", lambda spec: spec.engine.precision),
    "infer.diffusion.precision_check": ("spec.engine.precisionCheck", lambda spec: spec.engine.precision_check),
    "infer.diffusion.parallel_decode": ("spec.engine.parallelDecode", lambda spec: spec.engine.parallel_decode),
}


def prompt_texts(spec: GenerationJobSpec) -> list[tuple[str, str]]:
    """(spec field, text) per prompt (the spec holds exactly one of `prompt` and `prompts`)."""
    if spec.prompt is not None:
        return [("spec.prompt", spec.prompt)]
    return [(f"spec.prompts[{i}]", text) for i, text in enumerate(spec.prompts)]


def build_params(spec: GenerationJobSpec) -> list[DiffusionUserParams]:
    """One engine request per prompt (the generation and FlexCache settings are the job's, shared)."""
    gen, cache = spec.generation, spec.flex_cache
    requests = []
    for field, text in prompt_texts(spec):
        request = {
            "prompt": text,
            "negative_prompt": spec.negative_prompt,
            "num_inference_steps": gen.steps,
            "guidance_scale": gen.guidance_scale,
            "height": gen.height,
            "width": gen.width,
            "num_frames": gen.frames,
            "seed": gen.seed,
            "fps": gen.fps,
            "flexcache_params": {
                "strategy": cache.strategy,
                "cache_ratio": cache.cache_ratio,
                "warmup": cache.warmup,
                "cooldown": cache.cooldown,
            },
        }
        try:
            requests.append(DiffusionUserParams.model_validate(request))
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(map(str, first["loc"]))
            spec_field = PARAM_FIELDS.get(loc, "spec").format(prompt=field)
            raise InvalidInput(spec_field, error_message(first)) from None
    return requests


def build_engine_config(spec: GenerationJobSpec) -> EngineConfig:
    overrides = {}
    for key, (field, value_of) in ENGINE_FIELDS.items():
        value = value_of(spec)
        try:
            EngineConfig.from_overrides({key: value})
        except ConfigError as err:
            raise InvalidInput(field, "; ".join(line.removeprefix(f"{key}: ") for line in err.errors)) from None
        overrides[key] = value
    return EngineConfig.from_overrides(overrides)


def build_topology(env: PodEnv, parallelism: Parallelism) -> Topology:
    """From the pod env when the operator set it; else one node running the spec's whole world size."""
    world = parallelism.world_size
    nnodes = env.nnodes or 1
    nproc = env.nproc_per_node or max(world // nnodes, 1)
    if env.world_size is not None and env.world_size != world:
        raise InvalidInput(
            "spec.parallelism",
            f"cfg x cpSize = {parallelism.cfg} x {parallelism.cp_size} = {world}, but WORLD_SIZE={env.world_size}",
        )
    if nnodes * nproc != world:
        raise InvalidInput(
            "NPROC_PER_NODE", f"NNODES x NPROC_PER_NODE = {nnodes} x {nproc} must equal the world size {world}"
        )
    node_rank = env.node_rank or 0
    if node_rank >= nnodes:
        raise InvalidInput("NODE_RANK", f"must be below NNODES={nnodes}, got {node_rank}")
    if nnodes > 1 and env.master_addr is None:
        raise InvalidInput("MASTER_ADDR", f"required with NNODES={nnodes}")
    port = env.master_port or (free_port() if nnodes == 1 else DEFAULT_MASTER_PORT)
    return Topology(
        nnodes=nnodes,
        node_rank=node_rank,
        nproc_per_node=nproc,
        master_addr=env.master_addr or LOCALHOST,
        master_port=port,
    )


def job_ref(job: dict, env: PodEnv) -> JobRef:
    """The job's identity; a job file without a uid gets one derived from its spec (so a rerun resumes)."""
    meta = job.get("metadata") or {}
    name = meta.get("name") or env.job_name
    if not name:
        raise InvalidInput("metadata.name", "the GenerationJob needs a name")
    uid = meta.get("uid") or env.job_uid
    if not uid:
        uid = hashlib.sha256(json.dumps(job.get("spec"), sort_keys=True).encode()).hexdigest()
    return JobRef(name=name, namespace=meta.get("namespace") or env.job_namespace, uid=uid)


def build_plan(job: dict, env: PodEnv, *, report_status: bool, output_dir: Path | None = None) -> WorkerPlan:
    """`output_dir`: a local run's folder for the outputs (prompt-NNNN/ below it) instead of the spec's S3 output."""
    kind = job.get("kind")
    if kind is not None and kind != "GenerationJob":
        raise InvalidInput("kind", f"expected GenerationJob, got {kind!r}")
    spec = parse_spec(job.get("spec"))
    ref = job_ref(job, env)
    output = spec.output or Output()
    # On a cluster the operator sends output.uri with the platform defaults applied (the spec may name none).
    output_uri = env.output_uri or output.uri
    if output_dir is None and output_uri is None:
        raise InvalidInput("spec.output.uri", "not set, and no CHITU_OUTPUT_URI (a local run: chitu run --output DIR)")
    return WorkerPlan(
        job=ref,
        prompts=build_params(spec),
        engine=build_engine_config(spec),
        model_uri=spec.model.uri,
        output_prefix=str(output_dir.resolve()) if output_dir else job_prefix(output_uri, ref.name, ref.uid),
        # The pod env wins: the operator renders it from the spec, and a local run may point elsewhere.
        s3=S3Settings(endpoint=env.s3_endpoint or output.endpoint, region=env.region or output.region),
        topology=build_topology(env, spec.parallelism),
        model_cache=env.model_cache,
        report_status=report_status,
        existing_outputs=list((job.get("status") or {}).get("outputs") or []),
        # gpusPerPod is what the pod asked of its node; a local run (no pod env) uses whatever this machine has.
        gpus_per_pod=spec.parallelism.gpus_per_pod if env.world_size is not None else 0,
    )


def free_port() -> int:
    """A loopback port free right now, for a single-node rendezvous nobody else needs to find."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]
