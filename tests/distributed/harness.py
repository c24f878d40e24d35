"""Run one tiny denoising job per scenario, single-process or as a spawned gloo gang, and keep what it produced.

A scenario is a layout (world size, cp_size, up_limit) and a FlexCache setting. Every process builds the same
seeded tiny Wan2.1 transformer and inputs, and drives the engine's own loop (`pipeline.denoise` with
`transformer_noise_predictor`), single-process with `guided_noise`, in a gang through `engines.parallelize`.
Each run returns the final latents, the strategy's decision records and its report, so tests compare ranks with
each other and with the single-process run. Spawning dominates the cost, so one spawn runs many scenarios.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from diffusers import UniPCMultistepScheduler
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from chitu_diffusion.engines.parallelize import parallelized
from chitu_diffusion.flex_cache.registry import get_strategy
from chitu_diffusion.metrics import StageTimer
from chitu_diffusion.models.adapter import adapter_for
from chitu_diffusion.models.random_init import TINY_TRANSFORMER, WAN21_SCHEDULER, build_transformer
from chitu_diffusion.parallel.degrees import ParallelLayout
from chitu_diffusion.parallel.groups import build_groups
from chitu_diffusion.pipeline import denoise, guided_noise, transformer_noise_predictor
from chitu_diffusion.task import FlexCacheParams

LATENT_SHAPE = (1, 16, 3, 8, 8)  # (B, C, F', H', W') -> 3 x 4 x 4 = 48 tokens after the 1x2x2 patchify
TEXT_SHAPE = (1, 8, 32)  # (B, text tokens, text_dim)
GUIDANCE = 5.0
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Scenario:
    name: str
    cp_size: int = 1
    up_limit: int = 8
    strategy: str = "none"
    cache_ratio: float = 0.5
    steps: int = 6
    warmup: int = 1
    cooldown: int = 1

    @property
    def cache(self) -> FlexCacheParams:
        return FlexCacheParams(
            strategy=self.strategy, cache_ratio=self.cache_ratio, warmup=self.warmup, cooldown=self.cooldown
        )


def tiny_transformer() -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_transformer(TINY_TRANSFORMER)  # fp32, 4 heads x 16, 4 layers


def inputs() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(LATENT_SHAPE, generator=generator)  # (B, C, F', H', W')
    embeds = {branch: torch.randn(TEXT_SHAPE, generator=generator) for branch in ("cond", "uncond")}  # (B, 8, 32)
    return latents, embeds


def _records(strategy) -> list[dict]:
    return strategy.log.summary()["decisions"]


def run_single(transformer: torch.nn.Module, scenario: Scenario) -> dict:
    """The single-process reference: both CFG branches here, no parallelism."""
    latents, embeds = inputs()
    strategy = get_strategy(scenario.strategy)(scenario.cache, adapter_for(transformer))
    strategy.apply(transformer)
    try:
        guide = partial(guided_noise, transformer_noise_predictor(transformer, embeds), GUIDANCE)
        latents = denoise(latents, UniPCMultistepScheduler(**WAN21_SCHEDULER), scenario.steps, guide, StageTimer(CPU))
        return {"latents": latents, "decisions": _records(strategy)}
    finally:
        strategy.remove(transformer)


def run_parallel(transformer: torch.nn.Module, scenario: Scenario, out_dir: Path) -> dict:
    """This rank's part of `scenario` (call on every rank of the default group)."""
    adapter = adapter_for(transformer)
    heads = transformer.config.num_attention_heads
    layout = ParallelLayout.resolve(dist.get_world_size(), scenario.cp_size, scenario.up_limit, heads)
    groups = build_groups(layout, CPU)
    latents, embeds = inputs()
    with parallelized(transformer, adapter, groups, cache=scenario.cache) as par:
        guide = par.guide(transformer_noise_predictor(transformer, embeds), GUIDANCE)
        latents = denoise(latents, UniPCMultistepScheduler(**WAN21_SCHEDULER), scenario.steps, guide, StageTimer(CPU))
        files = par.strategy.write_visualisations(out_dir) if groups.rank == 0 else []
        return {
            "latents": latents,
            "decisions": _records(par.strategy),
            "ratio": par.strategy.describe_ratio(),
            "files": [str(f) for f in files],
            "layout": layout.describe(),
        }


def is_plain(transformer: torch.nn.Module) -> bool:
    """No torch hooks, no diffusers hooks and diffusers' own attention processors: what a removal must leave."""
    modules = list(transformer.modules())
    hooks = any(m._forward_hooks or m._forward_pre_hooks for m in modules)
    registries = any(getattr(m, "_diffusers_hook", None) is not None and m._diffusers_hook.hooks for m in modules)
    processors = {type(b.attn1.processor) for b in transformer.blocks} == {WanAttnProcessor}
    return not hooks and not registries and processors


def _rank_main(rank: int, world_size: int, port: int, scenarios: list[dict], out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # ranks share 2 cores
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=120))
    try:
        transformer = tiny_transformer()
        for fields in scenarios:
            scenario = Scenario(**fields)
            scenario_dir = Path(out_dir) / scenario.name
            scenario_dir.mkdir(parents=True, exist_ok=True)
            with torch.no_grad():
                result = run_parallel(transformer, scenario, scenario_dir)
            result["plain_after"] = is_plain(transformer)
            torch.save(result, scenario_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(world_size: int, scenarios: list[Scenario], out_dir: Path) -> dict[str, list[dict]]:
    """Run `scenarios` on a gang of `world_size` gloo ranks; returns {scenario name: [result of rank 0, 1, ...]}."""
    payload = [asdict(s) for s in scenarios]
    mp.spawn(_rank_main, args=(world_size, free_port(), payload, str(out_dir)), nprocs=world_size, join=True)
    return {
        s.name: [torch.load(out_dir / s.name / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
        for s in scenarios
    }
