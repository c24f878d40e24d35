"""Distributed benchmark: CFG parallelism, Ulysses / ring context parallelism and DiTango on a 2-GPU host.

The Wan2.1-T2V-1.3B transformer with RANDOM bf16 weights (seed 0, identical on both ranks), 81x480x832 (32760
tokens), 50 steps, CFG 5. Only the transformer denoising loop is timed: text encoder and VAE are excluded, and
every mode gets the same random text embeddings and the same seeded noise. Run under torchrun with NCCL:

    torchrun --nproc-per-node 2 bench/bench_distributed.py --out bench/results/distributed_h100x2.json
    torchrun --nproc-per-node 2 bench/bench_distributed.py --steps 3 --frames 5 --height 128 --width 128 \
        --out /tmp/distributed_smoke.json                                   # smoke: seconds, not minutes
    torchrun --nproc-per-node 2 bench/bench_distributed.py --cache-ratios 0.3,0.5,0.7 --out ...   # DiTango sweep

On the device (no packages there beyond torch): carry `.whl`, then before torchrun
`python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.`
(FA3 from `.whl` makes `--kernel auto` pick it; without it auto is torch SDPA / cuDNN).

Modes (`--modes`, comma-separated):
- stock-1gpu: diffusers' forward loop as shipped (WanAttnProcessor, SDPA/cuDNN), rank 0 alone, 2 forwards/step.
- ours-1gpu: our self-attention processor with `--kernel`, rank 0 alone (the single-device engine's attention).
- cfg2: CFG parallelism, cond on GPU 0 and uncond on GPU 1, predictions all-gathered each step.
- ulysses2 / ring2: context parallelism over 2 GPUs (both CFG branches on each rank, one after the other).
- ditango2: ring2 plus DiTango, once per `--cache-ratios` entry (result keys `ditango2-r<ratio>`); reported with
  rel-L2 against ring2 (its full compute).
rel_l2_vs_stock compares every mode's final latents with stock-1gpu's. `--compile` applies regional compile of the
transformer blocks to all of our modes (stock stays as shipped; run it first, it is compiled in place after).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from benchlib import commit, rel_l2
from diffusers import UniPCMultistepScheduler

from chitu_diffusion.attention.kernels import get_kernel, resolve_backend
from chitu_diffusion.attention.processor import restore_self_attention, set_self_attention
from chitu_diffusion.compile_cache import compile_blocks
from chitu_diffusion.engines.parallelize import parallelized
from chitu_diffusion.metrics import StageTimer, versions
from chitu_diffusion.models.adapter import adapter_for
from chitu_diffusion.models.random_init import WAN21_SCHEDULER, build_wan21_1_3b_transformer
from chitu_diffusion.parallel.degrees import ParallelLayout
from chitu_diffusion.parallel.groups import build_groups
from chitu_diffusion.parallel.launch import DistributedEnv, init_distributed
from chitu_diffusion.pipeline import denoise, guided_noise, transformer_noise_predictor
from chitu_diffusion.task import FlexCacheParams

MODES = ("stock-1gpu", "ours-1gpu", "cfg2", "ulysses2", "ring2", "ditango2")
LAYOUTS = {"cfg2": (1, 8), "ulysses2": (2, 8), "ring2": (2, 1), "ditango2": (2, 1)}  # (cp_size, up_limit)
TEXT_TOKENS, TEXT_DIM = 512, 4096


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def inputs(args, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Seeded noise (1, 16, F', H/8, W/8) fp32 and random text embeddings (1, 512, 4096) bf16 per branch."""
    generator = torch.Generator().manual_seed(0)
    shape = (1, 16, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    latents = torch.randn(shape, generator=generator).to(device)
    embeds = {
        branch: torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=generator).to(device, torch.bfloat16)
        for branch in ("cond", "uncond")
    }
    return latents, embeds


@torch.no_grad()
def timed_loop(transformer, args, device, guide_for, strategy=None) -> tuple[torch.Tensor, float]:
    """Warm up (`--warmup-steps`, untimed), then the timed denoising loop; returns (latents, seconds). The FlexCache
    `strategy` forgets the warmup between the two (cached states, plan, decision log), as between requests."""
    latents, embeds = inputs(args, device)
    guide = guide_for(transformer_noise_predictor(transformer, embeds))
    if args.warmup_steps:
        denoise(latents, UniPCMultistepScheduler(**WAN21_SCHEDULER), args.warmup_steps, guide, StageTimer(device))
        if strategy is not None:
            strategy.reset()
    timer = StageTimer(device)
    with timer.stage("denoise"):
        out = denoise(latents, UniPCMultistepScheduler(**WAN21_SCHEDULER), args.steps, guide, timer)
    return out, timer.stages["denoise"]


@contextmanager
def engine_attention(transformer, args, device):
    """Our self-attention kernel, installed as the engine installs it (Engine._configure_transformer); context
    parallelism then wraps this same kernel, and CFG parallelism (cp 1) runs it as is."""
    adapter = adapter_for(transformer)
    kernel = get_kernel(resolve_backend(args.kernel, device, transformer.dtype))
    previous = set_self_attention(transformer, adapter.blocks_attr, adapter.self_attention_attr, kernel)
    try:
        yield
    finally:
        restore_self_attention(transformer, adapter.blocks_attr, adapter.self_attention_attr, previous)


