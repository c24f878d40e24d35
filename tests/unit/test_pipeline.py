"""The single-device engine on the tiny model: files, metrics, determinism, CFG branches, FlexCache lifecycle."""

import json
import os

import numpy as np
import pytest
import torch
from diffusers.hooks import HookRegistry
from torch._inductor.virtualized import V

from chitu_diffusion.attention.processor import WanCrossAttnProcessor, WanSelfAttnProcessor
from chitu_diffusion.compile_cache import CHOICES_FOLDER, INDUCTOR_CACHE_ENV
from chitu_diffusion.config import ConfigError, EngineConfig
from chitu_diffusion.engines import generate, load_engine
from chitu_diffusion.engines.single import Engine
from chitu_diffusion.flex_cache.registry import requires_ring_attention, strategy_names
from chitu_diffusion.flex_cache.strategy import none as no_cache_traits
from chitu_diffusion.fused.row_reductions import WideRowChoices
from chitu_diffusion.models.random_init import build_random_pipeline
from chitu_diffusion.parallel.degrees import LayoutError, ParallelLayout
from chitu_diffusion.pipeline import decode_latent_chunks, decode_latents
from chitu_diffusion.task import DiffusionUserParams
from chitu_diffusion.video import read_mp4

STEPS = 3
SINGLE_DEVICE_STRATEGIES = [s for s in strategy_names() if not requires_ring_attention(s)]


def request(**overrides) -> DiffusionUserParams:
    fields = dict(prompt="A cat walking on grass", num_frames=9, height=32, width=48, num_inference_steps=STEPS, seed=7)
    return DiffusionUserParams(**{**fields, **overrides})


def hook_names(transformer: torch.nn.Module) -> list[str]:
    """Every hook registered anywhere in `transformer`."""
    names = []
    for module in transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if isinstance(registry, HookRegistry):
            names += list(registry.hooks)
    return names


def test_generate_writes_video_and_metrics(tiny_pipeline, tmp_path):
    steps_seen = []
    result = tiny_pipeline.generate(request(fps=8), tmp_path, name="cat", on_step=lambda *s: steps_seen.append(s))
    assert steps_seen == [(i, STEPS) for i in range(1, STEPS + 1)]
    assert result.video_path == tmp_path / "cat.mp4" and result.metrics_path == tmp_path / "metrics.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.mp4", "metrics.json"]  # no partial files
    video = read_mp4(result.video_path)
    assert (video.num_frames, video.height, video.width, video.fps) == (9, 32, 48, 8.0)

    metrics = json.loads(result.metrics_path.read_text())
    assert metrics == json.loads(json.dumps(result.metrics, default=str))
    assert set(metrics["timings_s"]) == {"text_encode", "denoise", "decode", "encode_mp4", "total"}
    assert all(t > 0 for t in metrics["timings_s"].values())
    assert len(metrics["dit_step_s"]) == STEPS and sum(metrics["dit_step_s"]) <= metrics["timings_s"]["denoise"]
    assert metrics["peak_memory"]["kind"] == "process_peak_rss" and metrics["peak_memory"]["bytes"] > 0
    assert metrics["params"] == request(fps=8).model_dump(mode="json")
    assert metrics["engine_config"] == tiny_pipeline.config.model_dump(mode="json")
    assert metrics["runtime"] == {
        "device": "cpu",
        "dtype": "float32",
        "attention_backend": "sdpa",
        "precision": "bf16",
        "compiled": False,
    }
    assert metrics["model"]["variant"] == "wan2.1-custom" and metrics["model"]["load_s"] > 0
    assert (metrics["seed"], metrics["seed_source"]) == (7, "request")
    assert {"torch", "diffusers", "transformers"} <= set(metrics["versions"])
    assert metrics["output"]["num_frames"] == 9
    cache = metrics["cache"]
    assert cache["strategy"] == "none" and cache["extra_memory_bytes"] == 0 and cache["visualisations"] == []
    assert cache["summary"]["units_computed"] == 2 * STEPS and cache["summary"]["reuse_fraction"] == 0.0
    assert [s["step"] for s in cache["summary"]["per_step"]] == list(range(STEPS))


def test_same_seed_same_latents_and_frames(tiny_pipeline, tmp_path):
    assert torch.equal(tiny_pipeline.sample(request()).latents, tiny_pipeline.sample(request()).latents)
    first = tiny_pipeline.generate(request(), tmp_path / "a")
    second = tiny_pipeline.generate(request(), tmp_path / "b")
    assert (read_mp4(first.video_path).frames == read_mp4(second.video_path).frames).all()
    assert not torch.equal(tiny_pipeline.sample(request(seed=8)).latents, tiny_pipeline.sample(request()).latents)


