"""How a worker fails: exit codes, the one-line reason, and the two files that carry it.

A pod's reason for failing reaches the operator (and `kubectl describe`) through the container's termination
message: one line, at most 4 KiB, in the file named by CHITU_TERMINATION_LOG (default /dev/termination-log).
A rank process started by torchrun hands its line to the launcher through torchrun's own channel, the JSON
error file named by TORCHELASTIC_ERROR_FILE, so the launcher can report the rank that failed first.

A rank whose collective broke because another rank went away exits EXIT_PEER_LOST, not EXIT_FAILED: its failure is
a symptom, and the launcher and the operator quote the rank that went away before it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from chitu_api.exitcodes import (
    EXIT_FAILED,
    EXIT_GPUS_NOT_VISIBLE,
    EXIT_INVALID_INPUT,
    EXIT_PEER_LOST,
    EXIT_REPORT_LOST,
)
from chitu_diffusion.config import ConfigError
from chitu_worker.gpus import GpusNotVisible
from chitu_worker.progress import ReportLost

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4096  # the kubelet's limit on a termination message
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# What torch.distributed raises when the rank at a collective's other end went away: gloo's TCP transport
# ("[.../gloo/transport/tcp/pair.cc:547] Connection closed by peer [10.0.0.7]:41234", or a read's "Connection reset
# by peer"), NCCL's ncclRemoteError ("remote process exited or there was a network error"). gloo's source path keeps
# out an S3 or API call's own "Connection reset by peer", a failure in its own right. Not NCCL's "unhandled system
# error": a full /dev/shm or a bad socket setting on this rank reads the same, and those are causes.
PEER_LOSS = re.compile(r"gloo/transport/\S*\].*Connection (?:closed|reset) by peer|remote process exited")


class InvalidInput(ValueError):
    """The job spec or the pod's environment is unusable; `field` names what to fix (`spec.generation.height`)."""

    def __init__(self, field: str, reason: str):
        self.field = field
        super().__init__(f"{field}: {reason}")


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, GpusNotVisible):
        return EXIT_GPUS_NOT_VISIBLE
    if isinstance(exc, ReportLost):
        return EXIT_REPORT_LOST
    if lost_a_peer(exc):
        return EXIT_PEER_LOST
    # The engine's ConfigError is invalid input too: an unsupported combination of settings.
    return EXIT_INVALID_INPUT if isinstance(exc, (InvalidInput, ConfigError)) else EXIT_FAILED


def lost_a_peer(exc: BaseException) -> bool:
    """A collective broke because another rank went away (torch.distributed raises RuntimeErrors, DistBackendError
    among them)."""
    return isinstance(exc, RuntimeError) and PEER_LOSS.search(str(exc)) is not None


def one_line(exc: BaseException, prefix: str = "") -> str:
    """`[prefix]ExceptionType: message` on one line, cut to fit a termination message."""
    text = " ".join(str(exc).split()) or "(no message)"
    return truncate(f"{prefix}{type(exc).__name__}: {text}")


def truncate(line: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    data = line.encode()
    if len(data) <= limit:
        return line
    return data[: limit - 3].decode(errors="ignore") + "..."


def termination_log_path(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("CHITU_TERMINATION_LOG") or DEFAULT_TERMINATION_LOG)


def write_termination_message(line: str, environ: Mapping[str, str] = os.environ) -> None:
    """Best effort: outside a pod /dev/termination-log usually cannot be written, and that is fine."""
    path = termination_log_path(environ)
    try:
        path.write_text(truncate(line))
    except OSError as err:
        logger.debug("termination message not written to %s: %s", path, err)


def write_rank_error_file(line: str, environ: Mapping[str, str] = os.environ) -> None:
    """Hand `line` to the torchrun agent (the string form of torch.distributed.elastic's error file).

    `time_ns` breaks the ties of torchrun's whole-second timestamps, so the launcher can tell the first failure
    from the ranks that failed after it (a peer's collective breaking because the first one died).
    """
    path = environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    report = {"message": truncate(line), "timestamp": int(time.time()), "time_ns": time.time_ns()}
    Path(path).write_text(json.dumps(report))
