"""How failures are reported: one line, 4 KiB at most, the right exit code, the first failing rank chosen."""

from __future__ import annotations

import json
from pathlib import Path

from torch.distributed import DistBackendError
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

from chitu_diffusion.config import ConfigError
from chitu_worker.failures import (
    EXIT_FAILED,
    EXIT_INVALID_INPUT,
    EXIT_PEER_LOST,
    InvalidInput,
    exit_code,
    one_line,
    write_rank_error_file,
    write_termination_message,
)
from chitu_worker.launcher import first_failure, torchrun_argv
from chitu_worker.plan import Topology


def test_one_line_and_truncation():
    assert one_line(RuntimeError("boom\n  on two lines"), "rank 1: ") == "rank 1: RuntimeError: boom on two lines"
    assert one_line(ValueError()) == "ValueError: (no message)"
    long = one_line(RuntimeError("é" * 5000))
    assert len(long.encode()) <= 4096 and long.endswith("...")


def test_exit_codes():
    assert exit_code(InvalidInput("spec.generation.height", "bad")) == EXIT_INVALID_INPUT
    assert exit_code(ConfigError("infer.diffusion.cp_size=2 needs torchrun")) == EXIT_INVALID_INPUT
    assert exit_code(RuntimeError("x")) == EXIT_FAILED


def test_a_collective_that_lost_its_peer_is_a_symptom():
    """The messages torch.distributed raises when the other rank went away (tests/distributed produces gloo's)."""
    pair = "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:547]"
    closed = f"{pair} Connection closed by peer [10.0.0.7]:41234"
    reset = f"{pair} Read error [10.0.0.7]:41234: Connection reset by peer"
    nccl = (
        "NCCL error in: /pytorch/torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:3690, remote process exited or "
        "there was a network error, NCCL version 2.27.5"
    )
    assert exit_code(RuntimeError(closed)) == exit_code(RuntimeError(reset)) == EXIT_PEER_LOST
    assert exit_code(DistBackendError(nccl)) == EXIT_PEER_LOST


def test_other_connection_errors_are_failures_of_their_own():
    """A peer of S3 or the API closing is no rank going away; NCCL's system error is often this rank's own setup."""
    aborted = "('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"  # urllib3's
    assert exit_code(RuntimeError(f"cannot reach the Kubernetes API: {aborted}")) == EXIT_FAILED  # chitu_worker.kube
    assert exit_code(ConnectionResetError(104, "Connection reset by peer")) == EXIT_FAILED
    nccl = "NCCL error in: ProcessGroupNCCL.cpp:3690, unhandled system error (run with NCCL_DEBUG=INFO for details)"
    assert exit_code(DistBackendError(nccl)) == EXIT_FAILED


def test_termination_message_is_written_or_ignored(tmp_path):
    path = tmp_path / "termination-log"
    write_termination_message("x" * 10_000, {"CHITU_TERMINATION_LOG": str(path)})
    assert len(path.read_bytes()) == 4096
    write_termination_message("ignored", {"CHITU_TERMINATION_LOG": str(tmp_path / "no" / "such" / "dir")})


def failure(tmp_path: Path, rank: int, exitcode: int, line: str | None = None) -> ProcessFailure:
    error_file = tmp_path / f"error-{rank}.json"
    if line is not None:
        write_rank_error_file(line, {"TORCHELASTIC_ERROR_FILE": str(error_file)})
    return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode, error_file=str(error_file))


def test_first_failure_prefers_a_reported_reason_then_the_earliest(tmp_path):
    killed = failure(tmp_path, 0, -15)  # torchrun's SIGTERM after its peer died: no reason of its own
    root = failure(tmp_path, 1, 1, "rank 1: RuntimeError: out of memory")
    consequence = failure(tmp_path, 2, 1, "rank 2: RuntimeError: Connection closed by peer")
    chosen = first_failure({0: killed, 2: consequence, 1: root})
    assert (chosen.exit_code, chosen.line) == (1, "rank 1: RuntimeError: out of memory")
    assert json.loads((tmp_path / "error-1.json").read_text())["message"] == chosen.line


def test_first_failure_prefers_a_cause_to_an_earlier_lost_peer(tmp_path):
    lost = failure(tmp_path, 0, EXIT_PEER_LOST, "rank 0: RuntimeError: Connection closed by peer")
    root = failure(tmp_path, 1, 1, "rank 1: RuntimeError: out of memory")  # reported after rank 0's
    assert first_failure({0: lost, 1: root}).line == "rank 1: RuntimeError: out of memory"
    alone = first_failure({0: lost, 2: failure(tmp_path, 2, -15)})  # a rank torchrun killed said nothing
    assert (alone.exit_code, alone.line) == (EXIT_PEER_LOST, "rank 0: RuntimeError: Connection closed by peer")


def test_first_failure_without_reports(tmp_path):
    chosen = first_failure({1: failure(tmp_path, 1, -9)})
    assert (chosen.exit_code, chosen.line) == (EXIT_FAILED, "rank 1: killed by SIGKILL")
    chosen = first_failure({0: failure(tmp_path, 0, 3)})
    assert (chosen.exit_code, chosen.line) == (3, "rank 0: exited with code 3 without reporting a reason")
    invalid = failure(tmp_path, 0, 2, "rank 0: InvalidInput: spec.model.uri: no objects under s3://m/x")
    assert first_failure({0: invalid}).exit_code == EXIT_INVALID_INPUT


def test_torchrun_argv_is_a_static_rendezvous_without_restarts(tmp_path):
    topology = Topology(
        nnodes=2, node_rank=1, nproc_per_node=4, master_addr="j-worker-0.j-workers.ns.svc", master_port=29500
    )
    argv = torchrun_argv(topology, tmp_path / "plan.json")
    assert argv[:7] == [
        "--nnodes=2",
        "--node-rank=1",
        "--nproc-per-node=4",
        "--master-addr=j-worker-0.j-workers.ns.svc",
        "--master-port=29500",
        "--rdzv-backend=static",
        "--max-restarts=0",
    ]
    assert argv[7:] == ["--module", "chitu_worker.rank", f"--plan={tmp_path / 'plan.json'}"]
