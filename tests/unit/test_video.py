"""mp4 writing and reading: H.264 round trip, frame count and size, nothing left under a final name on failure."""

from pathlib import Path

import numpy as np
import pytest

from chitu_diffusion.video import read_mp4, write_mp4


def _gradient(frames=9, height=64, width=48):
    ramp = np.linspace(0, 255, width).astype(np.uint8)  # (W,)
    video = np.broadcast_to(ramp[None, None, :, None], (frames, height, width, 3)).copy()  # (F, H, W, 3)
    video[:, :, :, 1] = np.arange(frames, dtype=np.uint8)[:, None, None] * 20
    return video


def test_round_trip_keeps_count_size_fps_and_content(tmp_path):
    frames = _gradient()
    path = write_mp4(frames, tmp_path / "clip.mp4", fps=16)
    video = read_mp4(path)
    assert (video.num_frames, video.height, video.width, video.fps) == (9, 64, 48, 16.0)
    assert np.abs(video.frames.astype(int) - frames).mean() < 3  # lossy, but close
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_rejects_non_rgb_uint8(tmp_path):
    with pytest.raises(ValueError, match=r"\(F, H, W, 3\) uint8"):
        write_mp4(_gradient().astype(np.float32), tmp_path / "clip.mp4", fps=16)


def test_failure_mid_stream_leaves_no_file(tmp_path, monkeypatch):
    def failing_writer(path, *args, **kwargs):  # an encoder that dies after two frames
        Path(path).write_bytes(b"half a video")
        yield
        for _ in range(2):
            yield
        raise BrokenPipeError("ffmpeg died")

    monkeypatch.setattr("imageio_ffmpeg.write_frames", failing_writer)
    with pytest.raises(BrokenPipeError):
        write_mp4(_gradient(), tmp_path / "clip.mp4", fps=16)
    assert list(tmp_path.iterdir()) == []
