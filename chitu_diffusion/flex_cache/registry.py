"""Name -> strategy class registry.

A strategy is one module (or package) under `flex_cache/strategy/`, named after the strategy, whose class is
registered with `@register_strategy`. The names are read from the folder without importing anything, so listing
them (the CRD's enum, the contract's validation, `chitu --help`) needs no torch; a strategy's module is imported
only when that strategy is asked for. Adding a strategy means adding one file or folder and editing no other.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chitu_diffusion.flex_cache.base import FlexCacheStrategy

STRATEGY_PACKAGE = "chitu_diffusion.flex_cache.strategy"
_STRATEGY_DIR = Path(__file__).resolve().parent / "strategy"
_REGISTRY: dict[str, type[FlexCacheStrategy]] = {}


def register_strategy(cls: type[FlexCacheStrategy]) -> type[FlexCacheStrategy]:
    """Class decorator: make `cls` selectable by its lower-case `name`, which must be its module's name."""
    name = cls.name.lower()
    module_name = cls.__module__.removeprefix(f"{STRATEGY_PACKAGE}.").split(".")[0]
    if name != module_name:
        raise ValueError(f"FlexCache strategy {name!r} must live in {STRATEGY_PACKAGE}.{name}, not {cls.__module__}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"FlexCache strategy {name!r} registered twice ({_REGISTRY[name]} and {cls})")
    _REGISTRY[name] = cls
    return cls


@cache
def strategy_names() -> tuple[str, ...]:
    """Every strategy's name, 'none' first, read from the strategy folder without importing it (no torch)."""
    names = [module.name for module in pkgutil.iter_modules([str(_STRATEGY_DIR)]) if not module.name.startswith("_")]
    return tuple(sorted(names, key=lambda n: (n != "none", n)))


def requires_ring_attention(name: str) -> bool:
    """A strategy's torch-free trait, declared in its package's `__init__` (`REQUIRES_RING_ATTENTION = True`)."""
    return bool(getattr(importlib.import_module(f"{STRATEGY_PACKAGE}.{_known(name)}"), "REQUIRES_RING_ATTENTION", False))


def get_strategy(name: str) -> type[FlexCacheStrategy]:
    """The strategy class for `name` (case-insensitive), importing its module on first use."""
    key = _known(name)
    if key not in _REGISTRY:
        module = importlib.import_module(f"{STRATEGY_PACKAGE}.{key}")
        if hasattr(module, "__path__") and key not in _REGISTRY:  # a strategy folder: the class is in <name>/<name>.py
            importlib.import_module(f"{STRATEGY_PACKAGE}.{key}.{key}")
    return _REGISTRY[key]


def _known(name: str) -> str:
    key = name.lower()
    if key not in strategy_names():
        raise ValueError(f"unknown FlexCache strategy {name!r}; allowed: {', '.join(strategy_names())}")
    return key
