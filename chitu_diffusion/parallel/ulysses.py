"""Ulysses sequence parallelism: trade a sequence shard for a head shard with one all-to-all, and back.

Jacobs et al., "DeepSpeed Ulysses", https://arxiv.org/abs/2309.14509. Before attention each of the U ranks holds
all heads of 1/U of the tokens; after `start_sequence_to_heads` it holds H/U heads of all U ranks' tokens (in rank
order, so the chunks stay contiguous), attends exactly over them, and `heads_to_sequence` undoes the move.

q, k and v each get their own all-to-all, started as soon as the tensor exists (`start_sequence_to_heads`): v's
and k's transfers then overlap the norm and RoPE work on k and q, and with batch 1 (one CFG branch per forward)
the received buffer already is the (B, L, H/U, D) layout attention reads, so no copy follows.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class PendingShard:
    """A `sequence_to_heads` all-to-all in flight; `wait` gives (..., L, H/U, D)."""

    def __init__(self, work: dist.Work, sent: torch.Tensor, received: torch.Tensor):
        self.work, self.sent, self.received = work, sent, received  # `sent` is held until the transfer completes

    def wait(self) -> torch.Tensor:
        self.work.wait()
        degree, *lead, tokens, heads, dim = self.received.shape  # (U, ..., L/U, H/U, D): dim 0 = source rank
        return self.received.movedim(0, -4).reshape(*lead, degree * tokens, heads, dim)  # a view when batch is 1


def start_sequence_to_heads(x: torch.Tensor, group: dist.ProcessGroup, degree: int) -> PendingShard:
    """Start moving (..., L/U, H, D) on each rank towards (..., L, H/U, D): all tokens of this rank's head chunk."""
    *lead, tokens, heads, dim = x.shape
    sent = x.reshape(*lead, tokens, degree, heads // degree, dim).movedim(-3, 0).contiguous()  # (U, ..., L/U, H/U, D)
    received = torch.empty_like(sent)
    return PendingShard(dist.all_to_all_single(received, sent, group=group, async_op=True), sent, received)


def heads_to_sequence(x: torch.Tensor, group: dist.ProcessGroup, degree: int) -> torch.Tensor:
    """(..., L, H/U, D) -> (..., L/U, H, D): the inverse of `start_sequence_to_heads`."""
    *lead, tokens, heads, dim = x.shape
    x = x.reshape(*lead, degree, tokens // degree, heads, dim).movedim(-4, 0).contiguous()  # (U, ..., L/U, H/U, D)
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)  # chunk i goes to rank i; dim 0 of `out` = source rank = head chunk
    return out.movedim(0, -3).reshape(*lead, tokens // degree, degree * heads, dim)  # (..., L/U, H, D)
