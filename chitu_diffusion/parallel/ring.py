"""Ring attention: exact attention over K/V spread across ranks, merged through log-sum-exp "attention states".

Liu et al., "Ring Attention with Blockwise Transformers", https://arxiv.org/abs/2310.01889.

The attention state of queries Q against one K/V block is (out, lse): the block's softmax-weighted values and the
log-sum-exp of its scores. States of disjoint blocks merge exactly (`merge_states`), so a rank attends to its own block
and to every other ring rank's block in turn and never holds the whole sequence's K/V.

Hop schedule: at hop d (1..R-1) rank r sends its *own* K/V to rank (r + d) mod R and receives the K/V of rank
(r - d) mod R. A forwarding ring (relay what came in) moves the same bytes per rank, but here each message is
local data, so a block nobody needs (DiTango's reused groups; its plan is the same on every rank) is simply not
sent, and no hop waits on the previous hop's arrival. Transfers are double-buffered with batched isend/irecv:
hop d+1 is posted before hop d's block is computed (hop 1 before the local block), so communication overlaps
compute and at most two remote K/V blocks are in memory; their attention states (each the size of q) are merged
once, at the end, in one fused pass.

`attend` returns the local state and one state per remote partition (hop order), and can skip any remote
partition: that is the seam DiTango uses to reuse a cached state instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from chitu_diffusion.attention.fusion import fused_on_cuda
from chitu_diffusion.attention.kernels import LseKernel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttentionState:
    """Attention of some queries over one K/V block."""

    out: torch.Tensor  # (B, Lq, H, D) softmax-weighted values of this block (any float dtype)
    lse: torch.Tensor  # (B, H, Lq) fp32 log-sum-exp of this block's scaled scores


@fused_on_cuda
def _merge(
    outs: list[torch.Tensor], lses: list[torch.Tensor], out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    lse = torch.logsumexp(torch.stack(lses), dim=0)  # (B, H, Lq) log of the summed softmax mass
    out = None
    for block_out, block_lse in zip(outs, lses, strict=True):
        share = torch.exp(block_lse - lse).transpose(1, 2).unsqueeze(-1)  # (B, Lq, H, 1) this block's mass share
        term = share * block_out.float()
        out = term if out is None else out + term
    return out.to(out_dtype), lse


def merge_states(states: list[AttentionState], out_dtype: torch.dtype = torch.float32) -> AttentionState:
    """The exact state over all blocks: the outs weighted by their share of the softmax mass, summed in fp32 in list
    order (fixed, so results are bit-reproducible); one fused kernel on GPU. `out_dtype` is the merged out's."""
    merged = _merge([s.out for s in states], [s.lse for s in states], out_dtype)
    return AttentionState(*merged)


class _Transfer:
    """One hop in flight: our K/V going out, the peer's coming in."""

    def __init__(self, works: list, sent: tuple[torch.Tensor, ...], received: tuple[torch.Tensor, torch.Tensor]):
        self.works, self.sent, self.received = works, sent, received  # `sent` is held until the hop completes

    def wait(self) -> tuple[torch.Tensor, torch.Tensor]:
        for work in self.works:
            work.wait()
        return self.received  # the peer's K and V (B, Lk, H, D)


class RingAttention:
    """Attention over the ring group's K/V; called with this rank's q, k, v of layout (B, L/R, H, D)."""

    def __init__(self, group: dist.ProcessGroup, degree: int, rank: int, kernel: LseKernel):
        if degree < 2:
            raise ValueError(f"ring attention needs a ring of >= 2 ranks, got {degree}")
        self.group = group
        self.degree = degree
        self.rank = rank  # inside the ring group
        self.kernel = kernel
        logger.debug("ring attention: rank %d of %d", rank, degree)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        local, remote = self.attend(q, k, v)
        return merge_states([local, *remote], q.dtype).out  # (B, Lq, H, D)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, compute: list[bool] | None = None
    ) -> tuple[AttentionState, list[AttentionState | None]]:
        """The local state and the state of each remote partition, index d - 1 for the partition d hops back; one
        whose `compute` entry is False is neither received nor computed (None). `compute` must be identical on all
        ring ranks: it decides what is sent."""
        hops = [d for d in range(1, self.degree) if compute is None or compute[d - 1]]
        remote: list[AttentionState | None] = [None] * (self.degree - 1)
        transfer = self._post(hops[0], k, v) if hops else None
        local = AttentionState(*self.kernel(q, k, v))  # overlaps hop 1's transfer
        for i, d in enumerate(hops):
            k_received, v_received = transfer.wait()  # (B, Lk, H, D)
            if i + 1 < len(hops):
                transfer = self._post(hops[i + 1], k, v)
            remote[d - 1] = AttentionState(*self.kernel(q, k_received, v_received))
        return local, remote

    def _post(self, hop: int, k: torch.Tensor, v: torch.Tensor) -> _Transfer:
        """Start sending our K/V to the rank `hop` ahead and receiving the same from `hop` behind."""
        sent = (k.contiguous(), v.contiguous())  # no copy unless a projection left a view
        received = (torch.empty_like(sent[0]), torch.empty_like(sent[1]))
        to_peer, from_peer = (self.rank + hop) % self.degree, (self.rank - hop) % self.degree
        ops = [dist.P2POp(dist.isend, x, group=self.group, group_peer=to_peer) for x in sent]
        ops += [dist.P2POp(dist.irecv, x, group=self.group, group_peer=from_peer) for x in received]
        return _Transfer(dist.batch_isend_irecv(ops), sent, received)
