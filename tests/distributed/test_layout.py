"""ParallelLayout rules and errors, the process-group rank lists, and the launch environment (no processes)."""

import pytest

from chitu_diffusion.config import ConfigError, EngineConfig
from chitu_diffusion.engines.checks import check_launch
from chitu_diffusion.parallel.degrees import LayoutError, ParallelLayout, ulysses_degree
from chitu_diffusion.parallel.groups import _rank_lists
from chitu_diffusion.parallel.launch import DistributedEnv


@pytest.mark.parametrize(
    "world, cp, up_limit, heads, expected",
    [
        (1, 1, 8, 12, ParallelLayout(1, 1, 1)),
        (2, 1, 8, 12, ParallelLayout(cfg=2)),  # CFG parallel only
        (2, 2, 8, 12, ParallelLayout(ulysses=2)),
        (2, 2, 1, 12, ParallelLayout(ring=2)),  # up_limit 1: all ring
        (4, 2, 8, 12, ParallelLayout(cfg=2, ulysses=2)),
        (8, 8, 8, 12, ParallelLayout(ulysses=4, ring=2)),  # 8 does not divide 12 heads: ulysses 4, ring 2
        (8, 8, 3, 12, ParallelLayout(ulysses=2, ring=4)),  # largest divisor of 8 that is <= 3
        (4, 4, 81, 4, ParallelLayout(ulysses=4)),  # the seed's up_limit=81 example: capped by cp and heads
    ],
)
def test_resolve(world, cp, up_limit, heads, expected):
    assert ParallelLayout.resolve(world, cp, up_limit, heads) == expected


def test_ulysses_degree_is_the_largest_allowed_divisor():
    assert ulysses_degree(12, 8, 40) == 4  # divisors of 12 <= 8: 1 2 3 4 6; 6 does not divide 40
    assert ulysses_degree(6, 6, 5) == 1


@pytest.mark.parametrize(
    "world, cp, message",
    [
        (3, 2, "world size 3 is not a multiple of infer.diffusion.cp_size=2"),
        (8, 2, "CFG parallelism uses at most 2 ranks"),
        (2, 0, "must be >= 1"),
    ],
)
def test_resolve_rejects_world_sizes_with_a_clear_error(world, cp, message):
    with pytest.raises(LayoutError, match=message) as err:
        ParallelLayout.resolve(world, cp, 8, 12)
    assert isinstance(err.value, ConfigError)  # the CLI prints ConfigErrors as usage errors


def test_validate_lists_every_problem():
    with pytest.raises(LayoutError) as err:
        ParallelLayout(cfg=3, ulysses=3, ring=1).validate(world_size=4, num_heads=4)
    text = str(err.value)
    for problem in ("cfg degree 3 > 2", "world size 4 != cfg 3 x cp 3", "not divisible by the Ulysses degree 3"):
        assert problem in text


def test_sequence_and_guidance_checks():
    layout = ParallelLayout(cfg=2, ulysses=2, ring=2)
    layout.check_tokens(32760)
    with pytest.raises(LayoutError, match="50 transformer tokens are not divisible by cp_size=4"):
        layout.check_tokens(50)
    layout.check_guidance(True)
    with pytest.raises(LayoutError, match="guidance_scale <= 1"):
        layout.check_guidance(False)
    ParallelLayout(ulysses=2).check_guidance(False)  # no CFG split: one branch is fine


def test_rank_lists_partition_the_world_consistently():
    layout = ParallelLayout(cfg=2, ulysses=2, ring=2)
    lists = _rank_lists(layout)
    for kind, size in (("cfg", 2), ("cp", 4), ("ulysses", 2), ("ring", 2)):
        members = sorted(r for ranks in lists[kind] for r in ranks)
        assert members == list(range(8)) and all(len(ranks) == size for ranks in lists[kind]), kind
    for ranks in lists["ring"]:  # a ring shares the Ulysses index (same heads) and the CFG branch
        coords = [layout.coordinates(r) for r in ranks]
        assert len({(c, u) for c, _, u in coords}) == 1 and [j for _, j, _ in coords] == [0, 1]
    assert lists["ulysses"][0] == [0, 1] and lists["ring"][0] == [0, 2] and lists["cfg"][0] == [0, 4]


def test_distributed_env():
    assert DistributedEnv.from_env({}) is None
    assert DistributedEnv.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == DistributedEnv(3, 4, 1)
    with pytest.raises(ValueError, match="outside WORLD_SIZE"):
        DistributedEnv.from_env({"WORLD_SIZE": "2", "RANK": "2"})


def test_launch_check_uses_the_models_heads_and_the_worst_case_without_them(monkeypatch):
    """One rule for "DiTango needs ring >= 2": with the model's 2 heads, cp 4 under up_limit 8 is Ulysses 2 x ring
    2 and runs; without the heads (the worker before its download, the contract at admission) Ulysses could take
    all 4 ranks, so the same settings are refused. A single process is ring 1."""
    config = EngineConfig.from_overrides(["infer.diffusion.cp_size=4", "infer.diffusion.up_limit=8"])
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    check_launch(config, "ditango", num_heads=2)
    with pytest.raises(LayoutError, match="ulysses 4 x ring 1"):
        check_launch(config, "ditango", num_heads=None)
    check_launch(config, "pab", num_heads=None)  # a strategy without the trait
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ConfigError, match="cp_size=4 needs context parallelism across processes"):
        check_launch(config, "none")
