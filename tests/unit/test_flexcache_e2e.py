"""TeaCache and PAB through the engine: a readable mp4 and metrics that show reuse, on the tiny model."""

import json

import imageio.v3 as iio
import pytest
import torch

from chitu_diffusion.task import DiffusionUserParams, FlexCacheParams

STEPS = 6


def request(strategy: str, cache_ratio: float) -> DiffusionUserParams:
    return DiffusionUserParams(
        prompt="A cat walking on grass",
        num_inference_steps=STEPS,
        num_frames=9,
        height=64,
        width=64,
        seed=0,
        flexcache_params=FlexCacheParams(strategy=strategy, cache_ratio=cache_ratio, warmup=1, cooldown=1),
    )


@pytest.mark.parametrize("strategy", ["teacache", "pab"])
def test_generates_a_video_and_reports_reuse(tiny_pipeline, tmp_path, strategy):
    result = tiny_pipeline.generate(request(strategy, 0.5), tmp_path)
    assert iio.imread(result.video_path).shape == (9, 64, 64, 3)
    cache = json.loads(result.metrics_path.read_text())["cache"]
    assert cache["strategy"] == strategy
    assert cache["summary"]["reuse_fraction"] > 0
    assert cache["extra_memory_bytes"] > 0
    by_step = {s["step"]: s for s in cache["summary"]["per_step"]}
    assert by_step[0]["reused"] == by_step[STEPS - 1]["reused"] == 0  # warmup and cooldown
    assert cache["ratio"]["cache_ratio"] == 0.5


@pytest.mark.parametrize("strategy", ["teacache", "pab"])
def test_ratio_zero_matches_no_cache_through_the_engine(tiny_pipeline, strategy):
    plain = tiny_pipeline.sample(request("none", 0.5)).latents
    cached = tiny_pipeline.sample(request(strategy, 0.0))
    assert torch.equal(cached.latents, plain)
    assert cached.cache["summary"]["units_reused"] == 0
