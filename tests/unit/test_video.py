"""mp4 writing and reading: H.264 round trip, frame count and size, nothing left under a final name on failure."""

from pathlib import Path

import numpy as np
import pytest

from chitu_diffusion.video import Mp4Writer, read_mp4, write_mp4


def _gradient(frames=9, height=64, width=48):
    ramp = np.linspace(0, 255, width).astype(np.uint8)  # (W,)
    video = np.broadcast_to(ramp[None, None, :, None], (frames, height, width, 3)).copy()  # (F, H, W, 3)
    video[:, :, :, 1] = np.arange(frames, dtype=np.uint8)[:, None, None] * 20
    return video


@pytest.fixture
def dying_encoder(monkeypatch):
    """imageio-ffmpeg's writer replaced by an encoder that dies after two frames, leaving half a file."""

    def failing_writer(path, *args, **kwargs):
        Path(path).write_bytes(b"half a video")
        yield
        for _ in range(2):
            yield
        raise BrokenPipeError("ffmpeg died")

    monkeypatch.setattr("imageio_ffmpeg.write_frames", failing_writer)


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


def test_failure_mid_stream_leaves_no_file(tmp_path, dying_encoder):
    with pytest.raises(BrokenPipeError):
        write_mp4(_gradient(), tmp_path / "clip.mp4", fps=16)
    assert list(tmp_path.iterdir()) == []


def test_chunks_written_while_encoding_make_one_video(tmp_path):
    frames = _gradient(frames=13)
    with Mp4Writer(tmp_path / "clip.mp4", fps=16) as writer:
        for start in (0, 1, 5, 9):  # the Wan VAE's shape: 1 frame, then 4 per latent frame
            writer.write(frames[start : start + (1 if start == 0 else 4)])
        path = writer.close()
    video = read_mp4(path)
    assert (video.num_frames, video.height, video.width) == (13, 64, 48)
    assert np.abs(video.frames.astype(int) - frames).mean() < 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_an_error_while_frames_are_produced_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError, match="decoder failed"), Mp4Writer(tmp_path / "clip.mp4", fps=16) as writer:
        writer.write(_gradient(frames=5))
        raise RuntimeError("decoder failed")
    assert list(tmp_path.iterdir()) == []


def test_an_encoder_failure_reaches_the_caller_and_leaves_no_file(tmp_path, dying_encoder):
    writer = Mp4Writer(tmp_path / "clip.mp4", fps=16)
    writer.write(_gradient(frames=1))
    writer.write(_gradient(frames=4))
    with pytest.raises(BrokenPipeError):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_a_chunk_of_another_size_is_refused(tmp_path):
    with Mp4Writer(tmp_path / "clip.mp4", fps=16) as writer:
        writer.write(_gradient(frames=1))
        with pytest.raises(ValueError, match=r"frames of 64x48, got 32x48"):
            writer.write(_gradient(frames=1, height=32))
        writer.abort()
    assert list(tmp_path.iterdir()) == []
