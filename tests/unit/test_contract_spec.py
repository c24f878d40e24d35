"""The contract's typed spec: defaults, derived sizes, and the checks behind phase Failed/InvalidSpec."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chitu_api.generationjob import InvalidSpec, parse_spec

MINIMAL = {
    "model": {"uri": "/models/wan"},
    "prompt": "a cat",
    "worker": {"image": "w"},
    "output": {"uri": "s3://bucket/prefix"},
}


def spec_with(**changes) -> dict:
    return {**MINIMAL, **changes}


def test_minimal_spec_gets_the_contract_defaults():
    spec = parse_spec(MINIMAL)
    assert spec.prompt_list == ("a cat",)
    assert (spec.generation.steps, spec.generation.height, spec.generation.width, spec.generation.frames) == (
        50,
        480,
        832,
        81,
    )
    assert spec.flex_cache.strategy == "none" and spec.engine.dtype == "auto"
    assert spec.worker.service_account_name == "chitu-worker" and spec.worker.image_pull_policy == "IfNotPresent"
    assert spec.run_policy.backoff_limit == 3 and spec.run_policy.clean_pod_policy == "Running"
    assert spec.run_policy.ttl_seconds_after_finished is None and not spec.run_policy.suspend
    assert spec.model.mount_path == "/models"


@pytest.mark.parametrize(
    "parallelism, world, pods, procs",
    [
        ({"cfg": 2, "cpSize": 1, "gpusPerPod": 1}, 2, 2, 1),
        ({"cfg": 2, "cpSize": 4, "gpusPerPod": 8}, 8, 1, 8),
        ({"cfg": 2, "cpSize": 2, "gpusPerPod": 2}, 4, 2, 2),
        ({"cfg": 2, "cpSize": 3, "gpusPerPod": 0}, 6, 6, 1),  # CPU-only: one process per pod
    ],
)
def test_gang_size_follows_parallelism(parallelism, world, pods, procs):
    spec = parse_spec(spec_with(parallelism=parallelism))
    assert (spec.parallelism.world_size, spec.parallelism.pods, spec.parallelism.procs_per_pod) == (world, pods, procs)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"generation": {"frames": 80}}, "spec.generation.frames: must be 4k+1"),
        ({"generation": {"height": 100}}, "spec.generation.height"),
        ({"flexCache": {"cacheRatio": 1.5}}, "spec.flexCache.cacheRatio"),
        ({"flexCache": {"strategy": "foo"}}, "spec.flexCache.strategy"),
        ({"output": {"uri": "http://x"}}, "spec.output.uri: must look like s3://bucket/prefix"),
        ({"output": {"uri": "s3://ab/x"}}, "spec.output.uri: must look like s3://bucket/prefix (a bucket of 3-63"),
        (
            {"output": {"uri": "s3://videos", "endpoint": "s3.local:8333"}},
            "spec.output.endpoint: must be an http(s) URL",
        ),
        ({"model": {"uri": "models/wan"}}, "spec.model.uri: must be an absolute path"),
        ({"parallelism": {"cfg": 1, "cpSize": 3, "gpusPerPod": 2}}, "spec.parallelism.gpusPerPod: world size"),
        (
            {"generation": {"steps": 4}, "flexCache": {"strategy": "pab", "warmup": 2, "cooldown": 2}},
            "spec.flexCache: warmup + cooldown (2 + 2) must be less than generation.steps (4)",
        ),
        ({"prompts": ["a"]}, "spec.prompts: exactly one of spec.prompt or spec.prompts"),
        ({"prompt": "  "}, "spec.prompt: must be a non-empty text"),
        ({"prompt": ""}, "spec.prompt: must be a non-empty text"),
        ({"prompt": None, "prompts": ["a", " "]}, "spec.prompts[1]: must be a non-empty text"),
        ({"prompt": None, "prompts": []}, "spec.prompts: must hold at least one prompt"),
        (
            {"flexCache": {"strategy": "ditango"}},
            "spec.parallelism.cpSize: FlexCache strategy 'ditango' needs ring "
            "attention over at least 2 ranks, but cp_size 1 with up_limit 8",
        ),
        # the case: cpSize 2 with the default upLimit 8 is Ulysses 2 x ring 1
        (
            {"flexCache": {"strategy": "ditango"}, "parallelism": {"cpSize": 2}},
            "spec.parallelism.upLimit: FlexCache strategy 'ditango' needs ring attention over at least 2 ranks, but "
            "cp_size 2 with up_limit 8 gives ulysses 2 x ring 1",
        ),
        (
            {"flexCache": {"strategy": "ditango"}, "parallelism": {"cpSize": 4, "upLimit": 4}},
            "spec.parallelism.upLimit",
        ),
        (
            {"worker": {"image": "w", "env": [{"name": "A", "value": "1"}, {"name": "WORLD_SIZE", "value": "9"}]}},
            "spec.worker.env[1].name: WORLD_SIZE is set by the operator",
        ),
        ({"runPolicy": {"cleanPodPolicy": "Some"}}, "spec.runPolicy.cleanPodPolicy"),
    ],
)
def test_invalid_specs_name_the_field(changes, field):
    with pytest.raises(InvalidSpec) as err:
        parse_spec(spec_with(**changes))
    assert str(err.value).startswith(field) and str(err.value).startswith(f"{err.value.field}: ")


def test_what_a_cluster_needs_is_named_when_neither_job_nor_platform_gives_it():
    with pytest.raises(
        InvalidSpec,
        match=r"^spec\.worker\.image: not set by the job, and the platform has no "
        r"default \(chart value jobDefaults\.worker\.image\)",
    ):
        parse_spec({key: value for key, value in MINIMAL.items() if key != "worker"})
    with pytest.raises(InvalidSpec, match=r"^spec\.output\.uri: not set .* jobDefaults\.output\.uri"):
        parse_spec({key: value for key, value in MINIMAL.items() if key != "output"})
    assert parse_spec({"model": {"uri": "/m"}, "prompt": "a"}, require_worker=False).output is None


def test_unknown_fields_are_ignored_for_forward_compatibility():
    assert parse_spec(spec_with(futureField={"x": 1})).prompt_list == ("a cat",)


@pytest.mark.parametrize(
    "parallelism",
    [{"cpSize": 2, "upLimit": 1}, {"cpSize": 4, "upLimit": 2}, {"cfg": 2, "cpSize": 3, "upLimit": 1, "gpusPerPod": 2}],
)
def test_ditango_runs_where_the_layout_gives_a_ring(parallelism):
    assert parse_spec(spec_with(flexCache={"strategy": "ditango"}, parallelism=parallelism)).flex_cache.strategy


def test_validating_a_spec_imports_neither_torch_nor_kopf():
    """Admission-time validation is cheap everywhere: the operator image has no torch, the CLI starts fast."""
    script = (
        "import sys, time; start = time.perf_counter(); from chitu_api.generationjob import parse_spec, "
        "InvalidSpec\ntry:\n    parse_spec({'model': {'uri': '/m'}, 'prompt': 'a', 'worker': {'image': 'w'}, "
        "'output': {'uri': 's3://videos'}, 'flexCache': {'strategy': 'ditango'}, 'parallelism': {'cpSize': 2}})"
        "\nexcept InvalidSpec as err:\n    print(err.field)\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'kopf', 'kubernetes') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["spec.parallelism.upLimit", "[]"]
