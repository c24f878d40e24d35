"""The layouts x FlexCache settings the distributed tier runs: one 2-rank gang and one 4-rank gang run them all.

Names read `<layout>-<strategy>[<ratio>]`. Layouts on 2 ranks: cfg2 (CFG parallel), ulysses2 and ring2 (CP=2);
on 4 ranks: cfg2xulysses2, cfg2xring2, ulysses2xring2 (CP=4, hybrid) and ring4 (three hops: double buffering).
Every scenario runs 6 steps (harness.Scenario): DiTango then has warmup 0, anchors 1 and 5, planned steps 2-4
and cooldown 5 (cooldown wins over the anchor).
"""

from __future__ import annotations

from harness import Scenario

LAYOUTS_2 = {"cfg2": dict(cp_size=1), "ulysses2": dict(cp_size=2, up_limit=2), "ring2": dict(cp_size=2, up_limit=1)}
LAYOUTS_4 = {
    "cfg2xulysses2": dict(cp_size=2, up_limit=2),
    "cfg2xring2": dict(cp_size=2, up_limit=1),
    "ulysses2xring2": dict(cp_size=4, up_limit=2),
    "ring4": dict(cp_size=4, up_limit=1),
}


def has_ring(degrees: dict) -> bool:
    return degrees["cp_size"] > 1 and degrees.get("up_limit", 8) < degrees["cp_size"]


def scenarios(layouts: dict[str, dict], cached: tuple[str, ...]) -> list[Scenario]:
    found = []
    for layout, degrees in layouts.items():
        found += [Scenario(f"{layout}-{strategy}", strategy=strategy, **degrees) for strategy in ("none", *cached)]
        if has_ring(degrees):
            for ratio in (0.0, 0.5):
                found.append(Scenario(f"{layout}-ditango{ratio:g}", strategy="ditango", cache_ratio=ratio, **degrees))
    return found


# A gang is slow to start (4 ranks on 2 cores), not to run: every scenario of a world size shares one spawn.
TWO_RANKS = scenarios(LAYOUTS_2, ("teacache", "pab"))
FOUR_RANKS = scenarios(LAYOUTS_4, ("teacache", "pab"))
BY_NAME = {s.name: s for s in TWO_RANKS + FOUR_RANKS}
WORLD = {**{s.name: 2 for s in TWO_RANKS}, **{s.name: 4 for s in FOUR_RANKS}}
