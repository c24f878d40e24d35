"""DiTango: reuse remote K/V groups' attention states across steps under ring attention, guided by their ASE.

Under ring attention a rank's self-attention output merges attention states (out, lse) of its queries against
its own K/V partition and against every remote rank's (parallel/ring.py). Those remote states are what costs
communication, and many change little from one denoising step to the next. DiTango caches them per group and
recomputes only the groups whose drift is large:

- Group: one remote K/V partition (a ring peer's K/V); group g is the partition g + 1 hops back, so a layer has
  ring - 1 groups. Splitting partitions into token sub-blocks for a finer policy was measured slower on 2 H200s
  (smaller kernel calls and more merges cost more than the finer choice saved; docs/parallelism.md).
- Local partition: always computed and never cached; merged with the remote groups' states (fresh or cached) in
  one fused pass.
- Reuse skips both the compute and the communication: the plan is identical on all ranks, so a partition nobody
  computes is not sent.
- ASE (attention-state error) of group g at an anchor: the change of g's contribution to the layer output,
  ||e^(lse_c - L) o_c - e^(lse_f - L) o_f|| / ||o||, with (o_f, lse_f) fresh, (o_c, lse_c) cached and (o, L) the
  exact merged output; to first order it is the relative output error that reusing g would have caused. Squared
  numerators and denominators are summed over both CFG branches and all ranks before use (planner.py).
- Plan, anchors, threshold, warmup/cooldown and the cache_ratio mapping: planner.py.
- cache_ratio 0: every step is an anchor that measures nothing and stores nothing, so each layer runs the plain
  ring attention it replaced; the result is bit-identical to ring CP without a cache.

Output: decisions in the DecisionLog (unit `blocks.<layer>.attn1.group<g>`, per branch), and
`<output_dir>/ditango_policy_step_layer_group.ppm` (+ `.png`), see policy_image.py for the legend.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from diffusers.hooks.hooks import BaseState, StateManager

from chitu_diffusion.attention.fusion import fused_on_cuda
from chitu_diffusion.flex_cache.base import FlexCacheStrategy
from chitu_diffusion.flex_cache.hooks import (
    CacheMeter,
    StatefulHook,
    attach_hook,
    current_step,
    detach_hooks,
    refresh_registries,
)
from chitu_diffusion.flex_cache.registry import register_strategy
from chitu_diffusion.flex_cache.strategy.ditango.planner import DiTangoConfig, DiTangoPlanner
from chitu_diffusion.flex_cache.strategy.ditango.policy_image import LEGEND, write_png, write_ppm
from chitu_diffusion.parallel.attention import ContextParallelAttention
from chitu_diffusion.parallel.ring import AttentionState, RingAttention, merge_states

logger = logging.getLogger(__name__)

_HOOK = "chitu_ditango"
POLICY_FILE = "ditango_policy_step_layer_group.ppm"


class DiTangoBranchState(BaseState):
    """One CFG branch's cached remote attention states."""

    def __init__(self) -> None:
        self.states: dict[tuple[int, int], AttentionState] = {}  # (layer, group) -> out (B, Lq, H, D), lse (B, H, Lq)

    def reset(self) -> None:
        self.states.clear()


class DiTangoStepHook(StatefulHook):
    """On the transformer: plans each step before its first layer runs, and carries the branch context."""

    def __init__(self, planner: DiTangoPlanner) -> None:
        super().__init__(StateManager(DiTangoBranchState))
        self.planner = planner

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        context = self.state_manager.context
        self.planner.begin_step(current_step(context), context.num_inference_steps)
        return self.fn_ref.original_forward(*args, **kwargs)


@fused_on_cuda
def _share_change_sq(
    fresh_out: torch.Tensor,
    fresh_lse: torch.Tensor,
    cached_out: torch.Tensor,
    cached_lse: torch.Tensor,
    total_lse: torch.Tensor,
) -> torch.Tensor:
    weight_f = torch.exp(fresh_lse - total_lse).transpose(1, 2).unsqueeze(-1)  # (B, Lq, H, 1)
    weight_c = torch.exp(cached_lse - total_lse).transpose(1, 2).unsqueeze(-1)
    return (weight_c * cached_out.float() - weight_f * fresh_out.float()).square().sum()  # ()


def attention_state_error_sq(fresh: AttentionState, cached: AttentionState, total_lse: torch.Tensor) -> torch.Tensor:
    """Squared L2 change of one group's contribution to the merged output (see the module docstring)."""
    return _share_change_sq(fresh.out, fresh.lse, cached.out, cached.lse, total_lse)


