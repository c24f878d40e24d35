"""Every parallel layout reproduces the single-process latents, and TeaCache / PAB take the same decisions on
every rank as in one process (spawned gloo gangs, tiny fp32 model, 6 steps)."""

import pytest
import torch
from conftest import rel_l2
from scenarios import BY_NAME

from chitu_diffusion.parallel.cfg import BRANCHES

pytestmark = pytest.mark.distributed

EXACT = [name for name, s in BY_NAME.items() if s.strategy != "ditango"]
CACHED = [name for name, s in BY_NAME.items() if s.strategy in ("teacache", "pab")]


@pytest.mark.parametrize("name", EXACT)
def test_latents_match_single_process(name, gang_results, single):
    ranks = gang_results(name)
    reference = single(BY_NAME[name])["latents"]
    for rank, result in enumerate(ranks):
        assert rel_l2(result["latents"], reference) < 1e-4, (rank, result["layout"])
        assert torch.equal(result["latents"], ranks[0]["latents"]), f"rank {rank} diverged from rank 0"


def _key(decisions: list[dict]) -> list[tuple]:
    return [(d["step"], d["branch"], d["unit"], d["decision"]) for d in decisions]


def _approx(score: float | None):
    return None if score is None else pytest.approx(score, rel=1e-6)


@pytest.mark.parametrize("name", CACHED)
def test_cache_decisions_identical_on_all_ranks_and_to_single_process(name, gang_results, single):
    reference = single(BY_NAME[name])["decisions"]
    assert any(d["decision"] == "reuse" for d in reference), "the scenario must exercise reuse"
    for rank, result in enumerate(ranks := gang_results(name)):
        layout = result["layout"]
        branches = {BRANCHES[rank // layout["cp"]]} if layout["cfg"] == 2 else set(BRANCHES)
        assert {d["branch"] for d in result["decisions"]} == branches, rank
        expected = [d for d in reference if d["branch"] in branches]
        assert _key(result["decisions"]) == _key(expected), f"rank {rank} decided differently"
        assert [d["score"] for d in result["decisions"]] == [_approx(d["score"]) for d in expected]
    assert len(ranks) == layout["world_size"]


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_the_transformer_is_plain_after_each_request(name, gang_results):
    """parallelize's removal restores processors and drops every hook (CP boundaries and the cache's)."""
    assert all(result["plain_after"] for result in gang_results(name))