def test_matches_diffusers_wan_pipeline_bitwise(tiny_pipeline):
    """Our loop is WanPipeline's loop with seams: with no cache the latents are the same bits."""
    ours = tiny_pipeline.sample(request(guidance_scale=4.0)).latents
    theirs = tiny_pipeline.pipe(
        "A cat walking on grass",
        height=32,
        width=48,
        num_frames=9,
        num_inference_steps=STEPS,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(7),
        output_type="latent",
    ).frames
    assert torch.equal(ours, theirs)


def test_chunked_decode_is_diffusers_decode(tiny_pipeline):
    """generate decodes latent frame by latent frame (for the mp4 encoder to start early): the same bits as
    diffusers' whole `vae.decode`, whose loop it follows."""
    latents = tiny_pipeline.sample(request()).latents
    chunks = list(decode_latent_chunks(tiny_pipeline.pipe, latents))
    assert [len(chunk) for chunk in chunks] == [1, 4, 4]  # 9 frames: 1, then 4 per latent frame
    assert np.array_equal(np.concatenate(chunks), decode_latents(tiny_pipeline.pipe, latents))


def test_random_seed_is_recorded(tiny_pipeline, tmp_path):
    metrics = tiny_pipeline.generate(request(seed=None), tmp_path).metrics
    assert metrics["seed_source"] == "random" and isinstance(metrics["seed"], int)
    replay = tiny_pipeline.sample(request(seed=metrics["seed"]))
    assert torch.equal(replay.latents, tiny_pipeline.sample(request(seed=metrics["seed"])).latents)


@pytest.mark.parametrize("guidance_scale", [1.0, 0.0])
def test_no_guidance_runs_only_the_cond_branch(tiny_pipeline, guidance_scale):
    calls = []
    handle = tiny_pipeline.transformer.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        sample = tiny_pipeline.sample(request(guidance_scale=guidance_scale))
    finally:
        handle.remove()
    assert len(calls) == STEPS
    assert {d["branch"] for d in sample.cache["summary"]["decisions"]} == {"cond"}


def test_cfg_runs_both_branches(tiny_pipeline):
    decisions = tiny_pipeline.sample(request(guidance_scale=5.0)).cache["summary"]["decisions"]
    assert [d["branch"] for d in decisions] == ["cond", "uncond"] * STEPS


@pytest.mark.parametrize("strategy", SINGLE_DEVICE_STRATEGIES)
def test_strategy_hooks_are_removed_after_each_request(tiny_pipeline, strategy):
    params = request(num_inference_steps=5, flexcache_params=dict(strategy=strategy, cache_ratio=1.0))
    tiny_pipeline.sample(params)
    assert hook_names(tiny_pipeline.transformer) == []


