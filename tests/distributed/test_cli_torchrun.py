"""`chitu generate` as a gang: torchrun starts 2 CPU ranks (gloo) on the tiny model folder; rank 0 writes."""

import json
import subprocess
import sys

import pytest
from harness import free_port

from chitu_diffusion.flex_cache.strategy.ditango.ditango import POLICY_FILE
from chitu_diffusion.video import read_mp4

pytestmark = pytest.mark.distributed

REQUEST = ["--prompt", "a cat", "--frames", "9", "--height", "64", "--width", "64", "--steps", "6", "--seed", "3"]


def torchrun_generate(model_dir, output_dir, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
        "-m", "chitu_cli", "generate", "--model", str(model_dir), "--output", str(output_dir),
        *REQUEST, *extra,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_generate_with_cp_size_2(tiny_model_dir, tmp_path):
    result = torchrun_generate(tiny_model_dir, tmp_path, "infer.diffusion.cp_size=2")
    assert result.stdout.count("video: ") == 1  # rank 0 only
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["parallel"] == {"world_size": 2, "cfg": 1, "cp": 2, "ulysses": 2, "ring": 1}
    assert (tmp_path / "video.mp4").stat().st_size > 0


def test_generate_ditango_on_a_ring_of_2(tiny_model_dir, tmp_path):
    torchrun_generate(
        tiny_model_dir, tmp_path, "--flexcache", "ditango", "infer.diffusion.cp_size=2", "infer.diffusion.up_limit=1"
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["parallel"]["ring"] == 2
    assert metrics["cache"]["strategy"] == "ditango" and metrics["cache"]["summary"]["units_reused"] > 0
    assert sorted(metrics["cache"]["visualisations"]) == sorted([POLICY_FILE, POLICY_FILE.replace(".ppm", ".png")])
    assert (tmp_path / POLICY_FILE).read_bytes().startswith(b"P6\n6 4\n255\n")  # 6 steps x (4 layers x 1 group)


def test_cfg_gang_splits_the_decode_and_checks_fp8_against_bf16(tiny_model_dir, tmp_path):
    """Every rank takes part in the split decode, chunk by chunk, and in the bf16 reference run (rank 0 alone
    writes, every chunk)."""
    torchrun_generate(
        tiny_model_dir, tmp_path, "infer.diffusion.parallel_decode=true", "infer.diffusion.precision=fp8",
        "infer.diffusion.precision_check=true",
    )  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["parallel"]["cfg"] == 2 and metrics["parallel_decode"] is True
    assert metrics["runtime"]["precision"] == "fp8" and metrics["precision_check"]["psnr_db_frames"] > 10
    video = read_mp4(tmp_path / "video.mp4")
    assert (video.num_frames, video.height, video.width) == (9, 64, 64)  # 1 + 4 + 4 frames, whole width
