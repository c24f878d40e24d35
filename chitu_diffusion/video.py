"""H.264 mp4 writing (atomic) and reading, through imageio-ffmpeg's bundled ffmpeg."""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

# Visually near-lossless; a 480p 5 s clip stays a few MB.
CRF = 18


class Mp4Writer:
    """H.264 yuv420p at `fps`, fed (f, H, W, 3) uint8 RGB chunks; ffmpeg is fed from a thread of its own, so the
    caller's GPU keeps producing frames while earlier ones encode (the pipe's writes release the GIL).

    Atomic like `write_mp4`: ffmpeg writes a hidden temporary name in the same folder, renamed over `path` only by
    `close()` once the encoder has exited cleanly; `abort()` (or leaving the `with` block on an exception) removes
    it, so a crash never leaves a truncated file under the final name.
    """

    def __init__(self, path: str | Path, fps: int):
        self.path = Path(path)
        self.fps = fps
        self._partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._chunks: queue.Queue[np.ndarray | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._size: tuple[int, int] | None = None  # (H, W), from the first chunk
        self._error: BaseException | None = None

    def write(self, frames: np.ndarray) -> None:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected frames of shape (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        if self._error is not None:
            raise self._error
        if self._thread is None:  # the first chunk fixes the size
            self._size = frames.shape[1:3]
            self._thread = threading.Thread(target=self._encode, args=self._size, daemon=True)
            self._thread.start()
        elif frames.shape[1:3] != self._size:
            raise ValueError(
                f"{self.path.name}: frames of {self._size[0]}x{self._size[1]}, got {frames.shape[1]}x{frames.shape[2]}"
            )
        self._chunks.put(frames)

    def close(self) -> Path:
        """Wait for the encoder, then put the file under its name."""
        if self._thread is None:
            raise ValueError(f"no frames were written to {self.path}")
        self._chunks.put(None)
        self._thread.join()
        if self._error is not None:
            self._partial.unlink(missing_ok=True)
            raise self._error
        os.replace(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        if self._thread is not None:
            self._chunks.put(None)
            self._thread.join()
            self._thread = None
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def _encode(self, height: int, width: int) -> None:
        writer = imageio_ffmpeg.write_frames(
            str(self._partial),
            (width, height),
            fps=self.fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=None,
            output_params=["-crf", str(CRF)],
            macro_block_size=2,  # yuv420p needs even sizes; never let ffmpeg rescale a legal size
            ffmpeg_log_level="error",
        )
        try:
            writer.send(None)  # start the generator (imageio-ffmpeg's protocol)
            while (frames := self._chunks.get()) is not None:
                for frame in frames:
                    writer.send(np.ascontiguousarray(frame))
        except BaseException as err:  # reported to the caller by write/close
            self._error = err
            while self._chunks.get() is not None:  # drain, so the caller's close() returns
                pass
        finally:
            writer.close()


def write_mp4(frames: np.ndarray, path: str | Path, fps: int) -> Path:
    """Encode `frames` (F, H, W, 3) uint8 RGB as H.264 yuv420p at `fps`, atomically (see `Mp4Writer`)."""
    with Mp4Writer(path, fps) as writer:
        writer.write(frames)
        return writer.close()


@dataclass(frozen=True)
class VideoFile:
    frames: np.ndarray  # (F, H, W, 3) uint8
    fps: float

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]


def read_mp4(path: str | Path) -> VideoFile:
    """Decode every frame of `path` to RGB."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)  # the first item is the metadata dict
    width, height = meta["size"]
    frames = [np.frombuffer(raw, np.uint8).reshape(height, width, 3) for raw in reader]
    return VideoFile(np.stack(frames), float(meta["fps"]))
