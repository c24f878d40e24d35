"""Where torch.compile keeps what it built, so a fresh process (a new pod, a restart) reuses it.

Compiling the repeated DiT block costs tens of seconds: without a kept cache every pod's first video pays it
again. Inductor already caches everything it produces (FX graphs, AOT-autograd graphs, autotuning results and
Triton kernels) under one folder, named by TORCHINDUCTOR_CACHE_DIR; by default that folder is under /tmp and dies
with the pod. We point it at a folder that outlives the process: next to the model when the model folder is
writable (a model volume shared by every pod of a job, so one pod's compile serves them all), else under the
user's cache. Entries are keyed by inductor by graph, torch version and device, so one folder serves several.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

#: inductor's own switch for its cache root (read on every lookup, so setting it before the first compile works)
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
MODEL_CACHE_NAME = ".chitu-compile-cache"
USER_CACHE = Path("~/.cache/chitu/compile-cache")
#: the entries' subfolder, named after what changes inductor's output without entering its cache key (the
#: engine's choices handler, fused/row_reductions.py): kernels built under other choices are never reused
CHOICES_FOLDER = "wide-rows-2048"


def compile_cache_dir(configured: str, model_dir: Path | None) -> Path:
    """The cache folder: `configured` unless it is "auto"; auto = next to the model if writable, else user cache."""
    if configured != "auto":
        return Path(configured).expanduser()
    if model_dir is not None and os.access(model_dir, os.W_OK):
        return Path(model_dir) / MODEL_CACHE_NAME
    return USER_CACHE.expanduser()


def use_compile_cache(folder: Path) -> Path:
    """Make inductor read and write its caches under `folder` (created; in its `CHOICES_FOLDER`) for the rest
    of this process."""
    folder = folder / CHOICES_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[INDUCTOR_CACHE_ENV] = str(folder)
    logger.info("torch.compile cache: %s", folder)
    return folder
