"""Ulysses sequence parallelism: trade a sequence shard for a head shard with one all-to-all, and back.

Jacobs et al., "DeepSpeed Ulysses", https://arxiv.org/abs/2309.14509. Before attention each of the U ranks holds
all heads of 1/U of the tokens; after `sequence_to_heads` it holds H/U heads of all U ranks' tokens (in rank
order, so the chunks stay contiguous), attends exactly over them, and `heads_to_sequence` undoes the move.
Several tensors may ride one all-to-all by stacking them in leading dimensions (q, k, v: one collective).

`pipelined_attention` hides most of that communication: attention is independent per head, so the heads are
moved and attended in C chunks, with chunk c+1's q/k/v all-to-all and chunk c-1's output all-to-all in flight
(on NCCL's stream) while chunk c is attended; only the first chunk's input and the last chunk's output wait.
"""

from __future__ import annotations

from typing import Callable

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


def pipelined_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    core: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    group: dist.ProcessGroup,
    degree: int,
    chunks: int,
) -> torch.Tensor:
    """Ulysses attention over (B, L/U, H, D) shards in `chunks` head chunks, communication overlapping `core`.

    Head h = u * H/U + c * n + j (n = H/U/chunks heads per chunk) is attended on rank u in chunk c, as in the
    unchunked `sequence_to_heads`, so the result equals heads_to_sequence(core(sequence_to_heads(...))).
    """
    batch, tokens, heads, dim = q.shape
    if heads % (degree * chunks):
        raise ValueError(f"{heads} heads do not split into ulysses {degree} x {chunks} head chunks")
    per_chunk = heads // degree // chunks
    qkv = torch.stack((q, k, v)).view(3, batch, tokens, degree, chunks, per_chunk, dim)
    out = q.new_empty(batch, tokens, degree, chunks, per_chunk, dim)  # (B, L/U, H, D) as (rank, chunk, head)

    def send_inputs(c: int) -> tuple[dist.Work, torch.Tensor]:
        send = qkv[:, :, :, :, c].permute(3, 0, 1, 2, 4, 5).contiguous()  # (U, 3, B, L/U, n, D): row u -> rank u
        received = torch.empty_like(send)  # row u: rank u's tokens of this rank's heads in chunk c
        return dist.all_to_all_single(received, send, group=group, async_op=True), received

    inputs = send_inputs(0)
    outputs = []
    for c in range(chunks):
        work, received = inputs
        if c + 1 < chunks:
            inputs = send_inputs(c + 1)  # in flight while chunk c is attended
        work.wait()
        chunk_q, chunk_k, chunk_v = received.permute(1, 2, 0, 3, 4, 5).reshape(3, batch, degree * tokens, per_chunk, dim)
        attended = core(chunk_q, chunk_k, chunk_v)  # (B, L, n, D)
        send = attended.reshape(batch, degree, tokens, per_chunk, dim).transpose(0, 1).contiguous()  # row t -> rank t
        received = torch.empty_like(send)  # row u: our tokens of rank u's heads in chunk c
        outputs.append((dist.all_to_all_single(received, send, group=group, async_op=True), received))
    for c, (work, received) in enumerate(outputs):
        work.wait()
        out[:, :, :, c] = received.permute(1, 2, 0, 3, 4)  # (B, L/U, U, n, D)
    return out.view(batch, tokens, heads, dim)
