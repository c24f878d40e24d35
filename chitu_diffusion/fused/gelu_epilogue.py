"""The feed-forward's up projection with its GELU(tanh) in the GEMM's epilogue (cuBLASLt), bf16, exact.

Compiled, Wan's FFN is GEMM -> a Triton kernel for GELU -> GEMM; the GELU pass reads and writes the
(tokens, 8960) intermediate once more: 12 ms of a 455 ms forward on an H200 (bench/results/profile_h200.json).
`torch._addmm_activation(..., use_gelu=True)` applies the tanh-approximated GELU to the fp32 accumulator before
the bf16 store, so the pass disappears and the rounding is one fewer (GELU of the unrounded product). Inductor
keeps the op as an external kernel call (it has no decomposition for it). Off CUDA the same function runs as
linear then GELU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class GeluEpilogueLinear(torch.nn.Module):
    """Replaces diffusers' `GELU(approximate="tanh")` activation module (its `.proj` then GELU)."""

    def __init__(self, activation: torch.nn.Module):
        super().__init__()
        if getattr(activation, "approximate", None) != "tanh":
            raise ValueError("GeluEpilogueLinear fuses GELU(tanh) only")
        self.proj = activation.proj
        self.use_epilogue = self.proj.weight.is_cuda and self.proj.bias is not None
        self.original = [activation]  # not a child: outside state_dict and .to()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.use_epilogue:
            return F.gelu(self.proj(x), approximate="tanh")
        rows = x.reshape(-1, self.proj.in_features)  # (M, K)
        out = torch._addmm_activation(self.proj.bias, rows, self.proj.weight.t(), use_gelu=True)  # (M, N)
        return out.reshape(*x.shape[:-1], self.proj.out_features)


def fuse_gelu_epilogues(blocks: torch.nn.ModuleList) -> list[tuple[torch.nn.Module, str, torch.nn.Module]]:
    """Swap every block's FFN activation (`ffn.net[0]`, GELU tanh) in place; returns (parent, index, original)."""
    swapped = []
    for block in blocks:
        net = getattr(getattr(block, "ffn", None), "net", None)
        if net is not None and getattr(net[0], "approximate", None) == "tanh" and hasattr(net[0], "proj"):
            swapped.append((net, "0", net[0]))
            net[0] = GeluEpilogueLinear(net[0])
    return swapped
