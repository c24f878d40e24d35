"""A full disk becomes NoSpace naming the folder: real ENOSPC from /dev/full, EFBIG from RLIMIT_FSIZE."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from chitu_worker.diskspace import NoSpace, is_no_space, writing_into
from chitu_worker.failures import EXIT_FAILED, exit_code, one_line


def test_a_write_to_a_full_device_names_the_folder(tmp_path):
    with (
        pytest.raises(NoSpace) as caught,
        writing_into(tmp_path, "the outputs of prompt 3"),
        open("/dev/full", "wb") as full,  # every write: ENOSPC
    ):
        full.write(b"\0" * 4096)
    line = one_line(caught.value)
    assert line.startswith(f"NoSpace: no space left in {tmp_path} (writing the outputs of prompt 3): [Errno 28]")
    assert "bytes free there now" in line
    assert exit_code(caught.value) == EXIT_FAILED  # another node may have room: the gang restart may help


def test_a_file_size_limit_counts_as_no_space(tmp_path):
    """RLIMIT_FSIZE (`ulimit -f`): Python ignores SIGXFSZ, so the write fails with EFBIG."""
    script = (
        "import resource, sys; from pathlib import Path; from chitu_worker.diskspace import writing_into\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, (1024, {resource.RLIM_INFINITY}))\n"
        f"with writing_into(Path({str(tmp_path)!r}), 'a video'):\n"
        f"    Path({str(tmp_path / 'v.mp4')!r}).write_bytes(b'x' * 4096)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode != 0
    assert f"NoSpace: no space left in {tmp_path} (writing a video): [Errno 27] File too large" in run.stderr


def test_a_writer_subprocess_saying_so_in_its_text_counts():
    assert is_no_space(RuntimeError("ffmpeg: av_interleaved_write_frame(): No space left on device"))


def test_other_errors_pass_unchanged(tmp_path):
    with pytest.raises(PermissionError), writing_into(tmp_path, "x"):
        raise PermissionError(13, "Permission denied")
    with pytest.raises(ValueError, match="bad frame"), writing_into(Path("/nowhere"), "x"):
        raise ValueError("bad frame")
