"""Fixtures of the distributed tier: each gang spawned once per session, and the single-process references.

`gang_results(name)` starts the gang that runs scenario `name` on first use (2 or 4 gloo ranks, every scenario of
that gang in one spawn) and returns its per-rank results; `single(scenario)` runs the same job in this process.
"""

from __future__ import annotations

import pytest
import torch
from harness import Scenario, run_single, spawn, tiny_transformer
from scenarios import FOUR_RANKS, TWO_RANKS, WORLD


@pytest.fixture(scope="session")
def gang2(tmp_path_factory) -> dict[str, list[dict]]:
    return spawn(2, TWO_RANKS, tmp_path_factory.mktemp("gang2"))


@pytest.fixture(scope="session")
def gang4(tmp_path_factory) -> dict[str, list[dict]]:
    return spawn(4, FOUR_RANKS, tmp_path_factory.mktemp("gang4"))


@pytest.fixture(scope="session")
def gang_results(request):
    def results(name: str) -> list[dict]:
        return request.getfixturevalue(f"gang{WORLD[name]}")[name]

    return results


@pytest.fixture(scope="session")
def single():
    transformer = tiny_transformer()
    memo: dict[tuple, dict] = {}

    def reference(scenario: Scenario) -> dict:
        key = (scenario.strategy, scenario.cache_ratio, scenario.steps, scenario.warmup, scenario.cooldown)
        if key not in memo:
            with torch.no_grad():
                memo[key] = run_single(transformer, scenario)
        return memo[key]

    return reference


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())
