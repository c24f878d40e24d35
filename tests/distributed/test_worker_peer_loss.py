"""A rank whose collective lost its partner exits EXIT_PEER_LOST: a real gloo gang of two, rank 1's process gone
while rank 0 waits in the all_gather the CFG split runs every denoising step."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from harness import free_port

from chitu_api.exitcodes import EXIT_FAILED, EXIT_PEER_LOST
from chitu_worker.failures import exit_code, one_line

TIMEOUT = 120


def _rank_main(rank: int, port: int, out_dir: str) -> None:
    """Exits as chitu_worker.rank.main would: rank 1 of a crash, rank 0 with the code of what its collective raised."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=TIMEOUT))
    mine = torch.full((4,), float(rank))
    dist.all_reduce(mine)  # the gang works before it breaks
    if rank == 1:
        os._exit(EXIT_FAILED)  # a crash: the process is gone, its sockets closed
    try:
        dist.all_gather([torch.empty(4), torch.empty(4)], mine)
    except Exception as err:
        Path(out_dir, "rank0.txt").write_text(one_line(err))
        os._exit(exit_code(err))
    os._exit(0)


def test_a_rank_whose_peer_died_in_a_collective_exits_peer_lost(tmp_path):
    context = mp.get_context("spawn")
    port = free_port()
    ranks = [context.Process(target=_rank_main, args=(rank, port, str(tmp_path))) for rank in (0, 1)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(TIMEOUT)
    reported = (tmp_path / "rank0.txt").read_text() if (tmp_path / "rank0.txt").exists() else None
    assert [p.exitcode for p in ranks] == [EXIT_PEER_LOST, EXIT_FAILED], reported
    # gloo reads the end of the stream or a reset, whichever the dead rank's socket gave first
    assert re.search(r"gloo/transport/.* (Connection closed by peer|Read error .*: Connection reset by peer)", reported)
