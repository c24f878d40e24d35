"""Pyramid Attention Broadcast (PAB): reuse attention outputs across steps, cross-attention longest.

Zhao et al., "Real-Time Video Generation with Pyramid Attention Broadcast", ICLR 2025,
https://arxiv.org/abs/2408.12588.

Attention outputs change little between steps in the middle of denoising (the change is U-shaped over the
steps: large at the start and the end), and cross-attention changes least. PAB therefore keeps the first and
last ~15% of steps exact and, in between, broadcasts each attention module's last computed output for a
number of steps: a longer range for cross-attention than for self-attention (the pyramid).

Unit: one attention module call (each block's self- and cross-attention) for one (step, branch). A unit
computes when its cached output is `range` or more steps old, and always in warmup, cooldown and outside the
middle window. Decisions depend only on the step schedule and the attention kind, so every block of a kind
decides alike and every rank takes the same decisions.

Compile-friendly by construction: the decisions for one (step, branch) are taken once, in a hook on the
transformer, before its forward and outside the compiled blocks (`PABStepHook`). Inside a block, each attention
module's processor is wrapped (`PABAttentionProcessor`) and only reads them from one shared `PABPlan` as Python
constants, so dynamo specialises each block on (self computes?, cross computes?): at most four variants of the
one code object all blocks share, no graph break, no recompile per step or per block. The wrapper holds a
per-module output slot that the transformer hook fills with this branch's cached output before the forward and
reads back after it. It wraps the processor, not the module's `forward`: a diffusers hook puts a per-module
`forward` on each attention module, and dynamo (torch 2.11, the worker image's) guards on that object's identity,
so every block became its own variant, 8 reached dynamo's recompile limit and the other 22 blocks of Wan-1.3B ran
eagerly (measured on an H200: PAB at cache_ratio 0.5 gave 1.26x with 52% of attention calls reused).

Monotonicity in `cache_ratio`: ranges grow with the ratio; between two forced computes the compute steps of a
longer range come no earlier than those of a shorter one, so a higher ratio never reuses less.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from diffusers.hooks.hooks import BaseState, StateManager

from chitu_diffusion.flex_cache.base import Decision, FlexCacheStrategy
from chitu_diffusion.flex_cache.hooks import (
    CacheMeter,
    StatefulHook,
    attach_hook,
    current_step,
    detach_hooks,
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


@dataclass
class PABPlan:
    """The in-flight transformer call's decisions, per attention kind (the block's attribute name): True
    computes, False broadcasts. Written by `PABStepHook` outside the compiled blocks, read inside them."""

    computes: dict[str, bool] = field(default_factory=dict)


class PABAttentionProcessor:
    """One attention module's processor, wrapped: compute (and leave the output in `output`) or return `output`.

    Traced by dynamo inside the compiled block; everything it reads is the shared plan's constant for its kind,
    the wrapped processor and its own output slot, a tensor attribute dynamo treats as an input (no guard on
    which tensor it is).
    """

    def __init__(self, inner, plan: PABPlan, kind: str) -> None:
        self.inner = inner  # the module's processor before PAB, put back by `PAB.remove`
        self.plan = plan
        self.kind = kind
        self.output: torch.Tensor | None = None  # (B, L, C) this branch's cached output, for one forward

    def __call__(self, attention: torch.nn.Module, *args, **kwargs):
        if self.plan.computes[self.kind]:
            self.output = self.inner(attention, *args, **kwargs)  # (B, L, C)
        return self.output


class PABState(BaseState):
    """One branch's state: the kept output of every attention module and the step each kind last computed."""

    def __init__(self) -> None:
        self.outputs: dict[str, list[torch.Tensor | None]] = {}  # kind -> per block (B, L, C), None if not kept
        self.computed_step: dict[str, int] = {}

    def reset(self) -> None:
        self.__init__()