def run_mode(mode: str, transformer, args, device, rank: int, cache_ratio: float = 0.0) -> dict | None:
    """One mode on this rank; the result (latents, seconds, ...) on the ranks that ran it, None elsewhere."""
    single_guide = lambda predict: lambda x, step: guided_noise(predict, args.guidance_scale, x, step)  # noqa: E731
    torch.cuda.reset_peak_memory_stats()
    if mode == "stock-1gpu":
        if rank != 0:
            return None
        latents, seconds = timed_loop(transformer, args, device, single_guide)
        return {"latents": latents, "seconds": seconds}
    if mode == "ours-1gpu":
        if rank != 0:
            return None
        with engine_attention(transformer, args, device):
            if args.compile:
                compile_blocks(transformer.blocks, fullgraph=False)  # as Engine._configure_transformer does
            latents, seconds = timed_loop(transformer, args, device, single_guide)
        return {"latents": latents, "seconds": seconds}
    cp_size, up_limit = LAYOUTS[mode]
    layout = ParallelLayout.resolve(dist.get_world_size(), cp_size, up_limit, transformer.config.num_attention_heads)
    groups = build_groups(layout, device)
    strategy = "ditango" if mode == "ditango2" else "none"
    cache = FlexCacheParams(strategy=strategy, cache_ratio=cache_ratio)
    options = dict(cache=cache, backend=args.kernel, compile=args.compile)
    with (
        engine_attention(transformer, args, device),
        parallelized(transformer, adapter_for(transformer), groups, **options) as par,
    ):
        guide_for = lambda predict: par.guide(predict, args.guidance_scale)  # noqa: E731
        latents, seconds = timed_loop(transformer, args, device, guide_for, par.strategy)
        summary = par.strategy.log.summary()
        return {
            "latents": latents,
            "seconds": seconds,
            "layout": layout.describe(),
            "reuse_fraction": summary["reuse_fraction"],
            "cache": par.strategy.describe_ratio(),
            "extra_memory_bytes": par.strategy.extra_memory_bytes(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument(
        "--warmup-steps", type=int, default=4,
        help="untimed steps before each mode's timed loop (4 reach a DiTango anchor that measures, so every fused "
        "kernel is compiled before timing)",
    )  # fmt: skip
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--cache-ratios", default="0.5", help="DiTango's cache_ratio values, comma-separated")
    parser.add_argument("--compile", action="store_true", help="regional compile of the blocks in our modes")
    parser.add_argument("--kernel", default="auto", help="attention kernel of our modes (attention.kernels names)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    env = DistributedEnv.from_env()
    if env is None or env.world_size != 2:
        raise SystemExit("run under torchrun --nproc-per-node 2")
    device = init_distributed(env, "cuda")
    torch.manual_seed(0)
    transformer = build_wan21_1_3b_transformer(torch.bfloat16, str(device)).requires_grad_(False)
    for tensor in transformer.state_dict().values():  # the same random weights on both ranks
        dist.broadcast(tensor, src=0)

    tokens = ((args.frames - 1) // 4 + 1) * (args.height // 16) * (args.width // 16)
    results: dict = {
        "benchmark": "wan2.1-t2v-1.3b transformer denoising loop: CFG / Ulysses / ring / DiTango on 2 GPUs",
        "weights": "random (seed 0), bf16",
        "excluded": "text encoder and VAE (every mode gets the same random 512-token embeddings and seeded noise)",
        "card": torch.cuda.get_device_name(device),
        "gpus": env.world_size,
        "torch": torch.__version__,
        "versions": versions(),
        "commit": commit(),
        "kernel": resolve_backend(args.kernel, device, torch.bfloat16),
        "shapes": {
            "frames": args.frames,
            "height": args.height,
            "width": args.width,
            "tokens": tokens,
            "steps": args.steps,
            "guidance_scale": args.guidance_scale,
            "forwards_per_video": 2 * args.steps,
        },
        "modes": {},
    }
    if args.compile:
        torch._dynamo.config.recompile_limit = 64  # one graph per mode's processors: never fall back to eager
    results["compile"] = args.compile
    runs = []  # (result key, mode, cache_ratio)
    for mode in args.modes.split(","):
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        if mode == "ditango2":
            runs += [(f"ditango2-r{float(r):g}", mode, float(r)) for r in args.cache_ratios.split(",")]
        else:
            runs.append((mode, mode, 0.0))
    kept: dict[str, torch.Tensor] = {}
    for key, mode, cache_ratio in runs:
        start = time.perf_counter()
        result = run_mode(mode, transformer, args, device, env.rank, cache_ratio)
        dist.barrier()
        if env.rank != 0 or result is None:
            continue
        latents = result.pop("latents")
        entry = {**result, "s_per_step": result["seconds"] / args.steps}
        entry["wall_with_warmup_s"] = time.perf_counter() - start
        entry["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
        if "stock-1gpu" in kept:
            entry["rel_l2_vs_stock"] = rel_l2(latents, kept["stock-1gpu"])
            entry["speedup_vs_stock"] = results["modes"]["stock-1gpu"]["seconds"] / result["seconds"]
        if "ours-1gpu" in kept and mode != "ours-1gpu":
            entry["speedup_vs_ours_1gpu"] = results["modes"]["ours-1gpu"]["seconds"] / result["seconds"]
        if mode == "ditango2" and "ring2" in kept:
            entry["rel_l2_vs_full_compute"] = rel_l2(latents, kept["ring2"])
            entry["speedup_vs_full_compute"] = results["modes"]["ring2"]["seconds"] / result["seconds"]
        results["modes"][key] = entry
        kept[key] = latents
        brief = {k: v for k, v in entry.items() if k != "cache"}
        print(f"{key}: {result['seconds']:.2f} s", json.dumps(brief), flush=True)
        write_results(args.out, results)  # after every mode: a run cut short keeps what it measured
    if env.rank == 0:
        print(json.dumps(results, indent=2))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
