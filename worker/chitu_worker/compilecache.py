"""The engine's compile cache kept next to an s3:// model in S3, so a new pod's first video starts warm.

For an s3:// model the engine keeps what torch.compile built inside the pod's local copy of the model
(`<copy>/.chitu-compile-cache/`, chitu_diffusion/compile_cache.py), which lives on the pod's scratch volume.
After each prompt the leader uploads that folder's new files to `<model uri>/.chitu-compile-cache/`, in the same
layout; `resolve_model` copies the whole model prefix, so the next pod's copy brings them along.

New means a key S3 lacks or holds at another size: inductor's and Triton's entries are named after what they
hold, so the same key and size is the same entry, while dynamo's entry for a compiled function grows when a new
variant is traced (the last pod to upload it wins: this is a cache, not a record). Files being written are left
out: inductor and Triton write under temporary names and rename them when done. A C++ kernel (CPU only) is
compiled at its final name: one caught half-written by a peer rank is uploaded again, whole, after the next
prompt, since its size changed.

A cache only saves time: the first failure (read-only model credentials: AccessDenied; S3 unreachable) logs one
warning and ends uploads for the job, whose result never depends on them.
"""

from __future__ import annotations

import logging
import stat
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath

from chitu_diffusion.compile_cache import MODEL_CACHE_NAME
from chitu_worker.storage import S3Settings, S3Store, is_s3_uri

logger = logging.getLogger(__name__)

#: uploads in flight at once: a first compile leaves hundreds of small files
UPLOAD_THREADS = 8


def is_being_written(relative: PurePosixPath) -> bool:
    """Whether a path in the cache is a write in progress or a lock rather than an entry: inductor writes
    `.<pid>.<thread>.tmp` beside its target (and skips dot names when it reads), Triton writes into
    `tmp.pid_<pid>_<id>/`, both then rename; `*.lock` are the files inductor's compilers lock on."""
    return relative.suffix == ".lock" or any(part.startswith((".", "tmp.")) for part in relative.parts)


def finished_entries(folder: Path) -> dict[str, int]:
    """The size of each finished entry under `folder` (regular files only), by its path relative to it."""
    entries = {}
    for path in folder.rglob("*"):
        relative = PurePosixPath(path.relative_to(folder).as_posix())
        if is_being_written(relative):
            continue
        try:
            status = path.lstat()
        except FileNotFoundError:  # renamed or removed since it was listed
            continue
        if stat.S_ISREG(status.st_mode):
            entries[str(relative)] = status.st_size
    return entries


class CompileCacheUpload:
    """One job's uploads of a local compile cache folder's new files under an s3:// prefix."""

    def __init__(self, store: S3Store, folder: Path, uri: str):
        self.store = store
        self.folder = folder
        self.uri = uri.rstrip("/")
        self._stored: dict[str, int] | None = None  # S3's sizes by relative key: listed once, then kept current
        self._gave_up = False

    def upload_new(self) -> tuple[int, int]:
        """Upload the folder's finished files that S3 lacks or holds at another size; returns (files, bytes)
        uploaded. Never raises: after a failure it warns once and does nothing for the rest of the job."""
        if self._gave_up:
            return 0, 0
        try:
            return self._upload_new()
        except Exception as err:  # a cache only saves time: never a reason to fail the job
            self._gave_up = True
            logger.warning(
                "compile cache not uploaded to %s (%s: %s); not trying again in this job, so new pods compile again",
                self.uri,
                type(err).__name__,
                err,
            )
            return 0, 0

    def _upload_new(self) -> tuple[int, int]:
        if self._stored is None:
            self._stored = self.store.object_sizes(self.uri)
        stored = self._stored
        new = {key: size for key, size in finished_entries(self.folder).items() if stored.get(key) != size}
        if not new:
            return 0, 0
        start = time.perf_counter()
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            uploads = {
                pool.submit(self.store.upload_file, self.folder / key, f"{self.uri}/{key}", log=False): key
                for key in new
            }
            try:
                for upload in as_completed(uploads):
                    upload.result()
                    stored[uploads[upload]] = new[uploads[upload]]
            except Exception:
                pool.shutdown(cancel_futures=True)  # the first failure ends this job's uploads: send no more
                raise
        total = sum(new.values())
        logger.info(
            "compile cache: uploaded %d files (%d bytes) to %s in %.1f s",
            len(new),
            total,
            self.uri,
            time.perf_counter() - start,
        )
        return len(new), total


def shared_compile_cache(
    model_uri: str, model_copy: Path, engine_folder: Path | None, s3: S3Settings
) -> CompileCacheUpload | None:
    """The upload of the engine's compile cache next to the model, or None where there is none to share: only an
    s3:// model whose local copy holds the engine's cache (compile_cache_dir "auto", the copy writable) has one;
    a cache elsewhere (the user's cache, a configured folder, the temporary fallback) is not the model's."""
    local = model_copy / MODEL_CACHE_NAME
    if not is_s3_uri(model_uri) or engine_folder is None or not engine_folder.is_relative_to(local):
        return None
    # only botocore's quick retries: the job must not wait out an S3 outage for a cache
    store = S3Store.connect(s3.model_copy(update={"retry_seconds": 0}))
    return CompileCacheUpload(store, local, f"{model_uri.rstrip('/')}/{MODEL_CACHE_NAME}")
