"""Pyramid Attention Broadcast (PAB): reuse attention outputs across steps, cross-attention longest.

Zhao et al., "Real-Time Video Generation with Pyramid Attention Broadcast", ICLR 2025,
https://arxiv.org/abs/2408.12588.

Attention outputs change little between steps in the middle of denoising (the change is U-shaped over the
steps: large at the start and the end), and cross-attention changes least. PAB therefore keeps the first and
last ~15% of steps exact and, in between, broadcasts each attention module's last computed output for a
number of steps: a longer range for cross-attention than for self-attention (the pyramid).

Unit: one attention module call (each block's self- and cross-attention) for one (step, branch). A unit
computes when its cached output is `range` or more steps old, and always in warmup, cooldown and outside the
middle window. Decisions depend only on the step schedule, so every rank takes the same ones.

Monotonicity in `cache_ratio`: ranges grow with the ratio; between two forced computes the compute steps of a
longer range come no earlier than those of a shorter one, so a higher ratio never reuses less.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from diffusers.hooks.hooks import BaseState, StateManager

from chitu_diffusion.flex_cache.base import Decision, FlexCacheStrategy
from chitu_diffusion.flex_cache.hooks import (
    CacheMeter,
    StatefulHook,
    attach_hook,
    current_step,
    detach_hooks,
    refresh_registries,
)
from chitu_diffusion.flex_cache.registry import register_strategy

logger = logging.getLogger(__name__)

_HOOK = "chitu_pab"


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


@dataclass(frozen=True)
class PABConfig:
    """Broadcast ranges (a range R reuses an output for R - 1 further steps; R = 1 never reuses) and the
    exact fraction of steps kept at each end of the schedule.

    From `cache_ratio` r: self = 1 + round(4 r), cross = 1 + round(10 r); at 0.5 that is self 3 and cross 6,
    the paper's cross-attention default, with self-attention between its spatial (2) and temporal (4)
    defaults, since Wan's self-attention is joint spatio-temporal.
    """

    self_range: int
    cross_range: int
    exact_fraction: float = 0.15

    @classmethod
    def from_ratio(cls, cache_ratio: float) -> PABConfig:
        return cls(self_range=1 + _round_half_up(4 * cache_ratio), cross_range=1 + _round_half_up(10 * cache_ratio))

    def window(self, num_steps: int) -> tuple[int, int]:
        """[start, end): the middle steps where broadcasting is allowed."""
        edge = math.ceil(self.exact_fraction * num_steps)
        return edge, num_steps - edge


class PABState(BaseState):
    """One attention module's state for one branch."""

    def __init__(self) -> None:
        self.output: torch.Tensor | None = None  # (B, L, C) the last computed attention output
        self.computed_step: int | None = None

    def reset(self) -> None:
        self.__init__()


class PABAttentionHook(StatefulHook):
    """Computes or broadcasts one attention module's output, per branch."""

    def __init__(self, strategy: PAB, unit: str, broadcast_range: int) -> None:
        super().__init__(StateManager(PABState))
        self.strategy = strategy
        self.unit = unit
        self.broadcast_range = broadcast_range

    # Opaque to torch.compile: tracing this per-module, per-step state makes dynamo guard on it and recompile
    # every block until its limit (seen on H200: recompile_limit hit, blocks fell back to eager). The attention
    # call inside runs eagerly; its kernel (FA3/cuDNN) gains nothing from compile anyway.
    @torch.compiler.disable
    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        context = self.state_manager.context
        step, num_steps = current_step(context), context.num_inference_steps
        state: PABState = self.state_manager.get_state()
        decision = self._decide(state, step, num_steps)
        self.strategy.log.record(step, context.name, self.unit, decision)
        if decision.reused:
            return state.output
        output = self.fn_ref.original_forward(*args, **kwargs)  # (B, L, C)
        state.computed_step = step
        kept = output if self._reusable(step + 1, num_steps) else None  # hold it only if the next step may read it
        self.strategy.meter.replace(state.output, kept)
        state.output = kept
        return output

    def _reusable(self, step: int, num_steps: int) -> bool:
        start, end = self.strategy.config.window(num_steps)
        forced = self.strategy.params.forced_compute(step, num_steps)
        return self.broadcast_range > 1 and start <= step < end and forced is None

    def _decide(self, state: PABState, step: int, num_steps: int) -> Decision:
        forced = self.strategy.params.forced_compute(step, num_steps)
        if forced is not None:
            return Decision(forced)
        if state.output is None or not self._reusable(step, num_steps):
            return Decision.COMPUTE
        return Decision.REUSE if step - state.computed_step < self.broadcast_range else Decision.COMPUTE


@register_strategy
class PAB(FlexCacheStrategy):
    """Pyramid Attention Broadcast (ICLR'25, https://arxiv.org/abs/2408.12588)."""

    name = "pab"

    def __init__(self, params, adapter, reducer=None):
        super().__init__(params, adapter, reducer)
        self.config = PABConfig.from_ratio(params.cache_ratio)
        self.meter = CacheMeter()
        self.hooks: list[PABAttentionHook] = []

    def apply(self, transformer: torch.nn.Module) -> None:
        for index, block in enumerate(self.adapter.blocks(transformer)):
            for attr, broadcast_range in (
                (self.adapter.self_attention_attr, self.config.self_range),
                (self.adapter.cross_attention_attr, self.config.cross_range),
            ):
                hook = PABAttentionHook(self, f"{self.adapter.blocks_attr}.{index}.{attr}", broadcast_range)
                attach_hook(getattr(block, attr), hook, _HOOK)
                self.hooks.append(hook)
        refresh_registries(transformer)
        logger.info("PAB: %s", self.describe_ratio())

    def remove(self, transformer: torch.nn.Module) -> None:
        detach_hooks(transformer, _HOOK)
        self.reset()
        self.hooks.clear()

    def reset(self) -> None:
        super().reset()
        for hook in self.hooks:
            hook.state_manager.reset()
        self.meter.reset()

    def extra_memory_bytes(self) -> int:
        """Peak bytes of attention outputs held for broadcasting during the request."""
        return self.meter.peak

    def describe_ratio(self) -> dict:
        return {
            "cache_ratio": self.params.cache_ratio,
            "self_attention_range": self.config.self_range,
            "cross_attention_range": self.config.cross_range,
            "exact_fraction_each_end": self.config.exact_fraction,
        }