class DiTangoAttention:
    """Layer `layer`'s ring attention under the plan; replaces `ContextParallelAttention.core`."""

    def __init__(self, strategy: DiTango, layer: int, ring: RingAttention):
        self.strategy = strategy
        self.layer = layer
        self.ring = ring  # the plain ring it replaces (restored on remove)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        planner, hook = self.strategy.planner, self.strategy.hook
        context = hook.state_manager.context
        self._log(context.name)
        if planner.kind is not None and not (planner.storing or planner.measuring):
            return self.ring(q, k, v)  # full compute needing no per-group state: exactly plain ring attention
        compute = planner.compute[self.layer].tolist()
        cache: dict = hook.state_manager.get_state().states
        local, fresh = self.ring.attend(q, k, v, compute)
        groups = range(len(compute))
        remote = [fresh[g] if compute[g] else cache[(self.layer, g)] for g in groups]
        total = merge_states([local, *remote], q.dtype)  # out (B, Lq, H, D), lse (B, H, Lq)
        if planner.measuring:
            planner.observe_reference(self.layer, torch.linalg.vector_norm(total.out, dtype=torch.float32).square())
            for g in groups:
                if (cached := cache.get((self.layer, g))) is not None:
                    planner.observe(self.layer, g, attention_state_error_sq(fresh[g], cached, total.lse))
        if planner.storing:
            for g in (g for g in groups if compute[g]):
                old = cache.get((self.layer, g))
                self.strategy.meter.replace(None if old is None else old.out, fresh[g].out)
                self.strategy.meter.replace(None if old is None else old.lse, fresh[g].lse)
                cache[(self.layer, g)] = fresh[g]
        return total.out  # (B, Lq, H, D)

    def _log(self, branch: str) -> None:
        planner, adapter = self.strategy.planner, self.strategy.adapter
        module = f"{adapter.blocks_attr}.{self.layer}.{adapter.self_attention_attr}"
        for g in range(self.strategy.config.num_groups):
            decision, score = planner.decision(self.layer, g), planner.score(self.layer, g)
            self.strategy.log.record(planner.step, branch, f"{module}.group{g}", decision, score=score)


@register_strategy
class DiTango(FlexCacheStrategy):
    """DiTango: ASE-guided per-group compute/reuse of remote attention states under ring attention."""

    name = "ditango"

    def __init__(self, params, adapter, reducer=None):
        super().__init__(params, adapter, reducer)
        self.meter = CacheMeter()
        self.config: DiTangoConfig | None = None
        self.planner: DiTangoPlanner | None = None
        self.hook: DiTangoStepHook | None = None
        self._replaced: list[tuple[ContextParallelAttention, RingAttention]] = []

    def apply(self, transformer: torch.nn.Module) -> None:
        blocks = self.adapter.blocks(transformer)
        attentions = [self._ring_attention(getattr(block, self.adapter.self_attention_attr)) for block in blocks]
        self.config = DiTangoConfig.from_ratio(self.params.cache_ratio, attentions[0].core.degree)
        self.planner = DiTangoPlanner(self.config, self.params, len(blocks), self.reducer)
        self.hook = DiTangoStepHook(self.planner)
        for layer, attention in enumerate(attentions):
            self._replaced.append((attention, attention.core))
            attention.core = DiTangoAttention(self, layer, attention.core)
        attach_hook(transformer, self.hook, _HOOK)
        refresh_registries(transformer)
        logger.info("DiTango: %s", self.describe_ratio())

    @staticmethod
    def _ring_attention(module: torch.nn.Module) -> ContextParallelAttention:
        attention = getattr(module.processor, "attention_fn", None)
        if not isinstance(attention, ContextParallelAttention) or not isinstance(attention.core, RingAttention):
            raise ValueError(
                "ditango reuses remote K/V groups of ring attention: run under torchrun with "
                "infer.diffusion.cp_size>=2 and an infer.diffusion.up_limit leaving a ring degree >= 2 "
                "(engines.parallelize applies it)"
            )
        return attention

    def remove(self, transformer: torch.nn.Module) -> None:
        detach_hooks(transformer, _HOOK)
        for attention, ring in self._replaced:
            attention.core = ring
        self._replaced.clear()

    def reset(self) -> None:
        super().reset()
        if self.planner is not None:
            self.planner.reset()
        if self.hook is not None:
            self.hook.state_manager.reset()
        self.meter.reset()

    def extra_memory_bytes(self) -> int:
        """Peak bytes of cached group states (out + lse) held during the request."""
        return self.meter.peak

    def describe_ratio(self) -> dict:
        if self.config is None:
            note = "resolved when applied to a ring-parallel transformer"
            return {"cache_ratio": self.params.cache_ratio, "note": note}
        return {
            "cache_ratio": self.params.cache_ratio,
            "anchor_interval": self.config.anchor_interval,
            "ase_quantile": self.config.quantile,
            "groups_per_layer": self.config.num_groups,
            "ase_threshold": self.planner.threshold,
            "decision_counts": self.planner.counts(),
        }

    def write_visualisations(self, output_dir: Path) -> list[Path]:
        """The policy picture (PPM: one pixel per decision; PNG: enlarged), legend in policy_image.LEGEND."""
        if self.planner is None or not self.planner.history:
            return []
        codes = self.planner.policy_codes()  # (steps, layers x groups)
        ppm = write_ppm(Path(output_dir) / POLICY_FILE, codes)
        png = write_png(ppm.with_suffix(".png"), codes)
        logger.info("DiTango policy %s (%s)", ppm, ", ".join(f"{label}: {rgb}" for label, rgb in LEGEND))
        return [ppm, png]
