"""What every single-device FlexCache strategy promises, checked for each one on the tiny transformer: its hooks
act and leave nothing behind, and a higher cache_ratio never reuses less. Strategy-specific behaviour lives in
test_flexcache_<strategy>.py."""

import pytest
import torch
from flexcache_loop import STEPS, denoise, make_strategy, run

from chitu_diffusion.flex_cache.registry import requires_ring_attention, strategy_names

#: every strategy that caches on one device, read from the registry: a new strategy folder is tested here unasked
STRATEGIES = tuple(s for s in strategy_names() if s != "none" and not requires_ring_attention(s))


def test_the_single_device_strategies_are_found():
    assert set(STRATEGIES) == {"teacache", "pab"}


@pytest.mark.parametrize("name", STRATEGIES)
def test_apply_then_remove_leaves_forward_identical(name, transformer, reference):
    strategy = make_strategy(name, 1.0, transformer=transformer)
    strategy.apply(transformer)
    assert not torch.equal(denoise(transformer, STEPS), reference)  # the hooks do act...
    strategy.remove(transformer)
    assert torch.equal(denoise(transformer, STEPS), reference)  # ...and leave nothing behind


@pytest.mark.parametrize("name", STRATEGIES)
def test_reuse_never_decreases_with_the_ratio(name, transformer):
    ratios = [i / 20 for i in range(21)]
    fractions = [run(transformer, name, r, STEPS)[1]["reuse_fraction"] for r in ratios]
    assert fractions == sorted(fractions), dict(zip(ratios, fractions, strict=True))
    assert fractions[ratios.index(0.5)] > 0
    assert fractions[-1] > fractions[0] == 0
