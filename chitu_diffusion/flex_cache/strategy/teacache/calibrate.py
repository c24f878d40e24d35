"""TeaCache calibration: fit the rescale polynomial for one model from its own full-compute denoising runs.

TeaCache (https://arxiv.org/abs/2411.19108) predicts how much the block stack's result changes between steps
from how much its timestep-modulated input changed. The authors fit, per model, a degree-4 polynomial
(numpy.polyfit) from the relative L1 change of the modulated input to that of the output. This module records
both per (branch, step) during full-compute runs, fits the polynomial and stores it as JSON next to the weights
(`<model_dir>/transformer/chitu_teacache.json`), where `TeaCache` finds it and prefers it over published
coefficients. The fitted target is the block stack's residual (last block output - first block input): the
tensor TeaCache caches, so its relative change is the error a reuse makes.

The recorder sits on the same block-stack hook pair as the strategy (stack.py), so both measure the same
tensors with the same relative L1. CLI: `chitu calibrate-teacache` (chitu_diffusion.commands).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers.hooks.hooks import CacheContext, StateManager

from chitu_diffusion.flex_cache.hooks import current_step, detach_hooks
from chitu_diffusion.flex_cache.strategy.teacache.stack import BlockStackState, attach_stack_hooks, relative_l1
from chitu_diffusion.models.adapter import ModelAdapter
from chitu_diffusion.task import DiffusionUserParams

if TYPE_CHECKING:
    from chitu_diffusion.engines.single import Engine

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "chitu_teacache.json"
FORMAT = "chitu-teacache-calibration/1"
DEGREE = 4
DEFAULT_PROMPTS = (
    "A cat walking on grass",
    "Close-up of ocean waves crashing on a rocky shore at sunset",
    "A busy city street at night with neon signs and passing cars",
)
_HOOK = "chitu_teacache_recorder"
#: request settings recorded in the calibration file
_RUN_FIELDS = {"num_inference_steps", "num_frames", "height", "width", "guidance_scale", "seed"}


def calibration_path(model_dir: str | Path) -> Path:
    """Where `calibrate-teacache` writes by default and `TeaCache` looks: next to the transformer's weights."""
    return Path(model_dir) / "transformer" / CALIBRATION_FILE


def find_calibration(transformer: torch.nn.Module) -> Path | None:
    """The calibration stored next to the directory `transformer` was loaded from, if any.

    diffusers records that directory as `config._name_or_path`: the model root when loaded with
    `subfolder="transformer"`, the transformer folder itself otherwise. Models built in memory have none.
    """
    source = getattr(transformer.config, "_name_or_path", None)
    if not source or not Path(source).is_dir():
        return None
    for candidate in (calibration_path(source), Path(source) / CALIBRATION_FILE):
        if candidate.is_file():
            return candidate
    return None


def load_calibration(path: Path, variant: str) -> dict | None:
    """The calibration in `path`, or None (with a warning) when it belongs to another model variant."""
    data = json.loads(Path(path).read_text())
    if data.get("format") != FORMAT or len(data.get("coefficients", ())) != DEGREE + 1:
        raise ValueError(f"{path} is not a {FORMAT} file with {DEGREE + 1} coefficients")
    if data["variant"] != variant:
        logger.warning("ignoring TeaCache calibration %s: fitted for %s, not %s", path, data["variant"], variant)
        return None
    logger.info("TeaCache uses its calibration %s (%d samples)", path, data["samples"])
    return data


@dataclass
class CalibrationSample:
    branch: str
    step: int
    input_change: float  # relative L1 change of the modulated input since the branch's previous call
    output_change: float  # relative L1 change of the block-stack residual since the branch's previous call


class RecorderState(BlockStackState):
    """One branch's history: `residual` is its previous call's residual (fp32), `input_change` this call's."""

    def __init__(self) -> None:
        super().__init__()
        self.input_change: float | None = None


