"""Process groups of a `ParallelLayout`, built once per launch.

`torch.distributed.new_group` is collective: every rank must create every group in the same order, even the
groups it is not in. We build them all here, once, and keep only this rank's; nothing else creates groups.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from chitu_diffusion.parallel.degrees import ParallelLayout

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParallelGroups:
    """This rank's groups and its rank inside each. `world` carries the all-reduced FlexCache statistics."""

    layout: ParallelLayout
    rank: int  # global
    device: torch.device  # where collectives' tensors must live (cuda for NCCL, cpu for gloo)
    world: dist.ProcessGroup
    cfg: dist.ProcessGroup  # same cp position, one rank per CFG branch
    cp: dist.ProcessGroup  # all ranks sharing one branch's sequence
    ulysses: dist.ProcessGroup
    ring: dist.ProcessGroup
    ring_ranks: tuple[int, ...]  # global ranks of this rank's ring, in ring order

    @property
    def cfg_rank(self) -> int:
        return self.layout.coordinates(self.rank)[0]

    @property
    def cp_rank(self) -> int:
        return self.rank % self.layout.cp

    @property
    def ring_rank(self) -> int:
        return self.layout.coordinates(self.rank)[1]


def _rank_lists(layout: ParallelLayout) -> dict[str, list[list[int]]]:
    """Global ranks of every group of each kind (see degrees.py for the rank order)."""
    cp, u, r = layout.cp, layout.ulysses, layout.ring
    return {
        "cfg": [[c * cp + p for c in range(layout.cfg)] for p in range(cp)],
        "cp": [[c * cp + p for p in range(cp)] for c in range(layout.cfg)],
        "ulysses": [[c * cp + j * u + i for i in range(u)] for c in range(layout.cfg) for j in range(r)],
        "ring": [[c * cp + j * u + i for j in range(r)] for c in range(layout.cfg) for i in range(u)],
    }


def build_groups(layout: ParallelLayout, device: torch.device) -> ParallelGroups:
    """Create every group of `layout` (collective: call on all ranks, once, after init_process_group)."""
    if not dist.is_initialized():
        raise RuntimeError("build_groups needs torch.distributed initialised (see parallel.launch)")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if layout.world_size != world_size:
        raise RuntimeError(f"layout {layout} is for {layout.world_size} ranks, the process group has {world_size}")
    mine: dict[str, tuple[dist.ProcessGroup, list[int]]] = {}
    for kind, rank_lists in _rank_lists(layout).items():
        for ranks in rank_lists:
            group = dist.new_group(ranks)
            if rank in ranks:
                mine[kind] = (group, ranks)
    logger.info("rank %d: layout %s, ring ranks %s", rank, layout.describe(), mine["ring"][1])
    return ParallelGroups(
        layout=layout,
        rank=rank,
        device=device,
        world=dist.group.WORLD,
        cfg=mine["cfg"][0],
        cp=mine["cp"][0],
        ulysses=mine["ulysses"][0],
        ring=mine["ring"][0],
        ring_ranks=tuple(mine["ring"][1]),
    )
