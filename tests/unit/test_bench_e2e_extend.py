"""bench_e2e.py --extend: a second call joins the first call's run only on the same cards, shapes and files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from bench_e2e import extended


def header(**changes) -> dict:
    fresh = {
        "gpus": 1,
        "gpu_uuids": ["GPU-1b41e0ce"],
        "shapes": {"frames": 81, "height": 480, "width": 832, "steps": 50},
        "weights": "random (seed 0), wan2.1-t2v-1.3b; tiny text encoder",
        "modes": {},
        "failed": {},
    }
    return {**fresh, **changes}


@pytest.fixture
def first_call(tmp_path: Path) -> dict:
    latents, frames = tmp_path / "tuned.latents.pt", tmp_path / "tuned.frames.npy"
    latents.write_bytes(b"x")
    frames.write_bytes(b"x")
    return header(modes={"tuned": {"loop_s": 45.8, "latents_file": str(latents), "frames_file": str(frames)}})


def test_a_second_call_on_the_same_card_keeps_the_first_calls_modes(first_call: dict) -> None:
    joined = extended(first_call, header())
    assert joined["modes"]["tuned"]["loop_s"] == 45.8
    assert joined["calls"] == 2
    assert extended(joined, header())["calls"] == 3


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gpu_uuids", ["GPU-2dc4fe22"]),
        ("shapes", {"frames": 17, "height": 240, "width": 416, "steps": 3}),
        ("gpus", 2),
    ],
)
def test_another_card_or_shape_is_another_run(first_call: dict, key: str, value) -> None:
    with pytest.raises(SystemExit, match=f"--extend: {key} differ"):
        extended(first_call, header(**{key: value}))


def test_a_fresh_machine_without_the_first_calls_files_is_refused(first_call: dict) -> None:
    Path(first_call["modes"]["tuned"]["frames_file"]).unlink()
    with pytest.raises(SystemExit, match="is gone"):
        extended(first_call, header())
