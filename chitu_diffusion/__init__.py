"""Chitu's diffusion engine: Wan2.1 text-to-video with FlexCache, on one device or a parallel gang.

    from chitu_diffusion import Engine, generate, load_engine
    from chitu_diffusion.task import DiffusionUserParams

The names below are imported on first use, so `import chitu_diffusion` (and the CLI's help) stays fast and free
of torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Engine": "chitu_diffusion.engines.single",
    "GenerationResult": "chitu_diffusion.engines.single",
    "load_engine": "chitu_diffusion.engines",
    "generate": "chitu_diffusion.engines",
    "EngineConfig": "chitu_diffusion.config",
    "DiffusionUserParams": "chitu_diffusion.task",
    "FlexCacheParams": "chitu_diffusion.task",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