class PABStepHook(StatefulHook):
    """On the transformer: decide every kind for this (step, branch), run the forward, keep what may be reused."""

    def __init__(self, strategy: PAB) -> None:
        super().__init__(StateManager(PABState))
        self.strategy = strategy

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        strategy, context = self.strategy, self.state_manager.context
        step, num_steps = current_step(context), context.num_inference_steps
        state: PABState = self.state_manager.get_state()
        decisions = {kind: strategy.decide(state, kind, step, num_steps) for kind in strategy.ranges}
        for hook in strategy.hooks:  # in call order: blocks.0.attn1, blocks.0.attn2, blocks.1.attn1, ...
            strategy.log.record(step, context.name, hook.unit, decisions[hook.kind])
        strategy.plan.computes.update({kind: not d.reused for kind, d in decisions.items()})
        for hook in strategy.hooks:  # a broadcasting kind finds this branch's outputs in its slots
            reused = decisions[hook.kind].reused
            hook.attention.output = state.outputs[hook.kind][hook.index] if reused else None
        try:
            output = self.fn_ref.original_forward(*args, **kwargs)
            for kind, decision in decisions.items():
                if not decision.reused:
                    self._keep(state, kind, step, num_steps)
        finally:
            for hook in strategy.hooks:
                hook.attention.output = None  # the slots hold nothing between forwards
        return output

    def _keep(self, state: PABState, kind: str, step: int, num_steps: int) -> None:
        """After a computing forward: hold the fresh outputs only if the next step may read them."""
        strategy = self.strategy
        keep = strategy.reusable(kind, step + 1, num_steps)
        kept = state.outputs.setdefault(kind, [None] * len(strategy.hooks_of(kind)))
        for hook in strategy.hooks_of(kind):
            fresh = hook.attention.output if keep else None
            strategy.meter.replace(kept[hook.index], fresh)
            kept[hook.index] = fresh
        state.computed_step[kind] = step


@dataclass(frozen=True)
class _AttachedAttention:
    unit: str  # "blocks.3.attn2"
    kind: str  # the block's attribute: "attn1" / "attn2"
    index: int  # the block's index
    module: torch.nn.Module  # the attention module
    attention: PABAttentionProcessor  # its processor while PAB is attached


@register_strategy
class PAB(FlexCacheStrategy):
    """Pyramid Attention Broadcast (ICLR'25, https://arxiv.org/abs/2408.12588)."""

    name = "pab"

    def __init__(self, params, adapter, reducer=None):
        super().__init__(params, adapter, reducer)
        self.config = PABConfig.from_ratio(params.cache_ratio)
        self.ranges = {  # attention kind (the block's attribute) -> broadcast range
            adapter.self_attention_attr: self.config.self_range,
            adapter.cross_attention_attr: self.config.cross_range,
        }
        self.plan = PABPlan()
        self.meter = CacheMeter()
        self.step_hook = PABStepHook(self)
        self.hooks: list[_AttachedAttention] = []

    def apply(self, transformer: torch.nn.Module) -> None:
        for index, block in enumerate(self.adapter.blocks(transformer)):
            for kind in self.ranges:
                module = getattr(block, kind)
                processor = PABAttentionProcessor(module.processor, self.plan, kind)
                module.set_processor(processor)
                unit = f"{self.adapter.blocks_attr}.{index}.{kind}"
                self.hooks.append(_AttachedAttention(unit, kind, index, module, processor))
        attach_hook(transformer, self.step_hook, _HOOK)
        logger.info("PAB: %s", self.describe_ratio())

    def remove(self, transformer: torch.nn.Module) -> None:
        detach_hooks(transformer, _HOOK)
        for hook in self.hooks:
            hook.module.set_processor(hook.attention.inner)
        self.reset()
        self.hooks.clear()

    def reset(self) -> None:
        super().reset()
        self.step_hook.state_manager.reset()
        self.plan.computes.clear()
        self.meter.reset()

    def hooks_of(self, kind: str) -> list[_AttachedAttention]:
        return [hook for hook in self.hooks if hook.kind == kind]

    def reusable(self, kind: str, step: int, num_steps: int) -> bool:
        """Whether `kind`'s outputs may be broadcast at `step` (inside the window, not forced, range > 1)."""
        start, end = self.config.window(num_steps)
        forced = self.params.forced_compute(step, num_steps)
        return self.ranges[kind] > 1 and start <= step < end and forced is None

    def decide(self, state: PABState, kind: str, step: int, num_steps: int) -> Decision:
        """From the schedule alone: forced ends, then broadcast while the kept outputs are under `range` old."""
        forced = self.params.forced_compute(step, num_steps)
        if forced is not None:
            return Decision(forced)
        held = state.outputs.get(kind)
        if not held or held[0] is None or not self.reusable(kind, step, num_steps):
            return Decision.COMPUTE
        return Decision.REUSE if step - state.computed_step[kind] < self.ranges[kind] else Decision.COMPUTE

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
