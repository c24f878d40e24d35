"""A full disk reported as one: which folder, what was being written, how much is left.

A write into a full folder fails with ENOSPC (device full), EDQUOT (quota spent) or EFBIG (a file-size limit
such as RLIMIT_FSIZE), but the error rarely says where: ``write()`` on an open file carries no path, and a writer
in a subprocess (ffmpeg behind imageio) only puts "No space left on device" into its own text. A step that writes
into a folder runs inside ``writing_into(folder, what)``, which turns any of those into ``NoSpace`` naming the
folder. Nothing half-written goes further: the step's exception ends it before its files are uploaded or
reported (outputs.upload runs after generation; the model cache marks a copy complete only after its last file).
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NO_SPACE_TEXT = ("no space left on device", "disk quota exceeded", "file too large")


class NoSpace(RuntimeError):
    """A write failed because `folder` is full (or over its quota or file-size limit)."""

    def __init__(self, folder: Path, what: str, cause: BaseException):
        self.folder = folder
        super().__init__(f"no space left in {folder} (writing {what}): {cause}; {_free(folder)}")


def is_no_space(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, says the disk is full."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in NO_SPACE_ERRNOS:
            return True
        if any(text in str(seen).lower() for text in NO_SPACE_TEXT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def writing_into(folder: Path, what: str) -> Iterator[None]:
    """Run a step that writes into `folder`; a full disk becomes NoSpace naming the folder and `what`."""
    try:
        yield
    except NoSpace:
        raise
    except Exception as exc:
        if is_no_space(exc):
            raise NoSpace(folder, what, exc) from exc
        raise


def _free(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free} bytes free there now"
    except OSError:
        return "free space unknown"
