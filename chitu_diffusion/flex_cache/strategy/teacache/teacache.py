"""TeaCache: skip the whole block stack while the timestep-modulated input has barely changed.

Liu et al., "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model", CVPR 2025,
https://arxiv.org/abs/2411.19108; we follow its TeaCache4Wan2.1 reference with `use_ret_steps=True`.

Unit: one pass through the block stack for one (step, branch). The signal is the blocks' modulation input
(Wan: `temb` = `timestep_proj`, the reference's e0, shape (B, 6, C)). Per branch we accumulate
`rescale(|m_t - m_prev|_1 / |m_prev|_1)`, where `rescale` is a degree-4 polynomial fitted to predict the
relative change of the blocks' output, and reuse the cached residual (last block output - first block input)
while the accumulator stays under the threshold; computing resets it. Warmup and cooldown steps always compute.
The decision, and its host read of the accumulated change, happens before the blocks run, outside the compiled
blocks; inside them only a shared flag is read, so they stay compiled (stack.py).

Monotonicity in `cache_ratio`: the modulation depends only on the timestep schedule, never on the latents, so
the per-step increments are fixed before any decision is taken; we clamp them at >= 0 (a negative predicted
change is meaningless; the reference does not clamp). With fixed non-negative increments a larger threshold
makes every compute step come no earlier (induction on the compute steps), hence never more computes; the
thresholds below scale linearly with the ratio, so a higher ratio never reuses less. See docs/flexcache.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.hooks.hooks import CacheContext, StateManager

from chitu_diffusion.flex_cache.base import Decision, FlexCacheStrategy
from chitu_diffusion.flex_cache.hooks import CacheMeter, current_step, detach_hooks
from chitu_diffusion.flex_cache.registry import register_strategy
from chitu_diffusion.flex_cache.strategy.teacache.calibrate import find_calibration, load_calibration
from chitu_diffusion.flex_cache.strategy.teacache.stack import BlockStackState, attach_stack_hooks

logger = logging.getLogger(__name__)

_HOOK = "chitu_teacache"

#: Uncalibrated unknown variant: the identity polynomial, i.e. the raw relative L1 change of the modulation.
FALLBACK_COEFFICIENTS = (0.0, 0.0, 0.0, 1.0, 0.0)
#: Threshold at cache_ratio 1 is twice the published "fast" threshold (so 0.5 = fast, 0.25 = slow for Wan2.1).
MAX_THRESHOLD_PER_FAST = 2.0
#: A calibrated model of a variant without a published threshold borrows Wan2.1-1.3B's "fast" 0.10.
DEFAULT_FAST_THRESHOLD = 0.10
#: Uncalibrated fallback: the raw signal has no known scale, so the threshold at ratio 1 is this many times the
#: running mean of the per-step change (0.5 -> reuse while the accumulated change is under two average steps).
FALLBACK_MAX_MEAN_STEPS = 4.0


@dataclass(frozen=True)
class TeaCacheConfig:
    """What one TeaCache run decides with (built from `cache_ratio` by `from_ratio`).

    threshold: reuse while the accumulated rescaled change stays below it; 0 never reuses.
    coefficients: the rescale polynomial, highest degree first (numpy.poly1d convention).
    relative: the threshold is in units of the running mean per-step change (uncalibrated fallback only).
    source: where the coefficients came from, for metrics.
    max_threshold: the threshold at cache_ratio 1.
    input_range: a calibration's observed input changes; inputs are clipped into it, because a degree-4 fit
        swings wildly outside the data it was fitted on (published fits carry no range).
    """

    threshold: float
    coefficients: tuple[float, ...]
    relative: bool
    source: str
    max_threshold: float
    input_range: tuple[float, float] | None = None

    @classmethod
    def from_ratio(
        cls,
        cache_ratio: float,
        variant: str,
        published: dict[str, tuple[float, ...]],
        fast_thresholds: dict[str, float],
        calibration: dict | None = None,
    ) -> TeaCacheConfig:
        """Precedence: a calibration of this very model, then published coefficients, then the fallback."""
        input_range = None
        if calibration is not None:
            coefficients, relative = tuple(calibration["coefficients"]), False
            input_range = tuple(calibration["input_change_range"])
            source = f"calibration ({calibration['samples']} samples, rmse {calibration['fit_rmse']:.3g})"
            max_threshold = MAX_THRESHOLD_PER_FAST * fast_thresholds.get(variant, DEFAULT_FAST_THRESHOLD)
        elif variant in published:
            coefficients, relative, source = published[variant], False, f"published ({variant})"
            max_threshold = MAX_THRESHOLD_PER_FAST * fast_thresholds[variant]
        else:
            coefficients, relative, source = FALLBACK_COEFFICIENTS, True, "fallback (identity, uncalibrated)"
            max_threshold = FALLBACK_MAX_MEAN_STEPS
        return cls(cache_ratio * max_threshold, coefficients, relative, source, max_threshold, input_range)

    def rescale(self, change: float) -> float:
        """Predicted relative output change for a relative modulation change, clamped at 0 (see module doc)."""
        if self.input_range is not None:
            change = min(max(change, self.input_range[0]), self.input_range[1])
        return max(float(np.polyval(self.coefficients, change)), 0.0)


class TeaCacheState(BlockStackState):
    """One branch's TeaCache state: the block-stack state plus the accumulated change the decision is taken on."""

    def __init__(self) -> None:
        super().__init__()
        self.accumulated = 0.0
        self.change_sum = 0.0  # running sum / count of rescaled changes (relative thresholds)
        self.change_count = 0


