"""Where a prompt's results go, when a prompt counts as done, and the status entry that reports it.

Keys are the contract's (chitu_api.objectkeys); metrics.json is uploaded last, so "metrics.json exists" means every
other file of the prompt is there too.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from chitu_api.objectkeys import METRICS, VIDEO
from chitu_worker.storage import ObjectStore

# Policy pictures, most viewable first: the status entry names one of them.
POLICY_PREFERENCE = (".png", ".ppm")


class GenerationOutputs(Protocol):
    """The files chitu_diffusion's `GenerationResult` names."""

    video_path: Path
    metrics_path: Path
    extra_paths: list[Path]


def is_complete(store: ObjectStore, prefix: str) -> bool:
    """Both the video and metrics.json are stored (metrics.json alone would do: it goes last; both is cheap)."""
    return store.exists(f"{prefix}/{VIDEO}") and store.exists(f"{prefix}/{METRICS}")


def upload(store: ObjectStore, prefix: str, outputs: GenerationOutputs) -> list[str]:
    """Video, then policy files, then metrics.json; returns the policy files' URIs."""
    store.upload_file(outputs.video_path, f"{prefix}/{VIDEO}")
    policies = []
    for path in outputs.extra_paths:
        uri = f"{prefix}/{path.name}"
        store.upload_file(path, uri)
        policies.append(uri)
    store.upload_file(outputs.metrics_path, f"{prefix}/{METRICS}")
    return policies


def status_entry(index: int, prompt: str, prefix: str, policies: Sequence[str] = ()) -> dict:
    """One item of `status.outputs`."""
    entry = {
        "index": index,
        "prompt": prompt,
        "video": f"{prefix}/{VIDEO}",
        "metrics": f"{prefix}/{METRICS}",
        "completedTime": now_rfc3339(),
    }
    policy = _preferred_policy(policies)
    if policy is not None:
        entry["policy"] = policy
    return entry


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _preferred_policy(policies: Sequence[str]) -> str | None:
    if not policies:
        return None
    rank = {suffix: i for i, suffix in enumerate(POLICY_PREFERENCE)}
    return min(policies, key=lambda uri: rank.get(Path(uri).suffix.lower(), len(rank)))
