"""TeaCache calibration: recording leaves the computation alone, the fit is numpy's, and TeaCache uses the file."""

import json
import logging

import numpy as np
import pytest
import torch
from flexcache_loop import denoise, make_strategy, tiny_transformer

from chitu_cli.main import main as chitu
from chitu_diffusion.flex_cache.strategy.teacache.calibrate import (
    CalibrationSample,
    TeaCacheRecorder,
    calibration_path,
    find_calibration,
    fit,
    write_calibration,
)
from chitu_diffusion.models.adapter import WAN21
from chitu_diffusion.models.loading import load_wan_pipeline
from chitu_diffusion.models.random_init import make_tiny_model

STEPS = 8


@pytest.fixture(scope="module")
def calibrated_model(tmp_path_factory):
    """A tiny model folder of our own (calibrating writes into it) after `chitu calibrate-teacache`."""
    model_dir = make_tiny_model(tmp_path_factory.mktemp("calibrated") / "tiny-wan")
    argv = ["--model", str(model_dir), "--steps", str(STEPS), "--frames", "9", "--height", "64", "--width", "64"]
    argv += ["--prompt", "A cat walking on grass", "--prompt", "A dog on a beach"]
    assert chitu(["calibrate-teacache", *argv]) == 0
    return model_dir


def test_recording_leaves_the_output_identical_and_samples_each_branch():
    transformer = tiny_transformer()
    reference = denoise(transformer, STEPS)
    recorder = TeaCacheRecorder(WAN21)
    recorder.apply(transformer)
    recorded = denoise(transformer, STEPS)
    recorder.remove(transformer)
    assert torch.equal(recorded, reference)
    for branch in ("cond", "uncond"):  # one sample per step after each branch's first
        assert [s.step for s in recorder.samples if s.branch == branch] == list(range(1, STEPS))
    assert all(s.input_change > 0 and s.output_change > 0 for s in recorder.samples)


def test_calibration_measures_what_teacache_decides_on():
    """One hook pair, one relative L1: attached together, TeaCache decides every (branch, step) on the very input
    change the recorder stores for its fit."""
    transformer = tiny_transformer()
    strategy = make_strategy("teacache", 0.5, transformer=transformer)
    seen = {}

    def decide(state, context, change):
        seen[context.name, context.step_index] = change
        return type(strategy).decide(strategy, state, context, change)

    strategy.decide = decide
    recorder = TeaCacheRecorder(WAN21)
    strategy.apply(transformer)
    recorder.apply(transformer)
    try:
        denoise(transformer, STEPS)
        reused = strategy.log.summary()["units_reused"]  # read before `remove` resets the log
    finally:
        recorder.remove(transformer)
        strategy.remove(transformer)
    assert reused > 0  # the strategy acted while the recorder measured
    recorded = {(s.branch, s.step): s.input_change for s in recorder.samples}
    assert len(recorded) == 2 * (STEPS - 1)
    assert {key: change for key, change in seen.items() if change is not None} == recorded


def test_fit_recovers_a_known_degree_4_polynomial():
    truth = [30.0, -20.0, 4.0, 0.5, 0.01]
    x = np.linspace(0.01, 0.5, 40)
    samples = [CalibrationSample("cond", i, float(v), float(np.polyval(truth, v))) for i, v in enumerate(x)]
    result = fit(samples, "wan2.1-custom")
    np.testing.assert_allclose(result["coefficients"], truth, rtol=1e-6, atol=1e-8)
    assert result["fit_rmse"] < 1e-9 and result["samples"] == 40
    with pytest.raises(ValueError, match="need more than 4 samples"):
        fit(samples[:4], "wan2.1-custom")


def test_cli_writes_the_calibration_next_to_the_model(calibrated_model):
    data = json.loads(calibration_path(calibrated_model).read_text())
    assert data["variant"] == "wan2.1-custom"
    assert len(data["coefficients"]) == 5 and np.isfinite(data["fit_rmse"])
    assert data["samples"] == 2 * 2 * (STEPS - 1)  # prompts x branches x (steps - 1)
    assert data["runs"]["num_inference_steps"] == STEPS
    assert data["runs"]["prompts"] == ["A cat walking on grass", "A dog on a beach"]


def test_teacache_uses_the_calibration_of_the_loaded_model(calibrated_model):
    pipe = load_wan_pipeline(calibrated_model, torch.float32, "cpu")
    assert find_calibration(pipe.transformer) == calibration_path(calibrated_model)
    strategy = make_strategy("teacache", 0.5, transformer=pipe.transformer)
    strategy.apply(pipe.transformer)
    strategy.remove(pipe.transformer)
    data = json.loads(calibration_path(calibrated_model).read_text())
    assert list(strategy.config.coefficients) == data["coefficients"]
    assert strategy.config.source.startswith("calibration") and not strategy.config.relative
    assert strategy.describe_ratio()["coefficients"] == data["coefficients"]


def test_a_calibration_of_another_variant_is_ignored(tmp_path, caplog):
    model_dir = make_tiny_model(tmp_path / "tiny-wan")
    samples = [CalibrationSample("cond", i, 0.1 * i, 0.05 * i) for i in range(1, 8)]
    write_calibration(fit(samples, "wan2.1-1.3b"), calibration_path(model_dir))
    pipe = load_wan_pipeline(model_dir, torch.float32, "cpu")
    strategy = make_strategy("teacache", 0.5, transformer=pipe.transformer)
    with caplog.at_level(logging.WARNING):
        strategy.apply(pipe.transformer)
    strategy.remove(pipe.transformer)
    assert strategy.config.source.startswith("fallback")
    assert "fitted for wan2.1-1.3b" in caplog.text


def test_output_option_writes_elsewhere(tmp_path):
    model_dir = make_tiny_model(tmp_path / "tiny-wan")
    output = tmp_path / "carry" / "teacache.json"
    argv = ["--model", str(model_dir), "--steps", "4", "--frames", "5", "--height", "32", "--width", "32"]
    assert chitu(["calibrate-teacache", *argv, "--prompt", "x", "--output", str(output)]) == 0
    assert json.loads(output.read_text())["samples"] == 2 * 3
    assert not calibration_path(model_dir).exists()


def test_bad_input_is_a_usage_error(tmp_path, capsys):
    assert chitu(["calibrate-teacache", "--model", str(tmp_path / "missing"), "--steps", "4"]) == 2
    assert "chitu calibrate-teacache: error: --model:" in capsys.readouterr().err
    assert chitu(["calibrate-teacache", "--model", str(tmp_path), "--frames", "8"]) == 2
    assert "--frames (num_frames): num_frames must be 4k+1" in capsys.readouterr().err
