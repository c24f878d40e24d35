"""H.264 mp4 writing (atomic) and reading, through imageio-ffmpeg's bundled ffmpeg."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

# Visually near-lossless; a 480p 5 s clip stays a few MB.
CRF = 18


def write_mp4(frames: np.ndarray, path: str | Path, fps: int) -> Path:
    """Encode `frames` (F, H, W, 3) uint8 RGB as H.264 yuv420p at `fps`.

    ffmpeg writes to a hidden temporary name in the same folder that is renamed over `path` only once the encoder
    has exited cleanly, so a crash never leaves a truncated file under the final name.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected frames of shape (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    _, height, width, _ = frames.shape
    writer = imageio_ffmpeg.write_frames(
        str(partial),
        (width, height),
        fps=fps,
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
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    return path


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
