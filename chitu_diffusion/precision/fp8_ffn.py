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

from chitu_diffusion.precision.fp8_linear import ROW, Fp8Linear, QuantizedRows
from chitu_diffusion.precision.fp8_scaling import E4M3, quantize


def gelu_quantize_reference(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, N) -> e4m3 GELU(h) (M, N) and its (M, 1) fp32 row scales."""
    return quantize(F.gelu(h.float(), approximate="tanh"), ROW)


@functools.cache
def _triton_gelu_quantize(rows_per_program: int = 2, chunk: int = 2048, num_warps: int = 8, approx_tanh: bool = True):
    """The fused kernel's launcher (fp8_ffn_triton.py, imported only where Triton runs it; one launcher shared by
    every block, so compiled blocks see one kernel object). A program owns `rows_per_program` rows and walks them
    in column chunks twice: first for the rows' amax of GELU, then to scale, cast and store; the second read comes
    from L2. Small programs keep many rows in flight, which is what a memory-bound pass needs.

    With tanh from exp and a division, every shape of program took 0.56-0.59 ms per block on an H200: GELU is
    computed in both passes, and the arithmetic bound it, not memory. `approx_tanh` takes tanh from the GPU's
    special function unit (`tanh.approx.f32`, relative error under 2^-10.9: below the bf16 rounding the bf16 model
    applies to GELU, far below e4m3's 2^-4) and scales each row by one reciprocal: 0.35 ms, with 0.13% of the e4m3
    codes one step apart from the exact reference and 0.19% rel-L2 (bench/results/fp8_gelu_tanh_h200.json)."""
    from chitu_diffusion.precision import fp8_ffn_triton

    return functools.partial(
        fp8_ffn_triton.gelu_quantize,
        rows_per_program=rows_per_program,
        chunk=chunk,
        num_warps=num_warps,
        approx_tanh=approx_tanh,
    )


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

    def forward(self, x: torch.Tensor | QuantizedRows) -> torch.Tensor:
        if isinstance(x, QuantizedRows):  # the rows (M, dim) came quantised (fp8_norm.py)
            hidden = self.up.matmul(x.codes, x.scales, x.dtype)  # (M, ffn_dim)
        else:
            hidden = self.up(x.reshape(-1, self.up.in_features))  # (M, ffn_dim) in x's dtype
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
