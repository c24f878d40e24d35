"""DiTango under ring attention (spawned gloo gangs): ratio 0 is bit-identical to plain ring CP, ratio 0.5 reuses
with the same plan on every rank and both CFG branches, and the policy picture has one pixel per decision."""

import re

import pytest
import torch
from conftest import rel_l2
from harness import tiny_transformer
from scenarios import BY_NAME

from chitu_diffusion.config import EngineConfig
from chitu_diffusion.engines.checks import check_launch, check_request
from chitu_diffusion.engines.parallelize import parallelize
from chitu_diffusion.flex_cache.base import Decision
from chitu_diffusion.flex_cache.registry import get_strategy
from chitu_diffusion.flex_cache.strategy.ditango.ditango import POLICY_FILE
from chitu_diffusion.flex_cache.strategy.ditango.planner import CODES
from chitu_diffusion.flex_cache.strategy.ditango.policy_image import LEGEND, read_ppm
from chitu_diffusion.models.adapter import adapter_for
from chitu_diffusion.parallel.degrees import LayoutError, ParallelLayout
from chitu_diffusion.parallel.groups import ParallelGroups
from chitu_diffusion.task import DiffusionUserParams, FlexCacheParams

LAYOUTS = sorted({name.rsplit("-", 1)[0] for name, s in BY_NAME.items() if s.strategy == "ditango"})
LAYERS = 4


@pytest.mark.distributed
@pytest.mark.parametrize("layout", LAYOUTS)
def test_ratio_zero_is_bit_identical_to_ring_without_cache(layout, gang_results):
    plain, ditango = gang_results(f"{layout}-none"), gang_results(f"{layout}-ditango0")
    for rank, (a, b) in enumerate(zip(plain, ditango, strict=True)):
        assert torch.equal(a["latents"], b["latents"]), rank
        assert not any(d["decision"] == "reuse" for d in b["decisions"])
        assert b["ratio"]["anchor_interval"] == 1


def _plan(decisions: list[dict]) -> dict[str, list[tuple]]:
    """branch -> [(step, unit, decision)] in call order."""
    plans: dict[str, list[tuple]] = {}
    for d in decisions:
        plans.setdefault(d["branch"], []).append((d["step"], d["unit"], d["decision"]))
    return plans


@pytest.mark.distributed
@pytest.mark.parametrize("layout", LAYOUTS)
def test_ratio_half_reuses_with_one_plan_for_all_ranks_and_branches(layout, gang_results):
    plain, ranks = gang_results(f"{layout}-none"), gang_results(f"{layout}-ditango0.5")
    plans = [plan for result in ranks for plan in _plan(result["decisions"]).values()]
    assert all(plan == plans[0] for plan in plans), "every rank and branch must follow the same plan"
    counts = ranks[0]["ratio"]["decision_counts"]
    assert counts["reuse"] > 0 and counts["anchor"] > 0, counts
    for a, b in zip(plain, ranks, strict=True):
        assert torch.equal(b["latents"], ranks[0]["latents"])
        assert 0 < rel_l2(b["latents"], a["latents"]) < 0.05  # reuse is approximate, and close on this model


@pytest.mark.distributed
@pytest.mark.parametrize("layout", LAYOUTS)
def test_policy_picture_has_one_pixel_per_decision(layout, gang_results):
    rank0 = gang_results(f"{layout}-ditango0.5")[0]
    groups, steps = rank0["ratio"]["groups_per_layer"], BY_NAME[f"{layout}-ditango0.5"].steps
    ppm = next(f for f in rank0["files"] if f.endswith(POLICY_FILE))
    pixels = read_ppm(ppm)  # (layers x groups, steps, 3)
    assert pixels.shape == (LAYERS * groups, steps, 3)
    colour = {decision: LEGEND[code][1] for decision, code in CODES.items()}
    for d in rank0["decisions"]:
        layer, group = map(int, re.fullmatch(r"blocks\.(\d+)\.attn1\.group(\d+)", d["unit"]).groups())
        assert tuple(pixels[layer * groups + group, d["step"]]) == colour[Decision(d["decision"])]
    assert any(f.endswith(".png") for f in rank0["files"])


def test_single_device_is_a_clear_error():
    """One process is ring 1: the launch check refuses it before any load, naming the settings to change."""
    with pytest.raises(LayoutError, match=r"'ditango' needs ring attention .* cp_size 1 .* use cp_size >= 2"):
        check_launch(EngineConfig(), "ditango")
    transformer = tiny_transformer()
    strategy = get_strategy("ditango")(FlexCacheParams(strategy="ditango"), adapter_for(transformer))
    with pytest.raises(ValueError, match="cp_size>=2"):
        strategy.apply(transformer)


def test_a_ulysses_only_gang_is_a_clear_error():
    """Checked per request before any collective (the request check), and by the strategy when attached: the
    groups' communicators are never touched."""
    layout = ParallelLayout(ulysses=2)
    request = DiffusionUserParams(prompt="a cat", num_frames=9, height=64, width=64, flexcache="ditango")
    with pytest.raises(LayoutError, match=r"ulysses 2 x ring 1.*up_limit 1 puts all of cp_size on the ring"):
        check_request(request, layout, up_limit=8, num_heads=4)
    check_request(request, ParallelLayout(ring=2), up_limit=1, num_heads=4)  # the same request on a ring of 2 runs
    groups = ParallelGroups(layout, 0, torch.device("cpu"), None, None, None, None, None, (0,))
    transformer = tiny_transformer()
    with pytest.raises(ValueError, match="ring degree >= 2"):
        parallelize(transformer, adapter_for(transformer), groups, cache=FlexCacheParams(strategy="ditango"))
