"""Let inductor keep a whole row of the DiT's width in registers when it fuses a norm into its neighbours.

Each Wan block has three fused "gated residual + LayerNorm + modulation" kernels over (tokens, 1536) rows.
Inductor gives a row reduction one pass over the row (a persistent reduction) only up to 1024 elements; wider rows
get a looped kernel that reads the row twice and runs Welford's update per element. On an H200 those kernels move
their bytes at about 1.1-2.3 TB/s, 16 ms of a 0.45 s forward (bench/results/profile_h200.json). 2048 elements
(8 KiB in fp32) still fit one program's registers, so rows up to that width are made persistent.

Inductor asks `V.choices` for this decision; the handler below widens only that one answer. The handler is not
part of inductor's cache key, so the engine keeps these kernels in their own cache folder (compile_cache.py).
"""

from __future__ import annotations

from torch._inductor.choices import InductorChoices
from torch._inductor.virtualized import V

#: widest row (elements) made persistent; inductor's own limit is 1024
MAX_PERSISTENT_ROW = 2048


class WideRowChoices(InductorChoices):
    """Inductor's choices, with inner (row) reductions up to `MAX_PERSISTENT_ROW` persistent. A module-level class:
    inductor pickles the handler with its cache entries."""

    @staticmethod
    def should_use_persistent_reduction(features, cooperative_reduction: bool) -> bool:
        if InductorChoices.should_use_persistent_reduction(features, cooperative_reduction):
            return True
        from torch._inductor.ir import ReductionHint

        if cooperative_reduction or features.get_reduction_hint() != ReductionHint.INNER:
            return False
        return V.graph.sizevars.statically_known_leq(features.reduction_numel, MAX_PERSISTENT_ROW)


def use_wide_row_reductions() -> None:
    """Install the handler for every later compile in this process (inductor reads it while generating code)."""
    if not isinstance(V.choices, WideRowChoices):
        V.set_choices_handler(WideRowChoices())
