"""The model folder a rank loads: a local path as it is, or an s3:// prefix copied once into a local cache.

Cache layout under CHITU_MODEL_CACHE (default ~/.cache/chitu/models):
    <sha256(uri)[:16]>/           the copied folder
    <sha256(uri)[:16]>.complete   written after the last file arrived: without it the folder is copied again
    <sha256(uri)[:16]>.lock       flock'ed during the check and the copy
The lock serialises the ranks of a pod (and pods sharing a node's cache volume): the first copies, the others
wait and then find the marker. A prefix is treated as immutable; a new model version needs a new URI.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chitu_api.podenv import DEFAULT_MODEL_CACHE
from chitu_worker.diskspace import NoSpace, writing_into
from chitu_worker.failures import InvalidInput
from chitu_worker.storage import ObjectStore, is_s3_uri

logger = logging.getLogger(__name__)

MODEL_FIELD = "spec.model.uri"


def cache_dir(uri: str, cache_root: Path) -> Path:
    return cache_root / hashlib.sha256(uri.encode()).hexdigest()[:16]


def resolve_model(uri: str, store: ObjectStore, cache_root: Path) -> Path:
    """A local folder holding the model `uri` names."""
    if not is_s3_uri(uri):
        path = Path(uri)
        if not path.is_dir():
            raise InvalidInput(MODEL_FIELD, f"{uri} is not a folder on this machine")
        return path
    target = cache_dir(uri, cache_root)
    marker = target.with_name(f"{target.name}.complete")
    cache_root.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(f"{target.name}.lock")):
        if marker.exists():
            logger.info("model %s already cached in %s", uri, target)
            return target
        shutil.rmtree(target, ignore_errors=True)  # what an interrupted copy left behind
        start = time.perf_counter()
        try:
            with writing_into(cache_root, f"a copy of the model {uri}"):
                count = store.download_prefix(uri, target)
        except NoSpace:
            shutil.rmtree(target, ignore_errors=True)  # a partial copy only takes the space others need
            raise
        if count == 0:
            raise InvalidInput(MODEL_FIELD, f"no objects under {uri}")
        marker.write_text(json.dumps({"uri": uri, "files": count}) + "\n")
        logger.info("model %s copied to %s (%d files, %.1f s)", uri, target, count, time.perf_counter() - start)
    return target


def seed_cache(uri: str, folder: Path, cache_root: Path = DEFAULT_MODEL_CACHE) -> Path:
    """Put a local copy of the model `uri` names into the cache, as if it had been copied from there (the dev
    cluster pre-loads its tiny model this way, so `chitu run` finds it without S3)."""
    target = cache_dir(uri, cache_root)
    marker = target.with_name(f"{target.name}.complete")
    cache_root.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(f"{target.name}.lock")):
        shutil.rmtree(target, ignore_errors=True)
        marker.unlink(missing_ok=True)
        shutil.copytree(folder, target)
        count = sum(1 for path in target.rglob("*") if path.is_file())
        marker.write_text(json.dumps({"uri": uri, "files": count}) + "\n")
    return target


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, and by the kernel if we die
        yield
