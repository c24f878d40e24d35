"""The self-attention core under context parallelism: Ulysses all-to-all around ring attention (or a kernel).

Installed as the `attention_fn` of `attention.processor.WanSelfAttnProcessor`, so the model's projections, norms
and RoPE run unchanged on this rank's token shard and only q/k/v -> out is distributed:

    q, k, v (B, L/cp, H, D) --ulysses--> (B, L/ring, H/U, D) --core--> out --ulysses--> (B, L/cp, H, D)

`core` is ring attention when ring > 1, else the single-device kernel. It is an attribute so a FlexCache strategy
working on the ring part (DiTango) can swap it per layer from outside. With a plain kernel as the core, the heads
go through in `head_chunks` pipelined chunks (ulysses.pipelined_attention) so the all-to-alls overlap attention;
a ring core gets one chunk: its per-layer calls are what DiTango plans and caches.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from chitu_diffusion.parallel.ulysses import heads_to_sequence, pipelined_attention, sequence_to_heads

AttentionCore = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class ContextParallelAttention:
    """One layer's distributed attention (one instance per layer, so `core` can differ per layer)."""

    def __init__(
        self, ulysses_group: dist.ProcessGroup, ulysses_degree: int, core: AttentionCore, head_chunks: int = 1
    ):
        self.ulysses_group = ulysses_group
        self.ulysses_degree = ulysses_degree
        self.core = core
        self.head_chunks = head_chunks

    @torch.compiler.disable  # collectives and data-dependent plans: keep them out of compiled regions
    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        degree = self.ulysses_degree
        if degree > 1 and self.head_chunks > 1:
            return pipelined_attention(q, k, v, self.core, self.ulysses_group, degree, self.head_chunks)
        if degree > 1:
            qkv = sequence_to_heads(torch.stack((q, k, v)), self.ulysses_group, degree)  # (3, B, L/ring, H/U, D)
            q, k, v = qkv.unbind(0)
        out = self.core(q, k, v)  # (B, L/ring, H/U, D)
        if degree > 1:
            out = heads_to_sequence(out, self.ulysses_group, degree)  # (B, L/cp, H, D)
        return out
