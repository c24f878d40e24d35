"""The one entry that makes a transformer run on a parallel gang, in a fixed order:

1. CFG split: with a cfg group of 2, this rank's denoising loop computes one guidance branch and exchanges
   predictions (`Parallelized.guide`); nothing on the transformer changes.
2. Context parallelism: token sharding at the model's `_cp_plan` boundaries and Ulysses / ring self-attention
   (`context_parallel.py`). Before the cache, because FlexCache must decide on and hold this rank's shard.
3. FlexCache strategy, given the gang-wide `ProcessGroupReducer` so its decisions are global; DiTango swaps the
   ring attention installed by step 2, so it needs step 2 done.
4. Regional compile of the repeated blocks, last: it traces whatever the blocks run by then.

Applied per request and undone by `remove` (reverse order), so the transformer is plain between requests, as
the single-device engine leaves it. Whether the request's strategy fits the layout (DiTango: ring >= 2) is
checked before, with the request (engines/checks.py); a strategy that finds no ring attention to work on still
refuses to attach. Steps 1-3 only register hooks and processors (microseconds); the compiled
blocks are kept across requests (compiled once).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from chitu_diffusion.compile_cache import compile_blocks
from chitu_diffusion.flex_cache.base import FlexCacheStrategy
from chitu_diffusion.flex_cache.registry import get_strategy
from chitu_diffusion.models.adapter import ModelAdapter
from chitu_diffusion.parallel.cfg import cfg_parallel_guide
from chitu_diffusion.parallel.context_parallel import ContextParallelHandle, apply_context_parallel
from chitu_diffusion.parallel.groups import ParallelGroups
from chitu_diffusion.parallel.reducer import ProcessGroupReducer
from chitu_diffusion.pipeline import Guide, PredictNoise, guided_noise
from chitu_diffusion.task import FlexCacheParams

logger = logging.getLogger(__name__)


@dataclass
class Parallelized:
    """What `parallelize` applied to one transformer; `remove` undoes it."""

    transformer: torch.nn.Module
    groups: ParallelGroups
    context_parallel: ContextParallelHandle | None
    strategy: FlexCacheStrategy | None

    def guide(self, predict_noise: PredictNoise, guidance_scale: float) -> Guide:
        """Step 1: the loop's guidance: one branch per rank with a cfg group of 2, both branches here otherwise."""
        if self.groups.layout.cfg > 1:
            return cfg_parallel_guide(predict_noise, guidance_scale, self.groups.cfg, self.groups.cfg_rank)
        return lambda latents, step: guided_noise(predict_noise, guidance_scale, latents, step)

    def remove(self) -> None:
        if self.strategy is not None:
            self.strategy.remove(self.transformer)
            self.strategy.reset()  # drop cached tensors now (read the strategy's report before removing)
        if self.context_parallel is not None:
            self.context_parallel.remove()


def _compile_blocks(blocks: torch.nn.ModuleList) -> None:
    if any(getattr(block, "_compiled_call_impl", None) is not None for block in blocks):
        return  # compiled by an earlier request; dynamo re-guards on the hooks now attached
    # fullgraph=False: the distributed attention core is kept out of the graphs (FlexCache strategies add no break).
    compile_blocks(blocks, fullgraph=False)


def parallelize(
    transformer: torch.nn.Module,
    adapter: ModelAdapter,
    groups: ParallelGroups,
    *,
    cache: FlexCacheParams | None = None,
    backend: str | None = None,
    compile: bool = False,
) -> Parallelized:
    """Apply CFG split -> context parallelism -> `cache` strategy -> compile (see the module docstring)."""
    layout = groups.layout
    strategy_cls = get_strategy(cache.strategy) if cache is not None else None
    handle = apply_context_parallel(transformer, adapter, groups, backend) if layout.cp > 1 else None
    result = Parallelized(transformer, groups, handle, None)
    try:
        if strategy_cls is not None:
            strategy = strategy_cls(cache, adapter, ProcessGroupReducer(groups.world, groups.device))
            strategy.apply(transformer)
            result.strategy = strategy
        if compile:
            _compile_blocks(adapter.blocks(transformer))
    except BaseException:
        result.remove()
        raise
    logger.debug("parallelized: %s, cache %s", layout.describe(), cache.strategy if cache else None)
    return result


@contextmanager
def parallelized(
    transformer: torch.nn.Module, adapter: ModelAdapter, groups: ParallelGroups, **kwargs
) -> Iterator[Parallelized]:
    """`parallelize` for the duration of one request."""
    result = parallelize(transformer, adapter, groups, **kwargs)
    try:
        yield result
    finally:
        result.remove()
