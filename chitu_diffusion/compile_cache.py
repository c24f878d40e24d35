"""Where torch.compile keeps what it built, so a fresh process (a new pod, a restart) reuses it.

Compiling the repeated DiT block costs tens of seconds: without a kept cache every pod's first video pays it
again. Inductor already caches everything it produces (FX graphs, AOT-autograd graphs, autotuning results and
Triton kernels) under one folder, named by TORCHINDUCTOR_CACHE_DIR; by default that folder is under /tmp and dies
with the pod. We point it at a folder that outlives the process: next to the model when the model folder is
writable (a model volume shared by every pod of a job, so one pod's compile serves them all), else under the
user's cache. Entries are keyed by inductor by graph, torch version and device, so one folder serves several.

Inductor's cache alone still leaves a fresh process tracing every block's Python again (dynamo: 0.8 s of a
first video's 1.96 s warm compile on an H200, bench/results/README.md). Torch's `caching_precompile` keeps
dynamo's traced code and guards in the same folder (`dynamo/`) and installs them when the blocks are wrapped, so
the first forward traces nothing. It keeps only guards that survive a process: those on a value or a type, never
on an object's identity, so whatever the engine swaps in one process is told apart by value (attention kernels
are `NamedKernel`s) or type (FP8 linears, FlexCache processors); tests/unit/test_compile_cache.py holds that.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch._dynamo.utils import counters

logger = logging.getLogger(__name__)

#: inductor's own switch for its cache root (read on every lookup, so setting it before the first compile works)
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
MODEL_CACHE_NAME = ".chitu-compile-cache"
#: the entries' subfolder, named after what changes inductor's output without entering its cache key (the
#: engine's choices handler, fused/row_reductions.py): kernels built under other choices are never reused
CHOICES_FOLDER = "wide-rows-2048"


def user_cache() -> Path:
    """The user's cache folder for compiled code: $XDG_CACHE_HOME/chitu/compile-cache (default ~/.cache). The
    worker image points XDG_CACHE_HOME at its writable cache volume: its home is on a read-only root."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "chitu" / "compile-cache"


def compile_cache_dir(configured: str, model_dir: Path | None) -> Path:
    """The cache folder: `configured` unless it is "auto"; auto = next to the model if writable, else `user_cache`."""
    if configured != "auto":
        return Path(configured).expanduser()
    if model_dir is not None and os.access(model_dir, os.W_OK):
        return Path(model_dir) / MODEL_CACHE_NAME
    return user_cache()


class DroppedGuardWarnings(logging.Filter):
    """Drops dynamo's warning per identity guard it leaves out under caching_precompile (tens per compiled graph,
    in every pod's log): the engine opted into that, and keeps what it swaps apart by value or type instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is dropped with caching_precompile=True" not in record.getMessage()


_DYNAMO_GUARDS_LOG = logging.getLogger("torch._dynamo.guards")


def use_compile_cache(folder: Path) -> Path:
    """Make inductor (and dynamo, where `keeping_traced_code`) read and write its caches under `folder` (created;
    in its `CHOICES_FOLDER`) for the rest of this process."""
    folder = folder / CHOICES_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError("not writable")
    except OSError as err:  # a cache only saves time: never a reason to fail the load
        fallback = Path(tempfile.gettempdir()) / "chitu-compile-cache" / CHOICES_FOLDER
        logger.warning("torch.compile cache %s is unusable (%s); using %s, which this pod loses", folder, err, fallback)
        folder = fallback
        folder.mkdir(parents=True, exist_ok=True)
    os.environ[INDUCTOR_CACHE_ENV] = str(folder)
    logger.info("torch.compile cache: %s", folder)
    return folder


@contextmanager
def keeping_traced_code(enabled: bool = True) -> Iterator[None]:
    """Torch's caching_precompile on while the engine wraps and traces its own blocks (`enabled`), and only
    then: dropping identity guards is safe for the engine's code (module docstring), not for whatever else the
    process compiles."""
    if not enabled:
        yield
        return
    if not any(isinstance(f, DroppedGuardWarnings) for f in _DYNAMO_GUARDS_LOG.filters):
        _DYNAMO_GUARDS_LOG.addFilter(DroppedGuardWarnings())
    with torch._dynamo.config.patch(caching_precompile=True):
        yield


def compile_blocks(blocks: Iterable[torch.nn.Module], keep_traced_code: bool = False, **options) -> None:
    """Regional compile (what diffusers' `compile_repeated_blocks` does); with `keep_traced_code`, dynamo's saved
    code is installed, once.

    Every block runs one code object (`Module._call_impl`), so the code installed through the first block's
    wrapper serves them all; with caching_precompile on for each, every wrapper installed it again (30 blocks:
    2.9 s of an H200 load). A variant first traced by the first block is saved; blocks run in order, so
    that is every variant that depends on the step, not on the block."""
    for index, block in enumerate(blocks):
        with keeping_traced_code(keep_traced_code and index == 0):
            block.compile(**options)
    if keep_traced_code:
        _number_after_installed_code()


# names dynamo numbers from one process-wide counter when it installs helpers into a module's globals
_NUMBERED_GLOBAL = re.compile(
    r"^(?:__builtins_dict__|__resume_at_\d+|___context_manager_\d+|__comprehension_\w+)_(\d+)$"
)


def _number_after_installed_code() -> None:
    """Make dynamo's later traces number their globals past those the installed traced code brought.

    Installed code keeps the names of the process that traced it (`__builtins_dict___0`, ...), while this
    process's counter starts at 0 again: torch 2.11 then fails the first new trace (a new FlexCache variant, a
    new shape) on a name already taken."""
    taken = [
        int(match.group(1))
        for module in list(sys.modules.values())
        for name in list(getattr(module, "__dict__", {}))
        if name.startswith("__") and (match := _NUMBERED_GLOBAL.match(name))
    ]
    if taken:
        from torch._dynamo import bytecode_transformation

        bytecode_transformation._unique_id_counter = itertools.count(max(taken) + 1)


_graphs_saved = 0  # dynamo's count of graphs this process compiled, at the last `save_traced_code`


def save_traced_code() -> bool:
    """Write dynamo's code and guards for what this process compiled since the last call into the cache folder
    (the next process installs them instead of tracing); False, at no cost, when nothing new was compiled."""
    global _graphs_saved
    compiled = counters["stats"]["unique_graphs"]
    if compiled == _graphs_saved:
        return False
    with keeping_traced_code():
        torch.compiler.save_cache_artifacts()  # with caching_precompile on, this writes dynamo's entries
    _graphs_saved = compiled
    return True
