"""Object storage on this machine's file system, for `chitu run` (a manifest run locally, no S3 needed).

`FileStore` keeps `ObjectStore`'s promises with a folder tree: a "URI" is an absolute path, a file appears whole
or not at all (written beside its final name, then renamed), and `download_prefix` copies a folder. `RoutedStore`
serves both kinds of URI, so a local run can read its model from S3 and write its outputs to a folder, or the
reverse, with the rank code unchanged.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from chitu_worker.storage import ObjectStore, is_s3_uri

logger = logging.getLogger(__name__)


class FileStore:
    """`ObjectStore` on local folders."""

    def exists(self, uri: str) -> bool:
        return Path(uri).is_file()

    def upload_file(self, path: Path, uri: str) -> None:
        target = Path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        shutil.copyfile(path, partial)
        os.replace(partial, target)
        logger.info("stored %s (%d bytes) at %s", path.name, target.stat().st_size, target)

    def abort_incomplete_uploads(self, prefix: str) -> int:
        """Nothing to abort: a file is copied beside its name and renamed, never left in parts."""
        return 0

    def download_prefix(self, uri: str, dest: Path) -> int:
        source = Path(uri)
        files = [path for path in source.rglob("*") if path.is_file()] if source.is_dir() else []
        for path in files:
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        return len(files)


class RoutedStore:
    """s3:// URIs to an S3 store (connected on first use), paths to a `FileStore`."""

    def __init__(self, connect_s3: Callable[[], ObjectStore]):
        self._connect_s3 = connect_s3
        self._s3: ObjectStore | None = None
        self._files = FileStore()

    def _store(self, uri: str) -> ObjectStore:
        if not is_s3_uri(uri):
            return self._files
        if self._s3 is None:
            self._s3 = self._connect_s3()
        return self._s3

    def exists(self, uri: str) -> bool:
        return self._store(uri).exists(uri)

    def upload_file(self, path: Path, uri: str) -> None:
        self._store(uri).upload_file(path, uri)

    def download_prefix(self, uri: str, dest: Path) -> int:
        return self._store(uri).download_prefix(uri, dest)

    def abort_incomplete_uploads(self, prefix: str) -> int:
        return self._store(prefix).abort_incomplete_uploads(prefix)
