"""FP8 (e4m3) scaling, the one rule every FP8 path here uses: scale = amax / 448 per group, values / scale
rounded to e4m3, and the scale kept in fp32 to multiply back.

A group is one row of an activation matrix, one output channel of a weight, or one (batch, head) of an attention
input. e4m3 keeps 3 mantissa bits, so one rounding has a relative error of at most 2^-4 per element; that (and
nothing else) is what FP8 gives up against bf16's 2^-8.
"""

from __future__ import annotations

import torch

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448.0
# A group of zeros still needs a finite, non-zero scale (0 / tiny = 0, never NaN).
MIN_AMAX = 1e-12


def scales(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """fp32 scales amax(|x|) / 448 reduced over `dims` (kept as size-1 dims, so they broadcast against x)."""
    return x.abs().amax(dim=dims, keepdim=True).float().clamp(min=MIN_AMAX) / E4M3_MAX


def quantize(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / scale as e4m3, scale): every group over `dims` uses its own scale, its largest value maps to 448."""
    scale = scales(x, dims)
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def dequantize(x8: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The values an FP8 kernel computes with: x8 * scale."""
    return (x8.float() * scale).to(dtype)
