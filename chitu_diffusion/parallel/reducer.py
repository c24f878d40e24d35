"""FlexCache statistics made global over a process group, so every rank takes the same cache decisions."""

from __future__ import annotations

import torch
import torch.distributed as dist


class ProcessGroupReducer:
    """`flex_cache.base.StatsReducer` over `group` (all ranks of the gang: both CFG branches, every CP shard).

    Collectives must run on the backend's device (NCCL: CUDA), whatever device the statistic is on; the result
    comes back on the caller's device.
    """

    def __init__(self, group: dist.ProcessGroup, device: torch.device):
        self.group = group
        self.device = device

    def _reduce(self, value: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
        reduced = value.detach().to(self.device, copy=True)
        dist.all_reduce(reduced, op=op, group=self.group)
        return reduced.to(value.device)

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        return self._reduce(value, dist.ReduceOp.SUM)

    def all_reduce_max(self, value: torch.Tensor) -> torch.Tensor:
        return self._reduce(value, dist.ReduceOp.MAX)
