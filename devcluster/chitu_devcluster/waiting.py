"""Polling with a deadline: the one way this package (and the e2e tests) wait for the cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T],
    what: str,
    timeout: float,
    *,
    interval: float = 0.1,
    alive: Callable[[], bool] | None = None,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` until it returns something truthy and return that.

    Raises TimeoutError after ``timeout`` seconds, or RuntimeError as soon as ``alive`` says the
    process being waited on has died; ``detail`` (a log tail, the last object seen) is appended.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if alive is not None and not alive():
            raise RuntimeError(f"gave up waiting for {what}: the process exited" + _detail(detail))
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}" + _detail(detail))
        time.sleep(interval)


def _detail(detail: Callable[[], str] | None) -> str:
    return f"\n{detail()}" if detail is not None else ""
