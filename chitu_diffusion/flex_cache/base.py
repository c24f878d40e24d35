"""The FlexCache strategy interface shared by every strategy and by the denoising loop.

Contract with the pipeline: every transformer call runs inside
`transformer.cache_context(branch, step_index=i, num_inference_steps=n, timestep=t)` (diffusers' CacheMixin),
with `branch` "cond" or "uncond". Strategies attach diffusers `ModelHook`s to the transformer's submodules;
their per-branch state lives in a `diffusers.hooks.StateManager` so cond and uncond never share a cache.
Model facts (which modules are blocks / attention, where the modulated input is) come from the `ModelAdapter`.

A *unit* is what a strategy computes or reuses (TeaCache: a whole block stack pass; PAB: one attention
module call; DiTango: one (layer, K/V group) attention state). Every decision is logged, so metrics report
units computed vs reused per step and the achieved reuse fraction identically for all strategies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import torch

if TYPE_CHECKING:
    from chitu_diffusion.models.adapter import ModelAdapter
    from chitu_diffusion.task import FlexCacheParams


class Decision(StrEnum):
    WARMUP = "warmup"  # forced full compute: first `warmup` steps
    COOLDOWN = "cooldown"  # forced full compute: last `cooldown` steps
    ANCHOR = "anchor"  # forced full compute chosen by the strategy (e.g. DiTango's anchor steps)
    COMPUTE = "compute"  # the strategy chose to compute
    REUSE = "reuse"  # the strategy reused a cached result

    @property
    def reused(self) -> bool:
        return self is Decision.REUSE


@dataclass(frozen=True)
class DecisionRecord:
    step: int
    branch: str
    unit: str
    decision: Decision
    score: float | None = None  # the statistic the decision was taken on (accumulated L1, ASE, ...)


@dataclass
class DecisionLog:
    """Every compute/reuse decision of one request, in call order."""

    records: list[DecisionRecord] = field(default_factory=list)

    def record(self, step: int, branch: str, unit: str, decision: Decision, score: float | None = None) -> None:
        self.records.append(DecisionRecord(step, branch, unit, decision, score))

    def clear(self) -> None:
        self.records.clear()

    def summary(self) -> dict:
        """Units computed vs reused per step and in total, the achieved reuse fraction, and the raw log."""
        per_step: dict[int, dict[str, int]] = defaultdict(lambda: {"computed": 0, "reused": 0})
        for r in self.records:
            per_step[r.step]["reused" if r.decision.reused else "computed"] += 1
        computed = sum(s["computed"] for s in per_step.values())
        reused = sum(s["reused"] for s in per_step.values())
        return {
            "units_computed": computed,
            "units_reused": reused,
            "reuse_fraction": reused / (computed + reused) if computed + reused else 0.0,
            "per_step": [{"step": step, **counts} for step, counts in sorted(per_step.items())],
            "decisions": [
                {"step": r.step, "branch": r.branch, "unit": r.unit, "decision": r.decision.value, "score": r.score}
                for r in self.records
            ],
        }


class StatsReducer(Protocol):
    """Makes a statistic global before a decision is taken on it, so all ranks decide alike."""

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor: ...

    def all_reduce_max(self, value: torch.Tensor) -> torch.Tensor: ...


class LocalReducer:
    """Single process: every statistic is already global."""

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def all_reduce_max(self, value: torch.Tensor) -> torch.Tensor:
        return value


class FlexCacheStrategy(ABC):
    """One feature-reuse strategy, applied to a transformer from outside via hooks."""

    #: The strategy's folder name; what it needs from the parallel layout is a trait in the folder's `__init__`.
    name: ClassVar[str]

    def __init__(self, params: FlexCacheParams, adapter: ModelAdapter, reducer: StatsReducer | None = None):
        self.params = params
        self.adapter = adapter
        self.reducer = reducer or LocalReducer()
        self.log = DecisionLog()

    @abstractmethod
    def apply(self, transformer: torch.nn.Module) -> None:
        """Register this strategy's hooks on `transformer`."""

    @abstractmethod
    def remove(self, transformer: torch.nn.Module) -> None:
        """Remove every hook `apply` registered, leaving the transformer as it was."""

    def reset(self) -> None:
        """Forget all cached tensors and decisions (between requests)."""
        self.log.clear()

    def extra_memory_bytes(self) -> int:
        """Peak bytes of cached tensors held during the request (reported in metrics)."""
        return 0

    def describe_ratio(self) -> dict:
        """How `cache_ratio` maps onto this strategy's own knobs (reported in metrics)."""
        return {}

    def write_visualisations(self, output_dir: Path) -> list[Path]:
        """Files (e.g. a policy image) describing this request's decisions; none by default."""
        return []
