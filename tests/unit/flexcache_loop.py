"""A tiny Wan2.1 transformer and a fake CFG denoising loop honouring the FlexCache loop contract.

Each transformer call runs inside `transformer.cache_context(branch, step_index=i, num_inference_steps=n,
timestep=t)` with branch "cond" / "uncond", as the engine's loop does, so the hooks are tested on their own,
without text encoder or VAE, in a fraction of a second per run.
"""

from __future__ import annotations

import torch
from diffusers import UniPCMultistepScheduler, WanTransformer3DModel

from chitu_diffusion.flex_cache.base import FlexCacheStrategy
from chitu_diffusion.flex_cache.registry import get_strategy
from chitu_diffusion.models.adapter import ModelAdapter, adapter_for
from chitu_diffusion.models.random_init import TINY_TRANSFORMER, build_transformer
from chitu_diffusion.task import FlexCacheParams

LATENT_SHAPE = (1, 16, 3, 8, 8)  # (B, C, F, H, W) -> 3 x 4 x 4 = 48 tokens after the 1x2x2 patchify
TEXT_SHAPE = (1, 8, 32)  # (B, text tokens, text_dim)
STEPS = 12  # denoising steps of the strategy tests' loop


def tiny_transformer(seed: int = 0) -> WanTransformer3DModel:
    """The tiny model's DiT (4 blocks, 4 x 16 heads, text_dim 32), fp32, seeded without touching global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_transformer(TINY_TRANSFORMER)


def denoise(transformer: torch.nn.Module, steps: int, seed: int = 0, guidance: float = 5.0) -> torch.Tensor:
    """Flow-matching UniPC with CFG, Wan's default sampler; returns the final latents (B, C, F, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(LATENT_SHAPE, generator=generator)
    prompt = torch.randn(TEXT_SHAPE, generator=generator)
    negative = torch.randn(TEXT_SHAPE, generator=generator)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            timestep = t.expand(latents.shape[0])
            with transformer.cache_context("cond", step_index=i, num_inference_steps=steps, timestep=t):
                cond = transformer(latents, timestep, prompt, return_dict=False)[0]  # (B, C, F, H, W)
            with transformer.cache_context("uncond", step_index=i, num_inference_steps=steps, timestep=t):
                uncond = transformer(latents, timestep, negative, return_dict=False)[0]
            latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents, return_dict=False)[0]
    return latents


def make_strategy(
    name: str,
    cache_ratio: float,
    warmup: int = 1,
    cooldown: int = 1,
    transformer: torch.nn.Module | None = None,
    adapter: ModelAdapter | None = None,
) -> FlexCacheStrategy:
    params = FlexCacheParams(strategy=name, cache_ratio=cache_ratio, warmup=warmup, cooldown=cooldown)
    return get_strategy(name)(params, adapter or adapter_for(transformer or tiny_transformer()))


def run(transformer, name: str, cache_ratio: float, steps: int = 12, warmup: int = 1, cooldown: int = 1, adapter=None):
    """Apply a strategy, denoise, remove it; returns (latents, decision summary, extra memory bytes)."""
    strategy = make_strategy(name, cache_ratio, warmup, cooldown, transformer, adapter)
    strategy.apply(transformer)
    try:
        latents = denoise(transformer, steps)
        return latents, strategy.log.summary(), strategy.extra_memory_bytes()
    finally:
        strategy.remove(transformer)


def decisions(summary: dict, branch: str | None = None, unit: str | None = None) -> list[dict]:
    return [
        d
        for d in summary["decisions"]
        if (branch is None or d["branch"] == branch) and (unit is None or d["unit"] == unit)
    ]