@dataclass
class TeaCacheRecorder:
    """Records (input change, output change) samples from every full-compute transformer call.

    Same loop contract as the strategies: calls run inside `cache_context(branch, step_index=..., ...)`; the
    branches keep separate histories. `reset()` between runs (prompts) so no sample spans two videos. It never
    reuses, so calibration runs are full-compute runs.
    """

    adapter: ModelAdapter
    samples: list[CalibrationSample] = field(default_factory=list)
    state_manager: StateManager = field(default_factory=lambda: StateManager(RecorderState))

    def apply(self, transformer: torch.nn.Module) -> None:
        attach_stack_hooks(self, self.state_manager, transformer, _HOOK)

    def remove(self, transformer: torch.nn.Module) -> None:
        detach_hooks(transformer, _HOOK)
        self.reset()

    def reset(self) -> None:
        """Forget the per-branch history (keep the samples)."""
        self.state_manager.reset()

    def decide(self, state: RecorderState, context: CacheContext, change: float | None) -> bool:
        state.input_change = change
        return False

    def take_residual(
        self, state: RecorderState, context: CacheContext, stack_input: torch.Tensor, stack_output: torch.Tensor
    ) -> None:
        residual = (stack_output - stack_input).float()  # (B, L, C)
        if state.input_change is not None:
            change = relative_l1(residual, state.residual)
            self.samples.append(CalibrationSample(context.name, current_step(context), state.input_change, change))
        state.residual = residual


def fit(samples: list[CalibrationSample], variant: str, degree: int = DEGREE) -> dict:
    """Least-squares polynomial from input change to output change (highest degree first), with its error."""
    if len(samples) <= degree:
        raise ValueError(f"need more than {degree} samples to fit a degree-{degree} polynomial, got {len(samples)}")
    x = np.array([s.input_change for s in samples])
    y = np.array([s.output_change for s in samples])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", np.exceptions.RankWarning)
        coefficients = np.polyfit(x, y, degree)
    if caught:
        logger.warning(
            "the degree-%d fit is poorly conditioned on %d samples with input changes in [%.3g, %.3g]: "
            "calibrate with more prompts or steps",
            degree,
            len(samples),
            x.min(),
            x.max(),
        )
    rmse = float(np.sqrt(np.mean((np.polyval(coefficients, x) - y) ** 2)))
    return {
        "format": FORMAT,
        "variant": variant,
        "coefficients": [float(c) for c in coefficients],
        "fit_rmse": rmse,
        "fit_relative_rmse": rmse / float(np.mean(y)),
        "samples": len(samples),
        "input_change_range": [float(x.min()), float(x.max())],
        "output_change_range": [float(y.min()), float(y.max())],
    }


def write_calibration(calibration: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration, indent=2) + "\n")
    return path


def record_runs(engine: Engine, requests: list[DiffusionUserParams]) -> list[CalibrationSample]:
    """Full-compute generation of each request through `engine`'s own denoising loop (`Engine.sample`, no
    VAE decode), recording TeaCache samples from both CFG branches."""
    recorder = TeaCacheRecorder(engine.adapter)
    recorder.apply(engine.transformer)
    try:
        for params in requests:
            recorder.reset()
            engine.sample(params)
            logger.info("calibration run done: %r (%d samples so far)", params.prompt, len(recorder.samples))
    finally:
        recorder.remove(engine.transformer)
    return recorder.samples


def calibrate(engine: Engine, requests: list[DiffusionUserParams]) -> dict:
    """Record `requests` through `engine` and fit: the calibration, with the settings of its runs."""
    calibration = fit(record_runs(engine, requests), engine.adapter.variant(engine.transformer))
    calibration["runs"] = {
        "prompts": [params.prompt for params in requests],
        "dtype": str(engine.transformer.dtype).removeprefix("torch."),
        **requests[0].model_dump(include=_RUN_FIELDS),
    }
    return calibration