@register_strategy
class TeaCache(FlexCacheStrategy):
    """TeaCache (CVPR'25, https://arxiv.org/abs/2411.19108): reuse the block stack's residual across steps."""

    name = "teacache"

    def __init__(self, params, adapter, reducer=None):
        super().__init__(params, adapter, reducer)
        self.meter = CacheMeter()
        self.state_manager = StateManager(TeaCacheState)
        self.config: TeaCacheConfig | None = None

    def apply(self, transformer: torch.nn.Module) -> None:
        variant = self.adapter.variant(transformer)
        path = find_calibration(transformer)
        calibration = load_calibration(path, variant) if path is not None else None
        self.config = TeaCacheConfig.from_ratio(
            self.params.cache_ratio,
            variant,
            self.adapter.teacache_coefficients,
            self.adapter.teacache_fast_thresholds,
            calibration,
        )
        if self.config.relative:
            logger.warning(
                "TeaCache has no rescale coefficients for %s: using the raw relative L1 change with thresholds "
                "relative to its running mean; run `chitu calibrate-teacache --model DIR` for a fitted polynomial",
                variant,
            )
        logger.info("TeaCache on %s: %s", variant, self.describe_ratio())
        attach_stack_hooks(self, self.state_manager, transformer, _HOOK)

    def decide(self, state: TeaCacheState, context: CacheContext, change: float | None) -> bool:
        """Reuse while the accumulated rescaled change stays under the threshold; computing resets it."""
        config, step = self.config, current_step(context)
        if change is not None:
            change = config.rescale(change)
            state.change_sum += change
            state.change_count += 1
        forced = self.params.forced_compute(step, context.num_inference_steps)
        if forced is not None:
            decision = Decision(forced)
        elif change is None or state.residual is None:
            decision = Decision.COMPUTE
        else:
            state.accumulated += change
            threshold = config.threshold
            if config.relative:
                threshold *= state.change_sum / state.change_count
            decision = Decision.REUSE if state.accumulated < threshold else Decision.COMPUTE
        self.log.record(step, context.name, "blocks", decision, score=state.accumulated)
        if not decision.reused:
            state.accumulated = 0.0
        return decision.reused

    def take_residual(
        self, state: TeaCacheState, context: CacheContext, stack_input: torch.Tensor, stack_output: torch.Tensor
    ) -> None:
        """Keep the fresh residual for the next reuse; at threshold 0 nothing is ever reused, so hold none."""
        if self.config.threshold > 0:
            # In the stack's dtype, as the blocks compute (the model may have cast the output up already).
            residual = (stack_output - stack_input).to(stack_input.dtype)  # (B, L, C)
            self.meter.replace(state.residual, residual)
            state.residual = residual

    def remove(self, transformer: torch.nn.Module) -> None:
        detach_hooks(transformer, _HOOK)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.state_manager.reset()
        self.meter.reset()

    def extra_memory_bytes(self) -> int:
        """Peak bytes of cached block-stack residuals held during the request."""
        return self.meter.peak

    def describe_ratio(self) -> dict:
        """threshold = cache_ratio x max_threshold, and where the rescale polynomial came from."""
        if self.config is None:
            return {"cache_ratio": self.params.cache_ratio, "note": "resolved when applied to a transformer"}
        return {
            "cache_ratio": self.params.cache_ratio,
            "threshold": self.config.threshold,
            "max_threshold": self.config.max_threshold,
            "threshold_units": "x running mean step change" if self.config.relative else "rescaled relative L1",
            "coefficients": list(self.config.coefficients),
            "coefficients_source": self.config.source,
        }
