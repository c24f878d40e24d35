"""A Wan block's gated residual + LayerNorm + modulation + FP8 quantise, as one pass over each (tokens, dim) row.

In FP8 every norm of a Wan block feeds FP8 linears: norm1 (modulated) the self-attention's q/k/v, norm2 (affine,
after the self-attention's gated residual) the cross-attention's q, norm3 (modulated, after the cross-attention's
residual) the feed-forward's up projection. Compiled, inductor makes these three kernels per block that read the
row twice or more: 17.5 ms of a 0.337 s FP8 forward on an H200 (bench/results/README.md, sixth session). The bytes
the three passes must move (rows and residuals in, the stream and the e4m3 codes out: 25 GB per forward at
81x480x832) take about 5 ms at the card's memory speed. Here a Triton program holds whole rows in registers (1536
wide in Wan2.1-1.3B) and writes the residual stream and the rows' e4m3 codes and scales once.

The function is `norm_quantize_reference`; on the CPU the tests run the kernel through Triton's interpreter
against it, and off CUDA `norm_quantize` runs the reference. `FusedNormWanBlock` (fp8_block.py) is the block
forward that calls it. Staged: the engine's FP8 does not swap it in (`apply_precision(fused_norms=False)`) until a
GPU says it is faster: `bench/profile_forward.py --checks norm_quantize` times the kernel against inductor's
compile of the same function, and the variant `fp8+xattn+rows+fastacc+lnq` a whole forward with it.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from chitu_diffusion.precision.fp8_linear import ROW, QuantizedRows
from chitu_diffusion.precision.fp8_scaling import E4M3, quantize


def norm_quantize_reference(
    x: torch.Tensor,
    delta: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, L, C) residual stream `x` -> (the stream after the residual, (B*L, C) e4m3 codes, (B*L, 1) fp32 scales).

    As diffusers' WanTransformerBlock computes it: with `delta`, the stream becomes x + delta * gate in fp32 (or
    x + delta in x's dtype without a gate) rounded to x's dtype; then LayerNorm in fp32 (`weight`, `bias`: its
    affine), times (1 + `scale`) plus `shift` (the modulation; (B, 1, C) or (B, L, C) fp32). The normed rows are
    quantised per row from fp32, one rounding fewer than the bf16 path, which rounds them to bf16 first."""
    if delta is not None:
        x = (x.float() + delta.float() * gate).to(x.dtype) if gate is not None else x + delta
    affine = [t.float() if t is not None else None for t in (weight, bias)]
    normed = F.layer_norm(x.float(), x.shape[-1:], *affine, eps)
    if scale is not None:
        normed = normed * (1 + scale) + shift
    codes, scales = quantize(normed.reshape(-1, x.shape[-1]), ROW)
    return x, codes, scales


@functools.cache
def triton_norm_quantize(rows_per_program: int = 4, num_warps: int = 8):
    """The fused kernel's launcher (fp8_norm_triton.py, imported only where Triton runs it): `rows_per_program`
    whole rows per program, the row padded to a power of two and masked."""
    from chitu_diffusion.precision import fp8_norm_triton

    return functools.partial(fp8_norm_triton.norm_quantize, rows_per_program=rows_per_program, num_warps=num_warps)


@torch.library.custom_op("chitu::norm_quantize", mutates_args=())
def _fused_norm_quantize(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel without a residual, as an operator compiled graphs hold whole (as fp8_ffn.py's): codes, scales."""
    _, codes, scales = triton_norm_quantize()(x, None, None, weight, bias, scale, shift, eps)
    return codes, scales


def _empty_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = x.shape[0] * x.shape[1]
    return x.new_empty((rows, x.shape[2]), dtype=E4M3), x.new_empty((rows, 1), dtype=torch.float32)


@_fused_norm_quantize.register_fake
def _(x, weight, bias, scale, shift, eps):
    return _empty_rows(x)


@torch.library.custom_op("chitu::residual_norm_quantize", mutates_args=())
def _fused_residual_norm_quantize(
    x: torch.Tensor,
    delta: torch.Tensor,
    gate: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel with a residual: the new stream, codes, scales (a separate operator: an operator's output may
    not be its input, which the stream is without a residual)."""
    return triton_norm_quantize()(x, delta, gate, weight, bias, scale, shift, eps)


@_fused_residual_norm_quantize.register_fake
def _(x, delta, gate, weight, bias, scale, shift, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format), *_empty_rows(x)


def norm_quantize(
    x: torch.Tensor,
    delta: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, QuantizedRows]:
    """`norm_quantize_reference`'s stream and rows (as `QuantizedRows` for the FP8 linears they feed): the Triton
    kernel on CUDA, the reference elsewhere."""
    if not x.is_cuda:
        stream, codes, scales = norm_quantize_reference(x, delta, gate, weight, bias, scale, shift, eps)
    elif delta is None:
        stream, (codes, scales) = x, _fused_norm_quantize(x, weight, bias, scale, shift, eps)
    else:
        stream, codes, scales = _fused_residual_norm_quantize(x, delta, gate, weight, bias, scale, shift, eps)
    return stream, QuantizedRows(codes, scales, x.shape, x.dtype)
