"""Small elementwise helpers fused into one GPU kernel each by torch.compile (inductor), eager on CPU.

Merging attention states and measuring their drift are a handful of elementwise passes over (B, L, H, D) tensors;
eager PyTorch runs each pass as its own kernel (fp32 temporaries, ~5 round trips to memory), which on a 32k-token
shard costs a noticeable share of one attention call. Compiled, each helper is a single read of its inputs.
CPU runs (tests, gloo gangs) stay eager: no compiler toolchain needed, same math.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


def fused_on_cuda(fn: F) -> F:
    """`fn` compiled (static shapes) when its first argument, a tensor or a list of tensors, is on CUDA."""
    compiled = torch.compile(fn, dynamic=False)

    @functools.wraps(fn)
    def call(first, *args, **kwargs):
        tensor = first[0] if isinstance(first, (list, tuple)) else first
        return (compiled if tensor.is_cuda else fn)(first, *args, **kwargs)

    return call  # type: ignore[return-value]
