"""The Triton kernel of fp8_norm.py: gated residual + LayerNorm + modulation + e4m3 cast, whole rows in registers.

Imported only where Triton runs it: on a CUDA device, or on the CPU through Triton's interpreter in the tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from chitu_diffusion.precision.fp8_scaling import E4M3, E4M3_MAX, MIN_AMAX


@triton.jit
def _load_rows(ptr, batch, token, cols, mask, stride_b, stride_l):
    """Rows of a (B, L or 1, C) tensor for the programs' tokens (stride_l 0: one row per batch, broadcast)."""
    return tl.load(ptr + batch[:, None] * stride_b + token[:, None] * stride_l + cols[None, :], mask=mask, other=0.0)


@triton.jit
def norm_quantize_rows(  # Triton's compile-time constants are upper case
    x_ptr,
    delta_ptr,
    gate_ptr,
    weight_ptr,
    bias_ptr,
    scale_ptr,
    shift_ptr,
    x_out_ptr,
    codes_ptr,
    row_scale_ptr,
    n_rows,
    seq_len,
    n_cols,
    eps,
    x_stride_b,
    x_stride_l,
    delta_stride_b,
    delta_stride_l,
    gate_stride_b,
    gate_stride_l,
    mod_stride_b,
    mod_stride_l,
    ROWS: tl.constexpr,  # noqa: N803
    BLOCK: tl.constexpr,  # noqa: N803  the row width rounded up to a power of two
    HAS_DELTA: tl.constexpr,  # noqa: N803
    HAS_GATE: tl.constexpr,  # noqa: N803
    HAS_AFFINE: tl.constexpr,  # noqa: N803
    HAS_MOD: tl.constexpr,  # noqa: N803
    FP8_MAX: tl.constexpr,  # noqa: N803
    AMAX_MIN: tl.constexpr,  # noqa: N803
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # (R,) flat token index b * L + l
    batch, token = rows // seq_len, rows % seq_len
    cols = tl.arange(0, BLOCK)
    col_ok = cols < n_cols
    mask = (rows < n_rows)[:, None] & col_ok[None, :]  # (R, BLOCK)
    x = _load_rows(x_ptr, batch, token, cols, mask, x_stride_b, x_stride_l)
    if HAS_DELTA:
        delta = _load_rows(delta_ptr, batch, token, cols, mask, delta_stride_b, delta_stride_l).to(tl.float32)
        if HAS_GATE:
            gate = _load_rows(gate_ptr, batch, token, cols, mask, gate_stride_b, gate_stride_l)
            x = (x.to(tl.float32) + delta * gate).to(x_out_ptr.dtype.element_ty)
        else:
            x = (x.to(tl.float32) + delta).to(x_out_ptr.dtype.element_ty)
        out_rows = rows[:, None] * n_cols + cols[None, :]
        tl.store(x_out_ptr + out_rows, x, mask=mask)
    x = x.to(tl.float32)
    mean = tl.sum(x, axis=1) / n_cols  # masked columns loaded as 0
    centred = tl.where(mask, x - mean[:, None], 0.0)
    variance = tl.sum(centred * centred, axis=1) / n_cols
    normed = centred * tl.rsqrt(variance + eps)[:, None]
    if HAS_AFFINE:
        weight = tl.load(weight_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        bias = tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        normed = normed * weight[None, :] + bias[None, :]
    if HAS_MOD:
        scale = _load_rows(scale_ptr, batch, token, cols, mask, mod_stride_b, mod_stride_l)
        shift = _load_rows(shift_ptr, batch, token, cols, mask, mod_stride_b, mod_stride_l)
        normed = normed * (1.0 + scale) + shift
    normed = tl.where(mask, normed, 0.0)
    row_scale = tl.maximum(tl.max(tl.abs(normed), axis=1), AMAX_MIN) / FP8_MAX  # (R,)
    quantized = tl.minimum(tl.maximum(normed / row_scale[:, None], -FP8_MAX), FP8_MAX)
    tl.store(codes_ptr + rows[:, None] * n_cols + cols[None, :], quantized.to(tl.float8e4nv), mask=mask)
    tl.store(row_scale_ptr + rows, row_scale, mask=rows < n_rows)


def _strides(t: torch.Tensor | None) -> tuple[int, int]:
    """(batch, token) strides of a (B, L or 1, C) tensor with unit column stride; a size-1 token dim broadcasts."""
    if t is None:
        return 0, 0
    if t.dim() != 3 or t.stride(2) != 1:
        raise ValueError(f"expected a (B, L, C) tensor with contiguous rows, got shape {tuple(t.shape)}")
    return t.stride(0), t.stride(1) if t.shape[1] > 1 else 0


def norm_quantize(
    x: torch.Tensor,
    delta: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    eps: float = 1e-6,
    *,
    rows_per_program: int,
    num_warps: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp8_norm.norm_quantize_reference, fused (the same arguments and results)."""
    if (scale is None) != (shift is None):
        raise ValueError("the modulation needs both scale and shift")
    if (weight is None) != (bias is None):
        raise ValueError("the LayerNorm affine needs both weight and bias")
    if scale is not None and _strides(scale) != _strides(shift):
        raise ValueError("scale and shift must have one layout")
    batch, seq_len, n_cols = x.shape
    n_rows = batch * seq_len
    x_out = torch.empty((batch, seq_len, n_cols), dtype=x.dtype, device=x.device) if delta is not None else x
    codes = torch.empty((n_rows, n_cols), dtype=E4M3, device=x.device)
    row_scales = torch.empty((n_rows, 1), dtype=torch.float32, device=x.device)
    norm_quantize_rows[(triton.cdiv(n_rows, rows_per_program),)](
        x,
        delta,
        gate,
        weight,
        bias,
        scale,
        shift,
        x_out,
        codes,
        row_scales,
        n_rows,
        seq_len,
        n_cols,
        eps,
        *_strides(x),
        *_strides(delta),
        *_strides(gate),
        *_strides(scale),
        ROWS=rows_per_program,
        BLOCK=triton.next_power_of_2(n_cols),
        HAS_DELTA=delta is not None,
        HAS_GATE=gate is not None,
        HAS_AFFINE=weight is not None,
        HAS_MOD=scale is not None,
        FP8_MAX=E4M3_MAX,
        AMAX_MIN=MIN_AMAX,
        num_warps=num_warps,
    )
    return x_out, codes, row_scales
