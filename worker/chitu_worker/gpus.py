"""A pod that asked for GPUs but whose CUDA sees fewer fails at once, saying so (it would else run on the CPU
for hours, or hang in NCCL).

The usual causes are the node's (no NVIDIA driver or device plugin, a missing ``runtimeClassName: nvidia``), so
retrying the same pod spec rarely helps: the operator treats the exit code as permanent. The dev cluster's node
agent runs pods as local processes on a machine without GPUs; it declares its ``nvidia.com/gpu`` capacity
simulated by setting ``CHITU_SIMULATED_GPUS`` in the pods that request some, and only then does a GPU pod run on
the CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from chitu_api.names import SIMULATED_GPUS_ENV

logger = logging.getLogger(__name__)


class GpusNotVisible(RuntimeError):
    """CUDA sees fewer devices than the pod requested (spec.parallelism.gpusPerPod)."""


def check_visible_gpus(requested: int, visible: int, environ: Mapping[str, str] = os.environ) -> None:
    """Raise GpusNotVisible unless ``visible`` covers ``requested`` or the node declares its GPUs simulated."""
    if requested <= 0 or visible >= requested:
        return
    if environ.get(SIMULATED_GPUS_ENV):
        logger.warning(
            "%s GPU(s) requested, CUDA sees %d: the node declares them simulated (%s=%s), running on CPU",
            requested,
            visible,
            SIMULATED_GPUS_ENV,
            environ[SIMULATED_GPUS_ENV],
        )
        return
    raise GpusNotVisible(
        f"spec.parallelism.gpusPerPod is {requested} but CUDA sees {visible} GPU(s) in this pod "
        f"(CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}): check the node's NVIDIA driver "
        "and device plugin, and the pod's runtimeClassName (spec.worker.runtimeClassName)"
    )