def test_hooks_are_removed_when_a_request_fails(tiny_pipeline):
    def cancel(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiny_pipeline.sample(request(), on_step=cancel)
    assert hook_names(tiny_pipeline.transformer) == []


@pytest.mark.parametrize("strategy", SINGLE_DEVICE_STRATEGIES)
def test_cache_ratio_zero_equals_no_cache(tiny_pipeline, strategy):
    reference = tiny_pipeline.sample(request(num_inference_steps=6)).latents
    cached = request(num_inference_steps=6, flexcache_params=dict(strategy=strategy, cache_ratio=0.0))
    assert torch.equal(tiny_pipeline.sample(cached).latents, reference)


def test_ring_attention_strategy_fails_before_any_work(tiny_pipeline, tmp_path, monkeypatch):
    """The trait in the strategy's folder decides, through the same check a gang runs (one process = ring 1)."""
    monkeypatch.setattr(no_cache_traits, "REQUIRES_RING_ATTENTION", True)
    expected = r"FlexCache strategy 'none' needs ring attention over at least 2 ranks, but cp_size 1 .* ring 1"
    with pytest.raises(LayoutError, match=expected):
        tiny_pipeline.generate(request(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(LayoutError, match="FlexCache strategy 'ditango' needs ring attention"):
        tiny_pipeline.sample(request(flexcache="ditango"))


def test_cp_size_above_one_needs_torchrun(tiny_model_dir):
    with pytest.raises(ConfigError, match=r"infer.diffusion.cp_size=2 .*torchrun.*world size = cfg degree x cp_size"):
        Engine.load(tiny_model_dir, EngineConfig.from_overrides(["infer.diffusion.cp_size=2"]))


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden"])
def test_name_must_be_a_plain_file_stem(tiny_pipeline, tmp_path, name):
    with pytest.raises(ValueError, match="plain file name"):
        tiny_pipeline.generate(request(), tmp_path, name=name)


@pytest.fixture
def inductor_choices():
    """The engine installs its inductor choices for the process; put back what was there after the test."""
    previous = V.choices
    yield
    V.set_choices_handler(previous)


def test_compile_and_attention_backend_settings(monkeypatch, tmp_path, inductor_choices):
    compiled = []
    pipe = build_random_pipeline()
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append((type(self).__name__, kw)))
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, str(tmp_path / "inductor-cache-before-the-engine"))  # restored after
    settings = [
        "infer.diffusion.compile=true",
        "infer.diffusion.attention_backend=math",
        f"infer.diffusion.compile_cache_dir={tmp_path / 'compiled'}",
    ]
    engine = Engine(pipe, EngineConfig.from_overrides(settings))
    assert compiled == [("WanTransformerBlock", {"fullgraph": False})] * len(pipe.transformer.blocks)
    assert os.environ[INDUCTOR_CACHE_ENV] == str(tmp_path / "compiled" / CHOICES_FOLDER)
    assert (tmp_path / "compiled" / CHOICES_FOLDER).is_dir()
    assert isinstance(V.choices, WideRowChoices)  # the kernels that folder holds are built with these choices
    assert not torch._dynamo.config.caching_precompile  # on only while the engine compiles its own blocks
    assert not Engine(build_random_pipeline(), EngineConfig()).compile  # unset: off on CPU
    assert engine.attention_backend == "math"
    assert all(type(block.attn1.processor) is WanSelfAttnProcessor for block in pipe.transformer.blocks)
    assert all(type(block.attn2.processor) is WanCrossAttnProcessor for block in pipe.transformer.blocks)
    with pytest.raises(ConfigError, match=r"infer\.diffusion\.attention_backend"):
        EngineConfig.from_overrides(["infer.diffusion.attention_backend=warp-drive"])
    with pytest.raises(ConfigError, match="fa3 needs a CUDA GPU"):
        Engine(build_random_pipeline(), EngineConfig.from_overrides(["infer.diffusion.attention_backend=fa3"]))


def test_math_attention_backend_matches_default():
    """The pluggable self- and cross-attention processors change the kernel, not the model: same video within fp32
    noise (sdpa keeps diffusers' own processors, so this compares ours against them)."""
    math_config = EngineConfig.from_overrides(["infer.diffusion.attention_backend=math"])
    math_engine = Engine(build_random_pipeline(), math_config)
    default_engine = Engine(build_random_pipeline())
    assert default_engine.attention_backend == "sdpa"
    assert type(default_engine.transformer.blocks[0].attn2.processor) is not WanCrossAttnProcessor
    assert type(math_engine.transformer.blocks[0].attn2.processor) is WanCrossAttnProcessor
    reference = default_engine.sample(request(flexcache=None)).latents
    latents = math_engine.sample(request(flexcache=None)).latents
    assert (latents - reference).norm() / reference.norm() < 1e-5


def test_python_api_generate(tiny_model_dir, tmp_path):
    config = ["infer.diffusion.device=cpu"]
    result = generate(tiny_model_dir, request().model_dump(), tmp_path, name="api", engine_config=config)
    assert result.video_path.name == "api.mp4" and result.metrics["model"]["dir"] == str(tiny_model_dir)


def test_seed_api_and_load_engine_share_one_path(tiny_model_dir):
    """`Engine.load` (the seed's API) is `load_engine`: outside a gang both give the single-process engine."""
    config = EngineConfig.from_overrides(["infer.diffusion.device=cpu"])
    for engine in (Engine.load(tiny_model_dir, config), load_engine(tiny_model_dir, config)):
        assert type(engine) is Engine and engine.layout == ParallelLayout() and engine.model_dir == tiny_model_dir


def test_fp8_precision_check_reports_the_distance_to_bf16(tmp_path):
    """FP8 on CPU runs the reference math of the Hopper kernels (precision/); the check reruns the request in bf16."""
    engine = Engine(
        build_random_pipeline(),
        EngineConfig.from_overrides(["infer.diffusion.precision=fp8", "infer.diffusion.precision_check=true"]),
    )
    result = engine.generate(request(), tmp_path)
    check = result.metrics["precision_check"]
    assert result.metrics["runtime"]["precision"] == "fp8"
    assert 0 < check["rel_l2_latents"] < 0.5 and check["psnr_db_frames"] > 10
    plain = Engine(build_random_pipeline(), EngineConfig()).generate(request(), tmp_path / "bf16")
    assert "precision_check" not in plain.metrics
