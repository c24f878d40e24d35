"""Self-attention's q, k and v projections as one GEMM, cross-attention's k and v as another; bf16, exact.

Each output column of a linear layer is one dot product whichever GEMM computes it, so stacking the three
weights gives the same function in one (tokens, 1536) x (1536, 4608) GEMM instead of three x 1536: fewer
launches and one larger tile grid (what it buys on a GPU: bench/profile_forward.py's `+qkv` variants).
diffusers' `WanAttention.fuse_projections()` builds the stacked layer and its forward then uses it; here the
separate layers' weights become views of the stacked ones, so fusing adds no memory and
`unfuse_projections()` still works.
"""

from __future__ import annotations

import torch


def _parts(attention: torch.nn.Module) -> tuple[torch.nn.Linear, list[torch.nn.Linear]]:
    if hasattr(attention, "to_qkv"):
        return attention.to_qkv, [attention.to_q, attention.to_k, attention.to_v]
    return attention.to_kv, [attention.to_k, attention.to_v]


@torch.no_grad()
def fuse_qkv_projections(blocks: torch.nn.ModuleList, attention_attrs: tuple[str, ...]) -> int:
    """Fuse the projections of each block's attention modules named in `attention_attrs`; returns how many.
    Modules with image keys (`add_k_proj`) are left as they are."""
    fused_count = 0
    for block in blocks:
        for attr in attention_attrs:
            attention = getattr(block, attr)
            if attention.add_k_proj is not None:
                continue
            attention.fuse_projections()
            fused, parts = _parts(attention)
            start = 0
            for layer in parts:  # the stacked rows, in order: layer i's weight is rows [start, start + out)
                stop = start + layer.out_features
                layer.weight.data = fused.weight.data[start:stop]
                layer.bias.data = fused.bias.data[start:stop]
                start = stop
            fused_count += 1
    return fused_count
