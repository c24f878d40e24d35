"""Ring attention: exact attention over K/V spread across ranks, merged through log-sum-exp "attention states".

Liu et al., "Ring Attention with Blockwise Transformers", https://arxiv.org/abs/2310.01889.

The attention state of queries Q against one K/V block is (out, lse): the block's softmax-weighted values and the
log-sum-exp of its scores. States of disjoint blocks merge exactly (`merge`), so a rank attends to its own block
and to every other ring rank's block in turn and never holds the whole sequence's K/V.

Hop schedule: at hop d (1..R-1) rank r sends its *own* K/V to rank (r + d) mod R and receives the K/V of rank
(r - d) mod R. A forwarding ring (relay what came in) moves the same bytes per rank, but here each message is
local data, so a block nobody needs (DiTango's reused groups; its plan is the same on every rank) is simply not
sent, and no hop waits on the previous hop's arrival. Transfers are double-buffered with batched isend/irecv:
hop d+1 is posted before hop d's blocks are computed (hop 1 before the local block), so communication overlaps
compute and at most two remote blocks are in memory.

Groups: a remote partition can be split along its tokens into G sub-blocks; group g = (d - 1) * G + s is
sub-block s of the partition d hops back, and `attend` returns one state per group. Plain ring attention uses
G = 1 (one state per remote rank).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from chitu_diffusion.attention.kernels import LseKernel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttentionState:
    """Attention of some queries over one K/V block."""

    out: torch.Tensor  # (B, Lq, H, D) softmax-weighted values of this block (any float dtype)
    lse: torch.Tensor  # (B, H, Lq) fp32 log-sum-exp of this block's scaled scores


def merge(a: AttentionState, b: AttentionState) -> AttentionState:
    """The exact state over both blocks (fp32): a weighted mean of the outs, weights from the lses."""
    # e^lse_b / (e^lse_a + e^lse_b): b's share of the merged softmax mass
    weight_b = torch.sigmoid(b.lse - a.lse).transpose(1, 2).unsqueeze(-1)  # (B, Lq, H, 1)
    out = torch.lerp(a.out.float(), b.out.float(), weight_b)  # (B, Lq, H, D)
    lse = a.lse - F.logsigmoid(a.lse - b.lse)  # (B, H, Lq) = log(e^lse_a + e^lse_b)
    return AttentionState(out, lse)


def merge_all(states: list[AttentionState]) -> AttentionState:
    """Left fold of `merge` in list order (a fixed order keeps results bit-reproducible)."""
    merged = states[0]
    for state in states[1:]:
        merged = merge(merged, state)
    return merged


def token_spans(tokens: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) of `parts` near-equal consecutive sub-blocks of `tokens` tokens."""
    return [(tokens * s // parts, tokens * (s + 1) // parts) for s in range(parts)]


class _Transfer:
    """One hop in flight: our K/V going out, the peer's coming in."""

    def __init__(self, works: list, send: torch.Tensor, recv: torch.Tensor):
        self.works, self.send, self.recv = works, send, recv  # `send` is held until the hop completes

    def wait(self) -> torch.Tensor:
        for work in self.works:
            work.wait()
        return self.recv  # (2, B, n, H, D) stacked K and V


class RingAttention:
    """Attention over the ring group's K/V; called with this rank's q, k, v of layout (B, L/R, H, D)."""

    def __init__(
        self, group: dist.ProcessGroup, degree: int, rank: int, kernel: LseKernel, groups_per_partition: int = 1
    ):
        if degree < 2:
            raise ValueError(f"ring attention needs a ring of >= 2 ranks, got {degree}")
        self.group = group
        self.degree = degree
        self.rank = rank  # inside the ring group
        self.kernel = kernel
        self.groups_per_partition = groups_per_partition
        logger.debug("ring attention: rank %d of %d, %d group(s) per remote partition", rank, degree, groups_per_partition)

    @property
    def num_groups(self) -> int:
        """Remote K/V groups per call: (ring degree - 1) x groups per partition."""
        return (self.degree - 1) * self.groups_per_partition

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        local, remote = self.attend(q, k, v)
        return merge(local, merge_all(remote)).out.to(q.dtype)  # (B, Lq, H, D)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, compute: list[bool] | None = None
    ) -> tuple[AttentionState, list[AttentionState | None]]:
        """The local state and one state per remote group; a group whose `compute` entry is False is neither
        received nor computed (None). `compute` must be identical on all ring ranks: it decides what is sent."""
        parts = self.groups_per_partition
        spans = token_spans(k.shape[1], parts)
        wanted = {  # hop -> the sub-blocks of that partition to receive and compute
            d: [s for s in range(parts) if compute is None or compute[(d - 1) * parts + s]]
            for d in range(1, self.degree)
        }
        hops = [d for d, subs in wanted.items() if subs]
        kv = torch.stack((k, v))  # (2, B, Lk, H, D)
        remote: list[AttentionState | None] = [None] * self.num_groups
        transfer = self._post(hops[0], kv, [spans[s] for s in wanted[hops[0]]]) if hops else None
        local = AttentionState(*self.kernel(q, k, v))  # overlaps hop 1's transfer
        for i, d in enumerate(hops):
            received = transfer.wait()  # (2, B, n, H, D) the wanted sub-blocks, in order
            if i + 1 < len(hops):
                transfer = self._post(hops[i + 1], kv, [spans[s] for s in wanted[hops[i + 1]]])
            offset = 0
            for s in wanted[d]:
                size = spans[s][1] - spans[s][0]
                k_block, v_block = received[:, :, offset : offset + size].unbind(0)  # (B, size, H, D) each
                remote[(d - 1) * parts + s] = AttentionState(*self.kernel(q, k_block, v_block))
                offset += size
        return local, remote

    def _post(self, hop: int, kv: torch.Tensor, spans: list[tuple[int, int]]) -> _Transfer:
        """Start sending our sub-blocks `spans` to the rank `hop` ahead and receiving the same from `hop` behind."""
        if sum(end - start for start, end in spans) == kv.shape[2]:
            send = kv  # (2, B, Lk, H, D) every sub-block, in order: the whole partition, no copy
        else:
            send = torch.cat([kv[:, :, start:end] for start, end in spans], dim=2)  # (2, B, n, H, D)
        recv = torch.empty_like(send)
        ops = [
            dist.P2POp(dist.isend, send, group=self.group, group_peer=(self.rank + hop) % self.degree),
            dist.P2POp(dist.irecv, recv, group=self.group, group_peer=(self.rank - hop) % self.degree),
        ]
        return _Transfer(dist.batch_isend_irecv(ops), send, recv)
