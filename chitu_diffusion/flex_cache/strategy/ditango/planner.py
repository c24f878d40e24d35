"""DiTango's step-level policy: which (layer, group) attention states are computed or reused at each step.

One planner serves both CFG branches and takes every decision from gang-wide statistics, so the plan is the same
on every rank and for cond and uncond (a rank must know what its ring peers will send). Per step:

- warmup / cooldown steps compute everything;
- an *anchor* step computes everything and measures each group's attention-state error (ASE, see ditango.py)
  against its cached state; anchors come every `anchor_interval` steps after the first (and whenever no ASE
  has been measured yet), which bounds how stale a reused state can get;
- any other step reuses group g of layer l when its predicted error stays under the global threshold:
  `rate[l, g] * age[l, g] <= threshold`, where rate is the ASE per step of staleness seen at the last anchor and
  age is the number of steps since the group's state was cached.

After an anchor, the summed squared errors of all ranks and branches are all-reduced once (at the next step's
start) and turned into rates. The threshold is an error budget for one anchor interval: the `quantile`-quantile
rate times the `anchor_interval - 1` planned steps until the next anchor (an exponential moving average across
anchors). A group drifting at the quantile rate may thus stay cached until the next anchor; faster groups are
reused for fewer steps after each recompute, slower ones for all of them. A higher cache_ratio raises both the
quantile and the interval, so it never reuses less. (Budgeting one step instead, `rate * age <= quantile rate`,
let the reuse decay with age inside each interval: 23% reuse at cache_ratio 0.5 and fewer at 0.7 on 2 H200s.)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from chitu_diffusion.flex_cache.base import Decision, StatsReducer
from chitu_diffusion.task import FlexCacheParams

logger = logging.getLogger(__name__)

#: Anchor interval at cache_ratio 1 (1 + round(6 r): 0 -> every step, 0.5 -> every 4th step, 1 -> every 7th).
MAX_EXTRA_ANCHOR_INTERVAL = 6
#: Weight of the previous threshold when an anchor brings a new quantile.
THRESHOLD_MOMENTUM = 0.5

#: picture codes of each decision (policy_image.LEGEND)
CODES = {Decision.WARMUP: 0, Decision.COOLDOWN: 0, Decision.ANCHOR: 1, Decision.COMPUTE: 2, Decision.REUSE: 3}


@dataclass(frozen=True)
class DiTangoConfig:
    """What `cache_ratio` r becomes for a ring of `ring_degree` ranks.

    anchor_interval: 1 + round(6 r) steps between anchors (r = 0: every step is an anchor = full compute).
    quantile: r; the threshold is the r-quantile of the measured per-step ASE times `budget_steps`, so about a
        fraction r of the groups stay reused until the next anchor (and faster ones for part of the interval).
    ring_degree: R; each layer has R - 1 groups, one per remote rank's K/V partition.
    """

    anchor_interval: int
    quantile: float
    ring_degree: int

    @classmethod
    def from_ratio(cls, cache_ratio: float, ring_degree: int) -> DiTangoConfig:
        return cls(
            anchor_interval=1 + round(MAX_EXTRA_ANCHOR_INTERVAL * cache_ratio),
            quantile=cache_ratio,
            ring_degree=ring_degree,
        )

    @property
    def budget_steps(self) -> int:
        """Planned steps between two anchors: how long a group at the quantile rate may stay cached."""
        return max(1, self.anchor_interval - 1)

    @property
    def num_groups(self) -> int:
        """Remote groups per layer: group g is the K/V partition g + 1 hops back."""
        return self.ring_degree - 1


class DiTangoPlanner:
    """The plan of the current step and what it is decided from (see the module docstring)."""

    def __init__(self, config: DiTangoConfig, params: FlexCacheParams, num_layers: int, reducer: StatsReducer):
        self.config = config
        self.params = params
        self.reducer = reducer
        self.shape = (num_layers, config.num_groups)
        self.reset()

    def reset(self) -> None:
        self.step: int | None = None
        self.kind: Decision | None = None  # the step's kind when every group shares it, None on planned steps
        self.compute = torch.ones(self.shape, dtype=torch.bool)  # (layers, groups) this step's plan
        self.storing = False  # compute fresh states into the cache this step (a later step may reuse them)
        self.cached_at = torch.full(self.shape, -1, dtype=torch.long)  # step each cached state was computed, -1 none
        self.rates: torch.Tensor | None = None  # (layers, groups) ASE per step of staleness, nan = unmeasured
        self.threshold: float | None = None
        self.first_anchor: int | None = None
        self.pending: torch.Tensor | None = None  # (layers, groups + 1) squared errors | squared output norm
        self.pending_age = torch.zeros(self.shape)
        self.history: dict[int, np.ndarray] = {}  # step -> (layers, groups) picture codes

    @property
    def measuring(self) -> bool:
        return self.kind is Decision.ANCHOR and self.config.quantile > 0

    def decision(self, layer: int, group: int) -> Decision:
        if self.kind is not None:
            return self.kind
        return Decision.COMPUTE if self.compute[layer, group] else Decision.REUSE

    def score(self, layer: int, group: int) -> float | None:
        """The ASE per step this decision was based on (None before any was measured)."""
        if self.rates is None or math.isnan(rate := float(self.rates[layer, group])):
            return None
        return rate

    def begin_step(self, step: int, num_steps: int) -> None:
        """Plan `step` (idempotent: the second CFG branch of a step finds it planned)."""
        if step == self.step:
            return
        self._absorb_pending()
        self.step = step
        forced = self.params.forced_compute(step, num_steps)
        interval = self.config.anchor_interval
        if forced is not None:
            self.kind = Decision(forced)
        elif self.threshold is None or (step - self.first_anchor) % interval == 0:
            self.kind = Decision.ANCHOR
            self.first_anchor = step if self.first_anchor is None else self.first_anchor
        else:
            self.kind = None
        if self.kind is None:
            age = (step - self.cached_at).float()  # (layers, groups)
            reusable = (self.cached_at >= 0) & (self.rates * age <= self.threshold)  # nan rates compare False
            self.compute = ~reusable
        else:
            self.compute = torch.ones(self.shape, dtype=torch.bool)
        if self.measuring:
            self.pending_age = (step - self.cached_at).float().masked_fill(self.cached_at < 0, math.nan)
        # a state computed now is worth keeping only if some later step may reuse it
        self.storing = self.config.quantile > 0 and step + 1 < num_steps - self.params.cooldown
        if self.storing:
            self.cached_at[self.compute] = step
        self.history[step] = self._codes()

    def observe(self, layer: int, group: int, error_sq: torch.Tensor) -> None:
        """Add one branch's squared error of (layer, group) at this anchor step (no device sync)."""
        self._pending_like(error_sq)[layer, group] += error_sq

    def observe_reference(self, layer: int, output_sq: torch.Tensor) -> None:
        """Add one branch's squared norm of layer's exact attention output (the ASE's denominator)."""
        self._pending_like(output_sq)[layer, -1] += output_sq

    def _pending_like(self, value: torch.Tensor) -> torch.Tensor:
        if self.pending is None:
            self.pending = torch.zeros(self.shape[0], self.shape[1] + 1, device=value.device)
        return self.pending

    def _absorb_pending(self) -> None:
        """Turn the last anchor's errors, summed over the whole gang, into rates and a new threshold."""
        if self.pending is None:
            return
        totals = self.reducer.all_reduce_sum(self.pending).cpu()  # (layers, groups + 1)
        self.pending = None
        ase = (totals[:, :-1] / totals[:, -1:].clamp_min(1e-30)).sqrt()  # (layers, groups) relative L2
        self.rates = ase / self.pending_age  # nan where nothing was cached to compare with
        if torch.isnan(self.rates).all():
            return
        quantile = float(torch.nanquantile(self.rates, self.config.quantile))
        budget = quantile * self.config.budget_steps
        previous = self.threshold
        if previous is None:
            self.threshold = budget
        else:
            self.threshold = THRESHOLD_MOMENTUM * previous + (1 - THRESHOLD_MOMENTUM) * budget
        logger.debug("DiTango step %s: ASE/step quantile %.3g -> threshold %.3g", self.step, quantile, self.threshold)

    def _codes(self) -> np.ndarray:
        if self.kind is not None:
            return np.full(self.shape, CODES[self.kind], dtype=np.uint8)
        return np.where(self.compute.numpy(), CODES[Decision.COMPUTE], CODES[Decision.REUSE]).astype(np.uint8)

    def policy_codes(self) -> np.ndarray:
        """(steps, layers x groups) picture codes, steps in order, row = layer * groups + group."""
        return np.stack([self.history[s].reshape(-1) for s in sorted(self.history)])

    def counts(self) -> dict[str, int]:
        """Decisions per kind over (step, layer, group), branch-independent."""
        codes = self.policy_codes() if self.history else np.zeros((0,), dtype=np.uint8)
        labels = ("warmup/cooldown", "anchor", "compute", "reuse")
        return {label: int((codes == code).sum()) for code, label in enumerate(labels)}
