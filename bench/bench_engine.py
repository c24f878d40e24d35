"""Single-GPU benchmark: stock diffusers vs chitu_diffusion, with and without FlexCache.

One process, one card, the Wan2.1-T2V-1.3B transformer with RANDOM bf16 weights (no weights can be downloaded;
every number here comes from random weights, which matters for the caching strategies: their reuse depends on
how features change across steps). Text encoder and VAE are excluded: both loops get the same text embeddings
and the same seeded noise, and the timed region is the 50-step CFG denoising loop (2 forwards per step).

    python bench/bench_engine.py --out bench/results/engine_h100.json            # 81x480x832, 50 steps
    python bench/bench_engine.py --steps 4 --frames 5 --height 64 --width 64 --out /tmp/smoke.json  # smoke

Modes: `stock` = diffusers' WanTransformer3DModel forward loop as shipped (eager, its default attention, cuDNN
on H100); `chitu-none` = our engine, no cache (regional compile + the fastest exact attention kernel found);
`chitu-<strategy>` = our engine with that strategy at --cache-ratio. rel-L2 is over the final latents.
`chitu-teacache-calibrated`: TeaCache's published polynomials were fitted on the released weights; on random weights
the step-to-step modulation change need not lie where that fit holds, so the bench also fits this model's own polynomial
with `chitu_diffusion.flex_cache.strategy.teacache.calibrate` (as `chitu calibrate-teacache` does) on a smaller
video and reruns.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from benchlib import commit, rel_l2

from chitu_diffusion.config import EngineConfig
from chitu_diffusion.engines.single import Engine
from chitu_diffusion.flex_cache.strategy.teacache.calibrate import calibration_path, fit, record_runs, write_calibration
from chitu_diffusion.metrics import StageTimer, versions
from chitu_diffusion.models.random_init import build_random_pipeline
from chitu_diffusion.pipeline import denoise, encode_text, guided_noise, initial_noise, transformer_noise_predictor
from chitu_diffusion.task import DiffusionUserParams, FlexCacheParams

PROMPT, NEGATIVE = "A cat walking on grass", "blurry, low quality"


def stock_loop(pipe, params: DiffusionUserParams) -> tuple[torch.Tensor, float]:
    """diffusers as shipped: two eager forwards per step, no hooks, no compile."""
    device = pipe.transformer.device
    embeds = encode_text(pipe, params.prompt, params.negative_prompt, True, device)
    latents = initial_noise(pipe, params.num_frames, params.height, params.width, params.seed, device)
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    guide = partial(guided_noise, transformer_noise_predictor(pipe.transformer, embeds), params.guidance_scale)
    timer = StageTimer(device)
    with torch.no_grad(), timer.stage("denoise"):
        latents = denoise(latents, scheduler, params.num_inference_steps, guide, timer)
    return latents, timer.stages["denoise"]


def calibrate_teacache(engine: Engine, request: dict) -> dict:
    """Fit TeaCache's rescale polynomial for this (random) model on a 33x256x448 video, and make the in-memory
    transformer find it where a loaded model's calibration lives (next to its weights)."""
    small = DiffusionUserParams(**{**request, "num_frames": 33, "height": 256, "width": 448})
    calibration = fit(record_runs(engine, [small]), engine.adapter.variant(engine.transformer))
    folder = Path(tempfile.mkdtemp(prefix="chitu-bench-model-"))
    write_calibration(calibration, calibration_path(folder))
    engine.transformer.register_to_config(_name_or_path=str(folder))
    return calibration


def run_mode(engine: Engine, params: DiffusionUserParams) -> tuple[dict, torch.Tensor]:
    """Warm up (compile and any recompile for this strategy's hooks), then time one full denoising loop."""
    warm_start = time.perf_counter()
    engine.sample(params.model_copy(update={"num_inference_steps": 3}))
    warm_s = time.perf_counter() - warm_start
    torch.cuda.reset_peak_memory_stats()
    timer = StageTimer(engine.device)
    sample = engine.sample(params, timer=timer)
    summary = sample.cache["summary"]
    return {
        "seconds": timer.stages["denoise"],
        "s_per_forward": timer.stages["denoise"] / (2 * params.num_inference_steps),
        "warmup_and_compile_s": warm_s,
        "reuse_fraction": summary["reuse_fraction"],
        "units_computed": summary["units_computed"],
        "units_reused": summary["units_reused"],
        "cache_ratio_mapping": sample.cache["ratio"],
        "cache_params": params.cache.model_dump(),
        "extra_memory_bytes": sample.cache["extra_memory_bytes"],
        "peak_memory_bytes": torch.cuda.max_memory_allocated(),
    }, sample.latents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--cache-ratio", type=float, default=0.5)
    parser.add_argument("--strategies", default="teacache,pab")
    parser.add_argument("--attention-backend", default="auto")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = True
    pipe = build_random_pipeline("wan2.1-t2v-1.3b", dtype=torch.bfloat16, device="cuda", seed=0)
    request = dict(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        height=args.height,
        width=args.width,
        num_frames=args.frames,
        seed=0,
    )
    base = DiffusionUserParams(**request)
    results: dict = {
        "benchmark": "wan2.1-t2v-1.3b denoising loop, one GPU",
        "weights": "random (seed 0), bf16; text encoder and VAE excluded",
        "commit": commit(),
        "versions": versions(),
        "shapes": {
            "frames": args.frames,
            "height": args.height,
            "width": args.width,
            "steps": args.steps,
            "guidance_scale": args.guidance_scale,
            "forwards": args.steps * 2,
            "tokens": ((args.frames - 1) // 4 + 1) * (args.height // 16) * (args.width // 16),
        },
        "modes": {},
    }

    stock_latents, stock_s = stock_loop(pipe, base)  # before Engine touches the transformer
    results["modes"]["stock"] = {"seconds": stock_s, "s_per_forward": stock_s / (2 * args.steps)}
    print(f"stock diffusers: {stock_s:.2f} s", flush=True)

    overrides = [
        f"infer.diffusion.attention_backend={args.attention_backend}",
        f"infer.diffusion.compile={not args.no_compile}",
    ]
    engine = Engine(pipe, EngineConfig.from_overrides(overrides))
    results["engine_config"] = engine.config.model_dump(mode="json")
    modes = ["none", *filter(None, args.strategies.split(","))]
    if "teacache" in modes:
        modes.append("teacache-calibrated")
    reference = None
    for mode_name in modes:
        strategy = mode_name.removesuffix("-calibrated")
        if mode_name == "teacache-calibrated":
            results["teacache_calibration"] = calibrate_teacache(engine, request)
        cache = FlexCacheParams(strategy=strategy, cache_ratio=0.0 if strategy == "none" else args.cache_ratio)
        mode, latents = run_mode(engine, DiffusionUserParams(**request, flexcache_params=cache))
        mode["speedup_vs_stock"] = stock_s / mode["seconds"]
        mode["rel_l2_vs_stock"] = rel_l2(latents, stock_latents)
        if reference is None:
            reference = latents
        else:
            mode["rel_l2_vs_chitu_none"] = rel_l2(latents, reference)
            mode["speedup_vs_chitu_none"] = results["modes"]["chitu-none"]["seconds"] / mode["seconds"]
        results["modes"][f"chitu-{mode_name}"] = mode
        print(
            f"chitu {mode_name}: {mode['seconds']:.2f} s ({mode['speedup_vs_stock']:.2f}x stock), "
            f"reuse {mode['reuse_fraction']:.2f}",
            flush=True,
        )
        write(results, args.out)  # after every mode: a later failure keeps what was measured

    print(json.dumps(results["modes"], indent=2))


def write(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
