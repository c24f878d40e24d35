"""The worker's inputs: GenerationJob spec + pod env -> WorkerPlan, each bad value named by its field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from chitu_api.objectkeys import job_prefix, prompt_prefix
from chitu_worker.env import PodEnv
from chitu_worker.failures import InvalidInput
from chitu_worker.manifest import read_job_file
from chitu_worker.plan import build_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JOB = {
    "apiVersion": "chitu.dev/v1alpha1",
    "kind": "GenerationJob",
    "metadata": {"name": "cats", "namespace": "team", "uid": "0123abcd-4567-89ef-0123-456789abcdef"},
    "spec": {
        "model": {"uri": "/models/tiny", "volume": {"persistentVolumeClaim": {"claimName": "models"}}},
        "prompts": ["A cat walking on grass", "A dog running on a beach"],
        "negativePrompt": "blurry",
        "generation": {"steps": 6, "guidanceScale": 4.5, "height": 64, "width": 96, "frames": 9, "fps": 8, "seed": 7},
        "flexCache": {"strategy": "teacache", "cacheRatio": 0.4, "warmup": 2, "cooldown": 1},
        "parallelism": {"cfg": 2, "cpSize": 1, "upLimit": 4, "gpusPerPod": 1},
        "engine": {"dtype": "float32", "compile": False},
        "worker": {"image": "ghcr.io/chitu/worker:0.1.0"},
        "output": {
            "uri": "s3://videos/runs/",
            "endpoint": "http://s3.local:8333",
            "region": "eu-west-1",
            "credentialsSecretRef": {"name": "s3-creds"},
        },
    },
    "status": {"outputs": [{"index": 0, "video": "s3://videos/runs/cats-0123abcd/prompt-0000/video.mp4"}]},
}


def plan_of(job: dict, env: dict | None = None, **kwargs):
    return build_plan(job, PodEnv.from_environ(env or {}), report_status=kwargs.get("report_status", True))


def with_value(path: str, value) -> dict:
    """JOB with the dotted `path` (list items as numbers) set to `value`; `...` deletes it."""
    job = copy.deepcopy(JOB)
    *parents, leaf = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = job
    for part in parents:
        node = node[part]
    if value is ...:
        del node[leaf]
    else:
        node[leaf] = value
    return job


def test_spec_maps_to_one_request_per_prompt():
    plan = plan_of(JOB)
    assert [p.prompt for p in plan.prompts] == JOB["spec"]["prompts"]
    first = plan.prompts[0]
    assert (first.num_inference_steps, first.guidance_scale, first.height, first.width) == (6, 4.5, 64, 96)
    assert (first.num_frames, first.fps, first.seed, first.negative_prompt) == (9, 8, 7, "blurry")
    cache = first.cache
    assert (cache.strategy, cache.cache_ratio, cache.warmup, cache.cooldown) == ("teacache", 0.4, 2, 1)
    diffusion = plan.engine.diffusion
    assert (diffusion.cp_size, diffusion.up_limit, diffusion.dtype, diffusion.compile) == (1, 4, "float32", False)


def test_engine_precision_and_compile_default_reach_the_engine():
    engine = {"precision": "fp8", "precisionCheck": True, "parallelDecode": True}
    diffusion = plan_of(with_value("spec.engine", engine)).engine.diffusion
    assert (diffusion.precision, diffusion.precision_check, diffusion.compile) == ("fp8", True, None)
    assert diffusion.parallel_decode is True
    defaults = plan_of(JOB).engine.diffusion
    assert (defaults.precision, defaults.parallel_decode) == ("bf16", False)


def test_job_identity_keys_and_storage_settings():
    plan = plan_of(JOB)
    assert (plan.job.name, plan.job.namespace, plan.job.uid) == ("cats", "team", JOB["metadata"]["uid"])
    assert plan.output_prefix == "s3://videos/runs/cats-0123abcd"
    assert plan.prompt_prefix(1) == "s3://videos/runs/cats-0123abcd/prompt-0001"
    assert plan.prompt_prefix(12345) == "s3://videos/runs/cats-0123abcd/prompt-12345"
    assert (plan.s3.endpoint, plan.s3.region) == ("http://s3.local:8333", "eu-west-1")
    assert plan.existing_outputs == JOB["status"]["outputs"]
    # The pod env wins over the spec (the operator renders one from the other; a local run may redirect).
    plan = plan_of(JOB, {"CHITU_S3_ENDPOINT": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "us-east-1"})
    assert (plan.s3.endpoint, plan.s3.region) == ("http://127.0.0.1:9000", "us-east-1")


def test_key_helpers():
    assert job_prefix("s3://b/p", "j", "abcdef0123") == "s3://b/p/j-abcdef01"
    assert job_prefix("s3://b", "j", "abcdef0123") == "s3://b/j-abcdef01"
    assert prompt_prefix("s3://b/j-abcdef01", 3) == "s3://b/j-abcdef01/prompt-0003"


def test_single_prompt_and_defaults():
    spec = {"model": {"uri": "/m"}, "prompt": "A cat", "output": {"uri": "s3://videos"}}
    job = {"metadata": {"name": "one"}, "spec": spec}
    plan = plan_of(job)
    (request,) = plan.prompts
    assert (request.prompt, request.num_inference_steps, request.height, request.width) == ("A cat", 50, 480, 832)
    assert (request.num_frames, request.fps, request.guidance_scale, request.cache.strategy) == (81, 16, 5.0, "none")
    assert plan.topology.world_size == 1


def test_job_file_without_uid_gets_a_stable_one_from_its_spec(tmp_path):
    job = with_value("metadata", {"name": "cats"})
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    first = plan_of(read_job_file(path), report_status=False)
    assert first.job.uid == plan_of(read_job_file(path)).job.uid  # a rerun resumes into the same keys
    other = copy.deepcopy(job)
    other["spec"]["prompts"] = ["another prompt"]
    assert plan_of(other).job.uid != first.job.uid  # another job, other keys
    assert plan_of(job, {"CHITU_JOB_UID": "feedbeef-1"}).output_prefix.endswith("/cats-feedbeef")


@pytest.mark.parametrize("name", ["single-prompt.yaml", "two-prompts-teacache.yaml"])
def test_examples_are_valid_jobs(name):
    path = EXAMPLES / name
    if not path.exists():
        pytest.skip(f"{path} not in this checkout")
    plan = plan_of(read_job_file(path), {"CHITU_OUTPUT_URI": "s3://platform/runs"}, report_status=False)
    assert plan.prompts and plan.output_prefix.startswith("s3://platform/runs/")


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        ("spec.generation.height", 50, "spec.generation.height", "multiple of 16"),
        ("spec.generation.frames", 8, "spec.generation.frames", "4k+1"),
        ("spec.generation.steps", "many", "spec.generation.steps", "integer"),
        ("spec.generation.steps", 0, "spec.generation.steps", "greater than or equal to 1"),
        ("spec.generation.setps", 3, "spec.generation.setps", "unknown field"),
        ("spec.flexCache.cache_ration", 0.3, "spec.flexCache.cache_ration", "unknown field"),
        ("spec.promt", "a cat", "spec.promt", "unknown field"),
        ("spec.generation.seed", -1, "spec.generation.seed", "greater than or equal to 0"),
        ("spec.flexCache.cacheRatio", 1.5, "spec.flexCache.cacheRatio", "less than or equal to 1"),
        ("spec.flexCache.strategy", "fast", "spec.flexCache.strategy", "'none', 'ditango', 'pab' or 'teacache'"),
        (
            "spec.flexCache.warmup",
            5,
            "spec.flexCache",
            "warmup + cooldown (5 + 1) must be less than generation.steps (6)",
        ),
        ("spec.prompts.1", "  ", "spec.prompts[1]", "non-empty"),
        ("spec.prompts", [], "spec.prompts", "at least one"),
        ("spec.prompt", "both given", "spec.prompts", "exactly one"),
        ("spec.engine.dtype", "fp8", "spec.engine.dtype", "'bfloat16'"),
        ("spec.parallelism.cpSize", 0, "spec.parallelism.cpSize", "greater than or equal to 1"),
        ("spec.parallelism.cfg", 3, "spec.parallelism.cfg", "1 or 2 (got 3)"),
        ("spec.output.uri", "/tmp/out", "spec.output.uri", "s3://bucket/prefix"),
        ("spec.output", ..., "spec.output.uri", "not set, and no CHITU_OUTPUT_URI"),
        ("spec.model", {"volume": {}}, "spec.model.uri", "Field required"),
        ("kind", "Pod", "kind", "GenerationJob"),
        ("metadata", {}, "metadata.name", "needs a name"),
    ],
)
def test_invalid_spec_names_the_field(path, value, field, words):
    with pytest.raises(InvalidInput) as caught:
        plan_of(with_value(path, value))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ") and words in str(caught.value)


def test_topology_from_pod_env():
    env = {
        "NNODES": "2",
        "NODE_RANK": "1",
        "NPROC_PER_NODE": "1",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "cats-worker-0.cats-workers.team.svc",
        "MASTER_PORT": "29500",
    }
    topology = plan_of(JOB, env).topology
    assert (topology.nnodes, topology.node_rank, topology.nproc_per_node) == (2, 1, 1)
    assert (topology.master_addr, topology.master_port, topology.world_size) == (env["MASTER_ADDR"], 29500, 2)


def test_topology_without_pod_env_runs_the_whole_world_here():
    topology = plan_of(JOB).topology  # cfg 2 x cpSize 1
    assert (topology.nnodes, topology.node_rank, topology.nproc_per_node) == (1, 0, 2)
    assert topology.master_addr == "127.0.0.1"
    assert 0 < topology.master_port < 65536


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"WORLD_SIZE": "4"}, "spec.parallelism"),
        ({"NNODES": "2", "NPROC_PER_NODE": "2"}, "NPROC_PER_NODE"),
        ({"NNODES": "2", "NPROC_PER_NODE": "1"}, "MASTER_ADDR"),
        ({"NNODES": "2", "NPROC_PER_NODE": "1", "NODE_RANK": "2", "MASTER_ADDR": "x"}, "NODE_RANK"),
        ({"NNODES": "two"}, "NNODES"),
        ({"MASTER_PORT": "70000"}, "MASTER_PORT"),
    ],
)
def test_inconsistent_pod_env_names_the_variable(env, field):
    with pytest.raises(InvalidInput) as caught:
        plan_of(JOB, env)
    assert caught.value.field == field


def test_empty_env_values_count_as_unset():
    env = PodEnv.from_environ({"CHITU_S3_ENDPOINT": "", "NNODES": "", "CHITU_MODEL_CACHE": ""})
    assert env.s3_endpoint is None and env.nnodes is None and env.model_cache.name == "models"


def test_job_file_errors_name_the_option(tmp_path):
    with pytest.raises(InvalidInput, match="--job-file: cannot read"):
        read_job_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed")
    with pytest.raises(InvalidInput, match=r"--job-file: .* is not YAML"):
        read_job_file(bad)
    bad.write_text("- a list")
    with pytest.raises(InvalidInput, match="one GenerationJob mapping"):
        read_job_file(bad)


def test_plan_survives_the_trip_to_rank_processes():
    plan = plan_of(JOB)
    assert type(plan).model_validate_json(plan.model_dump_json()) == plan


def test_the_output_comes_from_the_operator_env_or_a_local_folder(tmp_path):
    """The operator sends output.uri with the platform defaults applied; `chitu run --output DIR` writes locally."""
    job = with_value("spec.output", ...)
    plan = plan_of(job, {"CHITU_OUTPUT_URI": "s3://platform/runs"})
    assert plan.output_prefix == f"s3://platform/runs/cats-{JOB['metadata']['uid'][:8]}"
    local = build_plan(job, PodEnv.from_environ({}), report_status=False, output_dir=tmp_path / "out")
    assert local.output_prefix == str((tmp_path / "out").resolve())
    assert local.prompt_prefix(0) == f"{(tmp_path / 'out').resolve()}/prompt-0000"
