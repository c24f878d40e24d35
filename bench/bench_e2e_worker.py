"""One mode of bench_e2e.py, run in its own process (the driver starts one per mode, under torchrun for 2 GPUs).

Writes the mode's JSON (stages, loop seconds, peak memory, versions) to --out and its final latents and frames
next to it for the driver's rel-L2 / PSNR. Only rank 0 writes; every rank runs the whole video.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from bench_e2e import CACHE_DIT_LAYOUTS, CHITU_CACHES, CHITU_OVERRIDES, NEGATIVE, PROMPT, chitu_cache_dir
from benchlib import commit

from chitu_diffusion.metrics import StageTimer, versions
from chitu_diffusion.pipeline import decode_latents, encode_text, initial_noise
from chitu_diffusion.video import write_mp4

FPS = 16
SEED = 0


def run_worker(args: argparse.Namespace) -> None:
    mode = args.worker
    model_dir = args.work_dir / f"model-{args.arch}"
    videos_dir = args.work_dir / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    if mode.startswith("chitu"):
        result, latents, frames = run_chitu(args, mode, model_dir, videos_dir)
    else:
        result, latents, frames = run_diffusers(args, mode, model_dir, videos_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        stem = args.work_dir / mode
        torch.save(latents.float().cpu(), f"{stem}.latents.pt")
        np.save(f"{stem}.frames.npy", frames)
        result.update(
            mode=mode,
            commit=commit(),
            versions=all_versions(),
            latents_file=f"{stem}.latents.pt",
            frames_file=f"{stem}.frames.npy",
        )
        args.out.write_text(json.dumps(result, indent=2, default=str))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_versions() -> dict:
    found = versions()
    for package in ("cache-dit", "fa3-fwd"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def device_here() -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


# ------------------------------------------------------------------------------------------- diffusers peers


def run_diffusers(args: argparse.Namespace, mode: str, model_dir: Path, videos_dir: Path):
    """WanPipeline's own denoising loop (prompt embeddings and noise given, so every mode starts alike)."""
    from diffusers import WanPipeline

    device = device_here()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    timer = StageTimer(device)
    with timer.stage("load"):
        pipe = WanPipeline.from_pretrained(model_dir, torch_dtype=dtype, local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    settings = configure_peer(pipe.transformer, mode)
    warm_start = time.perf_counter()
    if args.warmup_steps:
        with torch.no_grad():
            diffusers_video(pipe, args, args.warmup_steps, StageTimer(device), videos_dir / f"{mode}-warmup.mp4")
    warmup_s = time.perf_counter() - warm_start
    reset_peak(device)
    with torch.no_grad(), timer.stage("total"):
        latents, frames = diffusers_video(pipe, args, args.steps, timer, videos_dir / f"{mode}.mp4")
    stages = dict(timer.stages)
    stages["total"] += stages["load"]  # a fresh process: load + one video
    return (
        {
            "stages_s": stages,
            "loop_s": stages["denoise"],
            "warmup_s": warmup_s,
            "peak_memory_bytes": peak(device),
            "settings": settings,
        },
        latents,
        frames,
    )


def configure_peer(transformer: torch.nn.Module, mode: str) -> dict:
    """What a user of each peer would write to make it fast (see the module docstring of bench_e2e)."""
    if mode == "stock":
        return {"attention": "diffusers default (SDPA)", "compile": False}
    if mode == "tuned":
        transformer.set_attention_backend("_flash_3")
        transformer.compile_repeated_blocks(fullgraph=True)
        return {
            "attention": "_flash_3 (fa3-fwd through the flash_attn_interface shim)",
            "compile": "repeated blocks, fullgraph",
        }
    import cache_dit

    layout = CACHE_DIT_LAYOUTS[mode]
    parallelism = cache_dit.ParallelismConfig(**layout) if layout else None
    # No cache_config: cache-dit runs every block (exact), so this is its no-cache speed, like ours.
    cache_dit.enable_cache(transformer, attention_backend="_sdpa_cudnn", parallelism_config=parallelism)
    transformer.compile_repeated_blocks(fullgraph=False)  # its hooks and all-to-alls break graphs
    return {"attention": "_sdpa_cudnn", "parallelism": layout, "compile": "repeated blocks"}


def diffusers_video(pipe, args: argparse.Namespace, steps: int, timer: StageTimer, path: Path):
    device = pipe.transformer.device
    with timer.stage("text_encode"):
        embeds = encode_text(pipe, PROMPT, NEGATIVE, args.guidance_scale > 1, device)
    noise = initial_noise(pipe, args.frames, args.height, args.width, SEED, device)
    with timer.stage("denoise"):
        latents = pipe(
            prompt_embeds=embeds["cond"],
            negative_prompt_embeds=embeds.get("uncond"),
            latents=noise,
            height=args.height,
            width=args.width,
            num_frames=args.frames,
            num_inference_steps=steps,
            guidance_scale=args.guidance_scale,
            output_type="latent",
            return_dict=False,
        )[0]
    with timer.stage("decode"):
        frames = decode_latents(pipe, latents)
    with timer.stage("encode_mp4"):
        write_mp4(frames, path, FPS)
    return latents, frames


# ------------------------------------------------------------------------------------------------------ chitu


def run_chitu(args: argparse.Namespace, mode: str, model_dir: Path, videos_dir: Path):
    """`load_engine(...).generate(...)` exactly as a user calls it; the bench only keeps the sample's latents."""
    import chitu_diffusion.engines.single  # noqa: F401  imports out of the load time, as for the peers
    from chitu_diffusion.config import EngineConfig
    from chitu_diffusion.engines import load_engine
    from chitu_diffusion.task import DiffusionUserParams, FlexCacheParams

    overrides = [*CHITU_OVERRIDES[mode], f"infer.diffusion.compile_cache_dir={chitu_cache_dir(args.work_dir)}"]
    if not torch.cuda.is_available():
        overrides.append("infer.diffusion.device=cpu")
    started = time.perf_counter()
    engine = load_engine(model_dir, EngineConfig.from_overrides(overrides))
    load_s = time.perf_counter() - started
    samples = []
    sample = engine.sample
    engine.sample = lambda *a, **k: samples.append(sample(*a, **k)) or samples[-1]  # keep the latents
    strategy, cache_ratio = CHITU_CACHES.get(mode, ("none", 0.0))
    cache = FlexCacheParams(strategy=strategy, cache_ratio=cache_ratio)
    params = DiffusionUserParams(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        height=args.height,
        width=args.width,
        num_frames=args.frames,
        seed=SEED,
        fps=FPS,
        flexcache_params=cache,
    )
    warmup_s = None
    if mode == "chitu-fp8" and args.warmup_steps:  # as the peers: compile these graphs untimed
        warm_start = time.perf_counter()
        engine.generate(
            params.model_copy(update={"num_inference_steps": args.warmup_steps}), videos_dir, f"{mode}-warmup"
        )
        warmup_s = time.perf_counter() - warm_start
    # The steady state next to the first video of a fresh process; a cache's decisions need compiled variants
    # (compute / reuse) that a short warm-up would not reach, so its first video compiles them.
    videos = 2 if mode == "chitu" or mode in CHITU_CACHES else 1
    memory: list[list[float]] = []  # GiB allocated after each step of each video (host-side counter: no sync)

    def record_memory(done: int, total: int) -> None:
        if done == 1:
            memory.append([])
        if torch.cuda.is_available():
            memory[-1].append(torch.cuda.memory_allocated() / 2**30)
            if done % 10 == 0 or done == total:  # in the log too: a mode that runs out of memory returns no JSON
                print(f"{mode} step {done}/{total}: {memory[-1][-1]:.2f} GiB allocated", file=sys.stderr, flush=True)

    results = [engine.generate(params, videos_dir, f"{mode}-{index}", on_step=record_memory) for index in range(videos)]
    if results[0] is None:  # a gang rank other than 0: it denoised (and decoded its slice); rank 0 reports
        return {}, samples[-1].latents, None
    runs = [result.metrics for result in results]
    first = runs[0]
    stages = {"load": load_s, **first["timings_s"]}
    stages["total"] += load_s
    frames = decode_latents(engine.pipe, samples[-1].latents)
    result = {
        "stages_s": stages,
        "loop_s": runs[-1]["timings_s"]["denoise"],
        "warmup_s": warmup_s,
        "videos": [run["timings_s"] for run in runs],
        "first_steps_s": [run["dit_step_s"][:3] for run in runs],  # where a first video's extra time goes
        "steps_s": runs[-1]["dit_step_s"],  # the last video's steps: a cache's computing and reusing steps
        "peak_memory_bytes": first["peak_memory"]["bytes"],
        "engine_config": first["engine_config"],
        "runtime": first["runtime"],
        "cache": cache_summary(runs[-1].get("cache")),
        "parallel": first.get("parallel"),
        "allocated_gib_per_step": memory,
        "dynamo": dynamo_counts(),
    }
    return result, samples[-1].latents, frames


def dynamo_counts() -> dict:
    """What dynamo compiled in this process: graphs, graph breaks by reason, frames compiled (each recompile is
    one more). A strategy that keeps the blocks compiled adds a few graphs and no break
    (tests/unit/test_flexcache_compile.py); frames at the recompile limit mean later variants ran eagerly (the
    mode's log then holds dynamo's "hit config.recompile_limit" warning; TORCH_LOGS=recompiles says why). A
    fresh process that installed its traced code from the compile cache (compile_cache.py) has dynamo_cache hits
    and no frames."""
    from torch._dynamo import config
    from torch._dynamo.utils import compile_times, counters

    return {
        "compile_times": compile_times(repr="str", aggregate=True),  # dynamo/inductor phases, incl. cache loads
        "unique_graphs": counters["stats"]["unique_graphs"],
        "graph_breaks": dict(counters["graph_break"]),
        "frames": dict(counters["frames"]),
        "recompile_limit": config.recompile_limit,
        "dynamo_cache": dict(counters["dynamo_cache"]),  # traced code installed from the compile cache (hits)
    }


def cache_summary(report: dict | None) -> dict | None:
    """The strategy's report without its per-unit decision log (thousands of records at 50 steps)."""
    if report is None:
        return None
    summary = {k: v for k, v in report["summary"].items() if k not in ("decisions", "per_step")}
    return {**{k: v for k, v in report.items() if k != "summary"}, **summary}
