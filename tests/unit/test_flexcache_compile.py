"""The FlexCache strategies leave the DiT blocks compiled: no graph break inside a block, a fixed set of variants.

`compile_repeated_blocks` compiles one code object that every block shares; a strategy keeps it compiled when
its decisions are taken outside the blocks and read inside them as Python constants (pab.py, teacache/stack.py).
Each test compiles a fresh tiny model's blocks with `fullgraph=True` (a graph break is an error) and a backend
that counts the graphs dynamo hands it (one per compiled variant) and runs them as traced, with dynamo told to
fail instead of silently falling back to eager at its recompile limit. Over a 10-step CFG run the count must be
the planned variants, and the latents and decisions those of the same strategy run eagerly.
"""

import pytest
import torch
import torch._dynamo
from flexcache_loop import run, tiny_transformer

STEPS = 10


class GraphCounter:
    """A dynamo backend that records every graph it is given and runs it as traced (no inductor: CPU seconds)."""

    def __init__(self):
        self.graphs = []

    def __call__(self, graph: torch.fx.GraphModule, example_inputs):
        self.graphs.append(graph)
        return graph.forward


@pytest.fixture(params=[False, True], ids=["identity-guards", "precompile"])
def compiled(request):
    """A fresh tiny transformer whose blocks are compiled with fullgraph=True, and the graph counter; with
    dynamo's identity guards, and without them as the engine compiles (caching_precompile: compile_cache.py)."""
    torch._dynamo.reset()  # the blocks share `Module._call_impl`'s code object with any module compiled before
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True, caching_precompile=request.param):
        transformer, counter = tiny_transformer(), GraphCounter()
        transformer.compile_repeated_blocks(fullgraph=True, backend=counter)
        yield transformer, counter
    torch._dynamo.reset()


def eager_run(name: str, ratio: float):
    latents, summary, _ = run(tiny_transformer(), name, ratio, STEPS)
    return latents, summary


def pab_variants(summary: dict) -> set[tuple[bool, bool]]:
    """(self-attention computes, cross-attention computes) of every (step, branch), from the decision log."""
    computes: dict[tuple[int, str], dict[str, bool]] = {}
    for d in summary["decisions"]:
        computes.setdefault((d["step"], d["branch"]), {})[d["unit"].rsplit(".", 1)[1]] = d["decision"] != "reuse"
    return {(kinds["attn1"], kinds["attn2"]) for kinds in computes.values()}


def test_no_cache_compiles_the_blocks_once(compiled):
    transformer, counter = compiled
    latents, _, _ = run(transformer, "none", 0.0, STEPS)
    assert len(counter.graphs) == 1
    assert torch.equal(latents, eager_run("none", 0.0)[0])


def test_pab_compiles_one_variant_per_decision_pair_and_matches_eager(compiled):
    transformer, counter = compiled
    latents, summary, _ = run(transformer, "pab", 0.5, STEPS)
    variants = pab_variants(summary)
    assert (False, False) in variants and (True, True) in variants  # both reuse and compute were compiled
    assert len(counter.graphs) == len(variants) <= 4  # not per step, not per block
    eager_latents, eager_summary = eager_run("pab", 0.5)
    assert summary == eager_summary and summary["units_reused"] > 0
    assert torch.equal(latents, eager_latents)
    run(transformer, "pab", 0.5, STEPS)  # the next request: new hooks, same graphs
    assert len(counter.graphs) == len(variants)


def test_teacache_compiles_three_variants_and_matches_eager(compiled):
    transformer, counter = compiled
    latents, summary, _ = run(transformer, "teacache", 0.5, STEPS)
    assert summary["units_reused"] > 0
    assert len(counter.graphs) == 3  # reuse (pass-through), first computing block, other computing blocks
    eager_latents, eager_summary = eager_run("teacache", 0.5)
    assert summary == eager_summary
    assert torch.equal(latents, eager_latents)
    run(transformer, "teacache", 0.5, STEPS)
    assert len(counter.graphs) == 3


def test_strategies_in_turn_reuse_their_variants_under_the_recompile_limit(compiled):
    """One engine serves requests with different strategies: removing a strategy leaves the blocks as they were
    (no variant for 'after PAB'), so a second round compiles nothing and every variant fits in dynamo's cache
    at once (no eager fallback)."""
    transformer, counter = compiled
    for name in ("none", "pab", "teacache"):
        run(transformer, name, 0.5, STEPS)
    first_round = len(counter.graphs)
    assert first_round == 1 + 3 + 3 <= torch._dynamo.config.recompile_limit
    for name in ("none", "pab", "teacache"):
        run(transformer, name, 0.5, STEPS)
    assert len(counter.graphs) == first_round


def test_pab_through_aot_autograd_matches_eager():
    """The output slots are written inside the graph: AOT autograd's functionalization (what inductor gets)
    must keep those writes, or a broadcast step would return a stale output."""
    torch._dynamo.reset()
    transformer = tiny_transformer()
    transformer.compile_repeated_blocks(fullgraph=True, backend="aot_eager")
    try:
        latents, summary, _ = run(transformer, "pab", 0.5, STEPS)
    finally:
        torch._dynamo.reset()
    eager_latents, eager_summary = eager_run("pab", 0.5)
    assert summary == eager_summary
    torch.testing.assert_close(latents, eager_latents, rtol=1e-5, atol=1e-6)
