"""The self-attention core under context parallelism: Ulysses all-to-all around ring attention (or a kernel).

Installed as the `attention_fn` of `attention.processor.WanSelfAttnProcessor`, so the model's projections, norms
and RoPE run unchanged on this rank's token shard and only q/k/v -> out is distributed:

    q, k, v (B, L/cp, H, D) --ulysses--> (B, L/ring, H/U, D) --core--> out --ulysses--> (B, L/cp, H, D)

The processor hands each input to `stage` as soon as it is computed, so its all-to-all is in flight while the
processor works on the next one; `__call__` then waits for the three and attends.

`core` is ring attention when ring > 1, else the single-device kernel. It is an attribute so a FlexCache strategy
working on the ring part (DiTango) can swap it per layer from outside.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from chitu_diffusion.parallel.ulysses import PendingShard, heads_to_sequence, start_sequence_to_heads

AttentionCore = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class ContextParallelAttention:
    """One layer's distributed attention (one instance per layer, so `core` can differ per layer)."""

    def __init__(self, ulysses_group: dist.ProcessGroup, ulysses_degree: int, core: AttentionCore):
        self.ulysses_group = ulysses_group
        self.ulysses_degree = ulysses_degree
        self.core = core

    @torch.compiler.disable  # collectives: keep them out of compiled regions
    def stage(self, x: torch.Tensor) -> torch.Tensor | PendingShard:
        """Start moving one input (B, L/cp, H, D) to its Ulysses head shard; without Ulysses it stays as is."""
        if self.ulysses_degree == 1:
            return x
        return start_sequence_to_heads(x, self.ulysses_group, self.ulysses_degree)

    @torch.compiler.disable  # collectives and data-dependent plans: keep them out of compiled regions
    def __call__(self, q, k, v) -> torch.Tensor:
        """q, k, v: (B, L/cp, H, D) tensors or what `stage` returned for them."""
        staged = [self.stage(x) if torch.is_tensor(x) else x for x in (q, k, v)]  # all three in flight
        q, k, v = (x.wait() if isinstance(x, PendingShard) else x for x in staged)
        out = self.core(q, k, v)  # (B, L/ring, H/U, D)
        if self.ulysses_degree > 1:
            out = heads_to_sequence(out, self.ulysses_group, self.ulysses_degree)  # (B, L/cp, H, D)
        return out
