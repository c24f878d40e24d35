"""Name -> strategy class registry.

Every module under `flex_cache/strategy/` registers its class with `@register_strategy`; modules are discovered
on first use, so adding a strategy means adding one file and editing no other.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chitu_diffusion.flex_cache.base import FlexCacheStrategy

_REGISTRY: dict[str, type[FlexCacheStrategy]] = {}


def register_strategy(cls: type[FlexCacheStrategy]) -> type[FlexCacheStrategy]:
    """Class decorator: make `cls` selectable by its lower-case `name`."""
    name = cls.name.lower()
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"FlexCache strategy {name!r} registered twice ({_REGISTRY[name]} and {cls})")
    _REGISTRY[name] = cls
    return cls


@cache
def _discover() -> None:
    from chitu_diffusion.flex_cache import strategy

    for module in pkgutil.walk_packages(strategy.__path__, prefix=f"{strategy.__name__}."):
        importlib.import_module(module.name)


def available_strategies() -> list[str]:
    """Registered strategy names, 'none' first."""
    _discover()
    return sorted(_REGISTRY, key=lambda n: (n != "none", n))


def get_strategy(name: str) -> type[FlexCacheStrategy]:
    _discover()
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"unknown FlexCache strategy {name!r}; allowed: {', '.join(available_strategies())}") from None
