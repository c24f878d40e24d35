"""DiTango's step policy on one process (LocalReducer): anchors, the ratio mapping, reuse from ASE rates."""

import math

import numpy as np
import pytest
import torch

from chitu_diffusion.flex_cache.base import Decision, LocalReducer
from chitu_diffusion.flex_cache.strategy.ditango.planner import DiTangoConfig, DiTangoPlanner
from chitu_diffusion.flex_cache.strategy.ditango.policy_image import LEGEND, read_ppm, write_png, write_ppm
from chitu_diffusion.task import FlexCacheParams

LAYERS = 2


def planner(ratio: float, ring: int = 2, warmup: int = 1, cooldown: int = 1) -> DiTangoPlanner:
    params = FlexCacheParams(strategy="ditango", cache_ratio=ratio, warmup=warmup, cooldown=cooldown)
    return DiTangoPlanner(DiTangoConfig.from_ratio(ratio, ring), params, LAYERS, LocalReducer())


@pytest.mark.parametrize(
    "ratio, ring, interval, groups",
    [(0.0, 2, 1, 1), (0.5, 2, 4, 1), (1.0, 2, 7, 1), (0.5, 3, 4, 2), (0.5, 8, 4, 7)],
)
def test_ratio_mapping(ratio, ring, interval, groups):
    config = DiTangoConfig.from_ratio(ratio, ring)
    assert (config.anchor_interval, config.num_groups, config.quantile) == (interval, groups, ratio)


def test_ratio_zero_is_full_compute_with_nothing_stored_or_measured():
    plan = planner(0.0)
    for step in range(6):
        plan.begin_step(step, 6)
        assert plan.compute.all() and not plan.storing and not plan.measuring
        assert plan.kind in (Decision.WARMUP, Decision.ANCHOR, Decision.COOLDOWN)
    assert plan.counts()["reuse"] == plan.counts()["compute"] == 0


def _run_with_rates(plan: DiTangoPlanner, steps: int, rates: torch.Tensor) -> list:
    """Drive the planner, reporting squared errors that give `rates` (ASE per step) at every anchor."""
    kinds = []
    for step in range(steps):
        plan.begin_step(step, steps)
        plan.begin_step(step, steps)  # the second CFG branch: idempotent
        kinds.append(plan.kind)
        if plan.measuring:
            age = plan.pending_age
            for layer in range(LAYERS):
                plan.observe_reference(layer, torch.tensor(1.0))
                for group in range(rates.shape[1]):
                    if not math.isnan(age[layer, group]):
                        plan.observe(layer, group, torch.tensor(float(rates[layer, group] * age[layer, group]) ** 2))
    return kinds


def test_anchors_measure_and_groups_stay_reused_within_the_interval_budget():
    plan = planner(0.5, ring=5)  # 4 remote groups per layer; anchor interval 4 -> a budget of 3 planned steps
    rates = torch.tensor([[0.01, 0.02, 0.30, 0.40], [0.01, 0.50, 0.60, 2.00]])  # (layers, groups) ASE per step
    kinds = _run_with_rates(plan, 10, rates)
    assert kinds[0] is Decision.WARMUP and kinds[9] is Decision.COOLDOWN
    assert [s for s, k in enumerate(kinds) if k is Decision.ANCHOR] == [1, 5]
    torch.testing.assert_close(plan.rates, rates)
    median = float(torch.quantile(rates, 0.5))  # 0.35
    assert plan.threshold == pytest.approx(3 * median)  # the same after the anchors at 1 and 5
    # step 2, everything 1 step stale: reuse while rate * 1 <= 1.05
    assert plan.history[2].tolist() == [[3, 3, 3, 3], [3, 3, 3, 2]]
    # step 3: reused groups are 2 steps stale (rate <= 0.525); 2.00 was recomputed at step 2 and still drifts too fast
    assert plan.history[3].tolist() == [[3, 3, 3, 3], [3, 3, 2, 2]]
    # step 4: 3 steps stale needs rate <= 0.35; 0.60 was recomputed at step 3, so it is 1 step stale again
    assert plan.history[4].tolist() == [[3, 3, 3, 2], [3, 2, 3, 2]]


def test_higher_ratio_never_reuses_less():
    rates = torch.rand(LAYERS, 4, generator=torch.Generator().manual_seed(0))
    reuse = []
    for ratio in (0.1, 0.3, 0.5, 0.7, 0.9):
        plan = planner(ratio, ring=5)
        _run_with_rates(plan, 30, rates)
        reuse.append(plan.counts()["reuse"])
    assert reuse == sorted(reuse) and reuse[-1] > 0, reuse


def test_policy_picture_roundtrip(tmp_path):
    codes = np.array([[0, 0, 0], [1, 1, 1], [2, 3, 2], [3, 3, 3]], dtype=np.uint8)  # (steps, rows)
    pixels = read_ppm(write_ppm(tmp_path / "p.ppm", codes))
    assert pixels.shape == (3, 4, 3)  # (rows, steps, RGB)
    assert tuple(pixels[1, 2]) == LEGEND[3][1] and tuple(pixels[0, 1]) == LEGEND[1][1]
    from PIL import Image

    assert Image.open(write_png(tmp_path / "p.png", codes)).size == (4 * 8, 3 * 8)
