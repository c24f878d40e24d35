"""The only place that reads ranks from the environment: torchrun's (and the worker launcher's) variables.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; the worker's per-pod launcher sets the
same names, so one reader serves both. Everything below the entry point receives a `DistributedEnv` or the
process groups built from it, never the environment. Reading the environment needs no torch (the command line
checks a launch before it pays for the import); joining and leaving the gang import torch.distributed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: A rank that waits longer than this on a collective is stuck (a peer died): fail instead of hanging the pod.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class DistributedEnv:
    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> DistributedEnv | None:
        """This process's place in the gang, or None when not launched as one (no WORLD_SIZE)."""
        if "WORLD_SIZE" not in environ:
            return None
        try:
            world_size, rank = int(environ["WORLD_SIZE"]), int(environ.get("RANK", "0"))
            local_rank = int(environ.get("LOCAL_RANK", str(rank)))
        except ValueError as err:
            raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {err}") from None
        if not 0 <= rank < world_size:
            raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
        return cls(rank, world_size, local_rank)


def init_distributed(env: DistributedEnv, device: str) -> torch.device:
    """Join the gang's default process group (NCCL on CUDA, gloo on CPU) and return this rank's device."""
    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch_device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(torch_device)
        backend = "nccl"
    else:
        torch_device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size, timeout=COLLECTIVE_TIMEOUT)
    logger.info("rank %d/%d joined the gang (%s on %s)", env.rank, env.world_size, backend, torch_device)
    return torch_device


def leave_gang() -> None:
    """Wait for every rank (rank 0 may still be decoding and writing), then tear the process group down.

    A rank that exits while its gloo group is alive can abort in the group's destructor ("terminate called
    without an active exception", seen on the 2-core CI machine), turning a finished run into a failure.
    No-op outside a gang.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
