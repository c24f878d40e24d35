"""fused/row_reductions.py widens inductor's persistent-reduction limit to rows of up to 2048 elements, and only
that: other reductions keep inductor's own answer. (What it buys on a GPU is in bench/profile_forward.py's
`+rows` variants; inductor asks this question only when it generates Triton code, so here it is asked directly.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from torch._inductor.choices import InductorChoices
from torch._inductor.ir import ReductionHint
from torch._inductor.sizevars import SizeVarAllocator
from torch._inductor.virtualized import V

from chitu_diffusion.fused.row_reductions import MAX_PERSISTENT_ROW, WideRowChoices, use_wide_row_reductions


def features(numel: int, hint: ReductionHint):
    return SimpleNamespace(reduction_numel=numel, get_reduction_hint=lambda: hint)


@pytest.fixture
def inductor_says(monkeypatch):
    """Fix inductor's own answer, so the test sees what the handler adds to it."""

    def say(answer: bool):
        monkeypatch.setattr(InductorChoices, "should_use_persistent_reduction", staticmethod(lambda f, c: answer))

    return say


@pytest.mark.parametrize(
    ("numel", "hint", "cooperative", "expected"),
    [
        (1536, ReductionHint.INNER, False, True),  # a Wan-1.3B row: made persistent
        (MAX_PERSISTENT_ROW, ReductionHint.INNER, False, True),
        (MAX_PERSISTENT_ROW + 1, ReductionHint.INNER, False, False),  # e.g. Wan-14B's 5120: left looped
        (1536, ReductionHint.OUTER, False, False),  # not a row reduction
        (1536, ReductionHint.INNER, True, False),  # cooperative reductions split rows on purpose
    ],
)
def test_rows_up_to_the_limit_become_persistent(inductor_says, numel, hint, cooperative, expected):
    inductor_says(False)
    with V.set_graph_handler(SimpleNamespace(sizevars=SizeVarAllocator())):
        assert WideRowChoices.should_use_persistent_reduction(features(numel, hint), cooperative) is expected


def test_inductors_yes_stands(inductor_says):
    inductor_says(True)
    assert WideRowChoices.should_use_persistent_reduction(features(10**6, ReductionHint.OUTER), False) is True


def test_installing_is_idempotent():
    previous = V.choices
    try:
        use_wide_row_reductions()
        installed = V.choices
        use_wide_row_reductions()
        assert isinstance(installed, WideRowChoices) and V.choices is installed
    finally:
        V.set_choices_handler(previous)
