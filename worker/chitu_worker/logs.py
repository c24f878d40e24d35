"""Log format shared by the launcher and the rank processes (their lines interleave in one pod log)."""

from __future__ import annotations

import logging


def configure_logging(tag: str) -> None:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s [{tag}] %(name)s: %(message)s", force=True
    )
