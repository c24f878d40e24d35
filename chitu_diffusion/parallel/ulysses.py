"""Ulysses sequence parallelism: trade a sequence shard for a head shard with one all-to-all, and back.

Jacobs et al., "DeepSpeed Ulysses", https://arxiv.org/abs/2309.14509. Before attention each of the U ranks holds
all heads of 1/U of the tokens; after `sequence_to_heads` it holds H/U heads of all U ranks' tokens (in rank
order, so the chunks stay contiguous), attends exactly over them, and `heads_to_sequence` undoes the move.
Several tensors may ride one all-to-all by stacking them in leading dimensions (q, k, v: one collective).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _all_to_all(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """Chunk i of dim 0 goes to rank i; chunk i of the result came from rank i."""
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    return out


def sequence_to_heads(x: torch.Tensor, group: dist.ProcessGroup, degree: int) -> torch.Tensor:
    """(..., L/U, H, D) on each rank -> (..., L, H/U, D): all tokens of this rank's head chunk."""
    *lead, tokens, heads, dim = x.shape
    x = x.reshape(*lead, tokens, degree, heads // degree, dim).movedim(-3, 0).contiguous()  # (U, ..., L/U, H/U, D)
    x = _all_to_all(x, group)  # (U, ..., L/U, H/U, D): dim 0 = source rank = token chunk
    return x.movedim(0, -4).reshape(*lead, degree * tokens, heads // degree, dim)  # (..., L, H/U, D)


def heads_to_sequence(x: torch.Tensor, group: dist.ProcessGroup, degree: int) -> torch.Tensor:
    """(..., L, H/U, D) -> (..., L/U, H, D): the inverse of `sequence_to_heads`."""
    *lead, tokens, heads, dim = x.shape
    x = x.reshape(*lead, degree, tokens // degree, heads, dim).movedim(-4, 0).contiguous()  # (U, ..., L/U, H/U, D)
    x = _all_to_all(x, group)  # (U, ..., L/U, H/U, D): dim 0 = source rank = head chunk
    return x.movedim(0, -3).reshape(*lead, tokens // degree, degree * heads, dim)  # (..., L/U, H, D)
