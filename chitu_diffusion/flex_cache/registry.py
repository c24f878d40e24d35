"""Name -> strategy class registry, and what each strategy needs from the parallel layout.

A strategy is one folder under `flex_cache/strategy/`, named after the strategy: `<name>/__init__.py` holds its
torch-free traits (`REQUIRES_RING_ATTENTION`), `<name>/<name>.py` the class, registered with `@register_strategy`.
The names and traits are read without importing the class, so listing them (the CRD's enum, the contract's
validation, `chitu --help`) and checking a request against a layout need no torch; the class is imported only
when the strategy runs. Adding a strategy means adding one folder and editing no other file.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from chitu_diffusion.parallel.degrees import ring_attention_problem

if TYPE_CHECKING:
    from chitu_diffusion.flex_cache.base import FlexCacheStrategy

STRATEGY_PACKAGE = "chitu_diffusion.flex_cache.strategy"
_STRATEGY_DIR = Path(__file__).resolve().parent / "strategy"
_REGISTRY: dict[str, type[FlexCacheStrategy]] = {}


def register_strategy(cls: type[FlexCacheStrategy]) -> type[FlexCacheStrategy]:
    """Class decorator: make `cls` selectable by its lower-case `name`, which must name its folder and file."""
    name = cls.name.lower()
    if cls.__module__ != f"{STRATEGY_PACKAGE}.{name}.{name}":
        raise ValueError(
            f"FlexCache strategy {name!r} must live in {STRATEGY_PACKAGE}.{name}.{name}, not {cls.__module__}"
        )
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"FlexCache strategy {name!r} registered twice ({_REGISTRY[name]} and {cls})")
    _REGISTRY[name] = cls
    return cls


@cache
def strategy_names() -> tuple[str, ...]:
    """Every strategy's name, 'none' first, read from the strategy folders without importing them (no torch)."""
    names = [m.name for m in pkgutil.iter_modules([str(_STRATEGY_DIR)]) if m.ispkg and not m.name.startswith("_")]
    return tuple(sorted(names, key=lambda n: (n != "none", n)))


def requires_ring_attention(name: str) -> bool:
    """A strategy's torch-free trait, declared in its folder's `__init__` (`REQUIRES_RING_ATTENTION = True`)."""
    traits = importlib.import_module(f"{STRATEGY_PACKAGE}.{_known(name)}")
    return bool(getattr(traits, "REQUIRES_RING_ATTENTION", False))


def strategy_problem(name: str, cp_size: int, up_limit: int, num_heads: int | None) -> str | None:
    """Why strategy `name` cannot run at these parallel degrees, or None.

    The one check of a strategy's layout needs (DiTango: ring attention over >= 2 ranks), called by the engine
    with its layout (a single process is cp_size 1) and the model's head count, and by the request contract with
    `num_heads=None` (the worst case; `ring_attention_problem` has the CEL twin the CRD carries).
    """
    if requires_ring_attention(name):
        problem = ring_attention_problem(cp_size, up_limit, num_heads)
        if problem is not None:
            return f"FlexCache strategy {_known(name)!r} {problem}"
    return None


def get_strategy(name: str) -> type[FlexCacheStrategy]:
    """The strategy class for `name` (case-insensitive), importing `strategy/<name>/<name>.py` on first use."""
    key = _known(name)
    if key not in _REGISTRY:
        importlib.import_module(f"{STRATEGY_PACKAGE}.{key}.{key}")
    return _REGISTRY[key]


def _known(name: str) -> str:
    key = name.lower()
    if key not in strategy_names():
        raise ValueError(f"unknown FlexCache strategy {name!r}; allowed: {', '.join(strategy_names())}")
    return key
