"""Start this pod's ranks: in-process when the whole job is one process, else torchrun's elastic agent.

torchrun runs with the static rendezvous the pod env describes (NNODES, NODE_RANK, NPROC_PER_NODE, MASTER_ADDR,
MASTER_PORT) and no restarts: a failed rank fails the pod, and the operator restarts the whole gang. Each rank
gets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous address in its env, as the engine expects.

A rank that fails writes its one-line reason to torchrun's error file (failures.write_rank_error_file); the
launcher picks the rank that failed first, preferring a reported reason to a rank killed because a peer died, and
any other reason to a collective that lost its peer (EXIT_PEER_LOST).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

from chitu_worker.failures import EXIT_FAILED, EXIT_PEER_LOST, truncate
from chitu_worker.gpus import check_visible_gpus
from chitu_worker.plan import Topology, WorkerPlan
from chitu_worker.rank import SINGLE, run_rank

logger = logging.getLogger(__name__)

RANK_MODULE = "chitu_worker.rank"


class RankFailure(Exception):
    """A rank process failed: its exit code and its one-line reason."""

    def __init__(self, exit_code: int, line: str):
        self.exit_code = exit_code
        self.line = line
        super().__init__(line)


def launch(plan: WorkerPlan) -> None:
    """Run every rank of this pod to completion; raises RankFailure (or the in-process rank's exception)."""
    check_visible_gpus(plan.gpus_per_pod, torch.cuda.device_count())
    topology = plan.topology
    if topology.world_size == 1:
        run_rank(plan, SINGLE)
        return
    with tempfile.TemporaryDirectory(prefix="chitu-worker-") as tmp:
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(plan.model_dump_json())
        argv = torchrun_argv(topology, plan_file)
        logger.info("torchrun %s", " ".join(argv))
        try:
            torchrun.run(torchrun.parse_args(argv))
        except ChildFailedError as err:
            raise first_failure(err.failures) from None


def torchrun_argv(topology: Topology, plan_file: Path) -> list[str]:
    return [
        f"--nnodes={topology.nnodes}",
        f"--node-rank={topology.node_rank}",
        f"--nproc-per-node={topology.nproc_per_node}",
        f"--master-addr={topology.master_addr}",
        f"--master-port={topology.master_port}",
        "--rdzv-backend=static",
        "--max-restarts=0",
        "--module",
        RANK_MODULE,
        f"--plan={plan_file}",
    ]


def first_failure(failures: dict[int, ProcessFailure]) -> RankFailure:
    """The root cause among failed ranks: reported reasons first, a lost peer's last among them, then the earliest,
    then the lowest rank."""

    def order(item: tuple[int, ProcessFailure]) -> tuple[bool, bool, int, int]:
        rank, failure = item
        time_ns = failure.error_file_data.get("time_ns", failure.timestamp * 10**9)
        return (_reported(failure) is None, failure.exitcode == EXIT_PEER_LOST, int(time_ns), rank)

    rank, failure = min(failures.items(), key=order)
    line = _reported(failure)
    if line is None and failure.exitcode < 0:
        line = f"rank {rank}: killed by {failure.signal_name()}"
    elif line is None:
        line = f"rank {rank}: exited with code {failure.exitcode} without reporting a reason"
    return RankFailure(failure.exitcode if failure.exitcode > 0 else EXIT_FAILED, truncate(line))


def _reported(failure: ProcessFailure) -> str | None:
    """The line a chitu rank wrote to its error file (without a file torch fills in a placeholder message)."""
    data = failure.error_file_data
    return str(data["message"]) if "time_ns" in data else None
