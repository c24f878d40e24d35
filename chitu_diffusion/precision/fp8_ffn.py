"""Wan's feed-forward in FP8 with its middle fused: up GEMM -> one kernel for GELU + row amax + e4m3 cast -> down
GEMM.

Left to inductor, the GELU and the quantisation of the (tokens, 8960) intermediate became one looped reduction
kernel that ran at a fifth of memory speed: 34 ms of a 382 ms FP8 forward on an H200
(bench/results/profile_h200.json). Here small Triton programs of a few rows each keep many rows in flight, and
tanh comes from the special function unit: 0.35 ms per block instead of 1.13. The function is
`quantize(gelu_tanh(h))` of fp8_scaling.py with the GELU kept in fp32 (the bf16 model rounds it to bf16 first: a
2^-8 difference, far below e4m3's 2^-4); off CUDA the same expression runs in PyTorch.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from chitu_diffusion.precision.fp8_linear import ROW, Fp8Linear
from chitu_diffusion.precision.fp8_scaling import E4M3, E4M3_MAX, MIN_AMAX, quantize


def gelu_quantize_reference(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, N) -> e4m3 GELU(h) (M, N) and its (M, 1) fp32 row scales."""
    return quantize(F.gelu(h.float(), approximate="tanh"), ROW)


@functools.cache
def _triton_gelu_quantize(rows_per_program: int = 2, chunk: int = 2048, num_warps: int = 8, approx_tanh: bool = True):
    """The fused kernel's launcher (Triton imported only where a CUDA device runs it; one launcher shared by every
    block, so compiled blocks see one kernel object). A program owns `rows_per_program` rows and walks them in
    column chunks twice: first for the rows' amax of GELU, then to scale, cast and store; the second read comes
    from L2. Small programs keep many rows in flight, which is what a memory-bound pass needs.

    With tanh from exp and a division, every shape of program took 0.56-0.59 ms per block on an H200: GELU is
    computed in both passes, and the arithmetic bound it, not memory. `approx_tanh` takes tanh from the GPU's
    special function unit (`tanh.approx.f32`, relative error under 2^-10.9: below the bf16 rounding the bf16 model
    applies to GELU, far below e4m3's 2^-4) and scales each row by one reciprocal: 0.35 ms, with 0.13% of the e4m3
    codes one step apart from the exact reference and 0.19% rel-L2 (bench/results/fp8_gelu_tanh_h200.json)."""
    import triton
    import triton.language as tl

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

    def launch(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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

    return launch


@torch.library.custom_op("chitu::gelu_quantize", mutates_args=())
def _fused_gelu_quantize(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel as an operator (as fused/qk_norm_rope.py's): compiled code holds its name, which torch's
    caching_precompile can save; a launcher held by the module made it fail (a Triton kernel does not pickle)."""
    return _triton_gelu_quantize()(h)


@_fused_gelu_quantize.register_fake
def _(h):
    return h.new_empty(h.shape, dtype=E4M3), h.new_empty((h.shape[0], 1), dtype=torch.float32)


class Fp8FeedForward(torch.nn.Module):
    """Replaces a diffusers `FeedForward` whose activation is GELU(tanh): net[0].proj, GELU, net[2]."""

    def __init__(self, ffn: torch.nn.Module):
        super().__init__()
        activation, down = ffn.net[0], ffn.net[-1]
        if getattr(activation, "approximate", None) != "tanh":
            raise ValueError("Fp8FeedForward fuses GELU(tanh) only")
        self.up, self.down = Fp8Linear(activation.proj), Fp8Linear(down)
        self.fused = self.up.use_scaled_mm  # the Triton kernel where the GEMMs are FP8; else its PyTorch twin
        self.original = [ffn]  # not a child: outside state_dict and .to()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.up.in_features)  # (M, dim)
        hidden = self.up(rows)  # (M, ffn_dim) in x's dtype
        quantized = _fused_gelu_quantize(hidden) if self.fused else gelu_quantize_reference(hidden)
        out = self.down.matmul(*quantized, x.dtype)  # (M, dim)
        return out.reshape(*x.shape[:-1], self.down.out_features)


def is_gelu_tanh_feed_forward(module: torch.nn.Module) -> bool:
    net = getattr(module, "net", None)
    return (
        isinstance(net, torch.nn.ModuleList)
        and getattr(net[0], "approximate", None) == "tanh"
        and hasattr(net[0], "proj")
    )
