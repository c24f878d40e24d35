"""The self-attention core under context parallelism: Ulysses all-to-all around ring attention (or a kernel).

Installed as the `attention_fn` of `attention.processor.WanSelfAttnProcessor`, so the model's projections, norms
and RoPE run unchanged on this rank's token shard and only q/k/v -> out is distributed:

    q, k, v (B, L/cp, H, D) --ulysses--> (B, L/ring, H/U, D) --core--> out --ulysses--> (B, L/cp, H, D)

`core` is ring attention when ring > 1, else the single-device kernel. It is an attribute so a FlexCache strategy
working on the ring part (DiTango) can swap it per layer from outside.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from chitu_diffusion.parallel.ulysses import heads_to_sequence, sequence_to_heads

AttentionCore = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class ContextParallelAttention:
    """One layer's distributed attention (one instance per layer, so `core` can differ per layer)."""

    def __init__(self, ulysses_group: dist.ProcessGroup, ulysses_degree: int, core: AttentionCore):
        self.ulysses_group = ulysses_group
        self.ulysses_degree = ulysses_degree
        self.core = core

    @torch.compiler.disable  # collectives and data-dependent plans: keep them out of compiled regions
    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        degree = self.ulysses_degree
        if degree > 1:
            qkv = sequence_to_heads(torch.stack((q, k, v)), self.ulysses_group, degree)  # (3, B, L/ring, H/U, D)
            q, k, v = qkv.unbind(0)
        out = self.core(q, k, v)  # (B, L/ring, H/U, D)
        if degree > 1:
            out = heads_to_sequence(out, self.ulysses_group, degree)  # (B, L/cp, H, D)
        return out
