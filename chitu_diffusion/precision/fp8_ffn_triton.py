"""The Triton kernel of fp8_ffn.py: GELU(tanh) + row amax + e4m3 cast in one pass over the FFN's intermediate.

Imported only where Triton runs it: on a CUDA device, or on the CPU through Triton's interpreter in the tests
(its helpers are module-level functions, which the interpreter resolves by name).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from chitu_diffusion.precision.fp8_scaling import E4M3, E4M3_MAX, MIN_AMAX


@triton.jit
def gelu_tanh(x, APPROX_TANH: tl.constexpr):  # noqa: N803
    inner = 0.7978845608028654 * (x + 0.044715 * x * x * x)  # sqrt(2/pi) (x + 0.044715 x^3)
    if APPROX_TANH:
        tanh = tl.inline_asm_elementwise(
            "tanh.approx.f32 $0, $1;", "=r,r", [inner], dtype=tl.float32, is_pure=True, pack=1
        )
    else:
        tanh = 2.0 * tl.sigmoid(2.0 * inner) - 1.0  # tanh(a) = 2 sigmoid(2a) - 1
    return 0.5 * x * (1.0 + tanh)


@triton.jit
def gelu_rows_quantize(  # Triton's compile-time constants are upper case
    h_ptr,
    out_ptr,
    scale_ptr,
    n_rows,
    n_cols,
    h_stride,
    out_stride,
    ROWS: tl.constexpr,  # noqa: N803
    CHUNK: tl.constexpr,  # noqa: N803
    FP8_MAX: tl.constexpr,  # noqa: N803
    AMAX_MIN: tl.constexpr,  # noqa: N803
    APPROX_TANH: tl.constexpr,  # noqa: N803
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]  # (ROWS, 1)
    row_ok = rows < n_rows
    amax = tl.zeros((ROWS,), dtype=tl.float32)
    for start in range(0, n_cols, CHUNK):
        cols = start + tl.arange(0, CHUNK)[None, :]  # (1, CHUNK)
        mask = row_ok & (cols < n_cols)
        x = tl.load(h_ptr + rows * h_stride + cols, mask=mask, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.max(tl.abs(gelu_tanh(x, APPROX_TANH)), axis=1))
    scale = tl.maximum(amax, AMAX_MIN) / FP8_MAX  # (ROWS,)
    if APPROX_TANH:
        inverse = FP8_MAX / tl.maximum(amax, AMAX_MIN)  # one division per row instead of one per element
    for start in range(0, n_cols, CHUNK):
        cols = start + tl.arange(0, CHUNK)[None, :]
        mask = row_ok & (cols < n_cols)
        x = tl.load(h_ptr + rows * h_stride + cols, mask=mask, other=0.0).to(tl.float32)
        if APPROX_TANH:
            scaled = gelu_tanh(x, APPROX_TANH) * inverse[:, None]
        else:
            scaled = gelu_tanh(x, APPROX_TANH) / scale[:, None]
        quantized = tl.minimum(tl.maximum(scaled, -FP8_MAX), FP8_MAX)
        tl.store(out_ptr + rows * out_stride + cols, quantized.to(tl.float8e4nv), mask=mask)
    tl.store(
        scale_ptr + tl.program_id(0) * ROWS + tl.arange(0, ROWS),
        scale,
        mask=tl.program_id(0) * ROWS + tl.arange(0, ROWS) < n_rows,
    )


def gelu_quantize(
    h: torch.Tensor, *, rows_per_program: int, chunk: int, num_warps: int, approx_tanh: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, N) bf16 -> e4m3 GELU(h) (M, N) and its (M, 1) fp32 row scales (fp8_ffn.py: what the parameters do)."""
    n_rows, n_cols = h.shape
    out = torch.empty((n_rows, n_cols), dtype=E4M3, device=h.device)
    scale = torch.empty((n_rows, 1), dtype=torch.float32, device=h.device)
    grid = ((n_rows + rows_per_program - 1) // rows_per_program,)
    gelu_rows_quantize[grid](
        h,
        out,
        scale,
        n_rows,
        n_cols,
        h.stride(0),
        out.stride(0),
        ROWS=rows_per_program,
        CHUNK=chunk,
        FP8_MAX=E4M3_MAX,
        AMAX_MIN=MIN_AMAX,
        APPROX_TANH=approx_tanh,
        num_warps=num_warps,
    )
    return out, scale
