"""FP8 linear layers: weights stored as e4m3 with one scale per output channel, activations quantised per row
on the fly, one `torch._scaled_mm` with both scale vectors (row-wise scaling) and the bias in its epilogue.

Under `torch.compile` the activation's amax, division and cast fuse into the kernel that produced it, so what is
left is the FP8 GEMM itself (twice bf16's tensor-core rate on Hopper). Off Hopper (CPU tests) the same function
is computed from the dequantised operands in fp32: the operands' rounding is identical, only the accumulation
differs (its order, and on the GPU the tensor cores' own precision: `fast_accum`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from chitu_diffusion.precision.fp8_scaling import dequantize, quantize

ROW = (-1,)  # activations (M, K) and weights (N, K) are both scaled along K: per row, per output channel


def scaled_mm_available(device: torch.device) -> bool:
    """Row-wise scaled FP8 matmuls need compute capability 9.0+ (Hopper)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


@dataclass(frozen=True)
class QuantizedRows:
    """Activations already quantised per row, for every `Fp8Linear` they feed (fp8_norm.py makes them once for a
    block's q, k and v): (M, K) e4m3 codes, (M, 1) fp32 scales, the (..., K) shape the rows came from and the
    dtype the linears return."""

    codes: torch.Tensor
    scales: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype


class Fp8Linear(torch.nn.Module):
    """Replaces one `nn.Linear` (keeping it, so `restore` puts the bf16 layer back)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight8, weight_scale = quantize(linear.weight.detach(), ROW)  # (N, K) e4m3, (N, 1) fp32
        self.register_buffer("weight8", weight8)
        self.register_buffer("weight_scale", weight_scale.reshape(1, -1))  # (1, N), as _scaled_mm wants it
        self.bias = linear.bias
        self.original = [linear]  # a list: not registered as a child, so it stays out of state_dict and .to()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.use_scaled_mm = scaled_mm_available(linear.weight.device)  # decided once: compiled code sees a constant
        # cuBLAS's fast accumulation: the FP8 sum is not promoted to fp32 every few k-steps. On an H200 that takes a
        # forward's FP8 GEMMs from 71 to 60 ms, and each GEMM's error vs fp32 stays what the e4m3 rounding makes it
        # (3.74% either way, bench/results/fp8_gemm_h200.json); torchao's FP8 inference makes the same choice
        self.fast_accum = True

    def forward(self, x: torch.Tensor | QuantizedRows) -> torch.Tensor:
        if isinstance(x, QuantizedRows):
            return self.matmul(x.codes, x.scales, x.dtype).reshape(*x.shape[:-1], self.out_features)
        rows = x.reshape(-1, self.in_features)  # (M, K)
        out = self.matmul(*quantize(rows, ROW), x.dtype)  # from (M, K) e4m3 and (M, 1) fp32 scales
        return out.reshape(*x.shape[:-1], self.out_features)

    def matmul(self, x8: torch.Tensor, x_scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(M, N) in `dtype` from activations already quantised per row: (M, K) e4m3 and (M, 1) fp32 scales."""
        if self.use_scaled_mm:
            return torch._scaled_mm(
                x8,
                self.weight8.t(),
                scale_a=x_scale,
                scale_b=self.weight_scale,
                bias=self.bias,
                out_dtype=dtype,
                use_fast_accum=self.fast_accum,
            )
        weight = dequantize(self.weight8, self.weight_scale.reshape(-1, 1))
        out = F.linear(dequantize(x8, x_scale), weight, None if self.bias is None else self.bias.float())
        return out.to(dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3 row-wise"
