"""TeaCache calibration: fit the rescale polynomial for one model from its own full-compute denoising runs.

TeaCache (https://arxiv.org/abs/2411.19108) predicts how much the block stack's result changes between steps
from how much its timestep-modulated input changed. The authors fit, per model, a degree-4 polynomial
(numpy.polyfit) from the relative L1 change of the modulated input to that of the output. This module records
both per (branch, step) during full-compute runs, fits the polynomial and stores it as JSON next to the weights
(`<model_dir>/transformer/chitu_teacache.json`), where `TeaCache` finds it and prefers it over published
coefficients. The fitted target is the block stack's residual (last block output - first block input): the
tensor TeaCache caches, so its relative change is the error a reuse makes.

CLI: `chitu calibrate-teacache --model DIR [--prompt P ...] [--steps N] [--frames F --height H --width W]
[--output FILE]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers.hooks.hooks import BaseState, StateManager

from chitu_diffusion.flex_cache.hooks import (
    StatefulHook,
    attach_hook,
    current_step,
    detach_hooks,
    forward_argument,
    refresh_registries,
)
from chitu_diffusion.models.adapter import ModelAdapter
from chitu_diffusion.task import DiffusionUserParams

if TYPE_CHECKING:
    from chitu_diffusion.engine import Engine

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
USAGE_ERROR = 2
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


def _relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    return ((current - previous).abs().mean() / previous.abs().mean()).item()


class _RecorderState(BaseState):
    def __init__(self) -> None:
        self.previous_modulation: torch.Tensor | None = None  # (B, 6, C) fp32
        self.previous_residual: torch.Tensor | None = None  # (B, L, C) fp32
        self.modulation: torch.Tensor | None = None  # (B, 6, C) this call's, until the tail hook runs
        self.stack_input: torch.Tensor | None = None  # (B, L, C)

    def reset(self) -> None:
        self.__init__()


class _RecordHook(StatefulHook):
    """Head: remember the modulation and the stack input. Tail: measure both relative changes. Never alters
    the computation, so calibration runs are full-compute runs."""

    def __init__(self, recorder: TeaCacheRecorder, is_head: bool, is_tail: bool) -> None:
        super().__init__(recorder.state_manager)
        self.recorder = recorder
        self.is_head = is_head
        self.is_tail = is_tail

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        adapter = self.recorder.adapter
        state: _RecorderState = self.state_manager.get_state()
        if self.is_head:
            state.modulation = forward_argument(module, adapter.modulation_arg, args, kwargs).float()  # (B, 6, C)
            state.stack_input = forward_argument(module, adapter.hidden_states_arg, args, kwargs)  # (B, L, C)
        output = self.fn_ref.original_forward(*args, **kwargs)  # (B, L, C)
        if self.is_tail:
            residual = (output - state.stack_input).float()  # (B, L, C)
            if state.previous_modulation is not None:
                context = self.state_manager.context
                self.recorder.samples.append(
                    CalibrationSample(
                        context.name,
                        current_step(context),
                        _relative_l1(state.modulation, state.previous_modulation),
                        _relative_l1(residual, state.previous_residual),
                    )
                )
            state.previous_modulation, state.previous_residual = state.modulation, residual
            state.modulation = state.stack_input = None
        return output


@dataclass
class TeaCacheRecorder:
    """Hooks that record (input change, output change) samples from every full-compute transformer call.

    Same loop contract as the strategies: calls run inside `cache_context(branch, step_index=..., ...)`; the
    branches keep separate histories. `reset()` between runs (prompts) so no sample spans two videos.
    """

    adapter: ModelAdapter
    samples: list[CalibrationSample] = field(default_factory=list)
    state_manager: StateManager = field(default_factory=lambda: StateManager(_RecorderState))

    def apply(self, transformer: torch.nn.Module) -> None:
        blocks = self.adapter.blocks(transformer)
        for index, block in enumerate(blocks):
            attach_hook(block, _RecordHook(self, index == 0, index == len(blocks) - 1), _HOOK)
        refresh_registries(transformer)

    def remove(self, transformer: torch.nn.Module) -> None:
        detach_hooks(transformer, _HOOK)
        self.reset()

    def reset(self) -> None:
        """Forget the per-branch history (keep the samples)."""
        self.state_manager.reset()


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
            degree, len(samples), x.min(), x.max(),
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


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chitu calibrate-teacache",
        description="Fit TeaCache's rescale polynomial for a model from full-compute runs and store it next to it.",
    )
    parser.add_argument("--model", required=True, type=Path, help="model folder (diffusers Wan2.1 T2V layout)")
    parser.add_argument("--prompt", action="append", help="a calibration prompt (repeatable; default: 3 built-in)")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps per run (default 50)")
    parser.add_argument("--frames", type=int, default=81, help="frames, 4k+1 (default 81)")
    parser.add_argument("--height", type=int, default=480, help="multiple of 16 (default 480)")
    parser.add_argument("--width", type=int, default=832, help="multiple of 16 (default 832)")
    parser.add_argument("--guidance-scale", type=float, default=5.0, help="CFG scale (default 5.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help=f"file to write (default <model>/transformer/{CALIBRATION_FILE})")
    parser.add_argument("overrides", nargs="*", help="engine settings, e.g. infer.diffusion.dtype=bfloat16")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """`chitu calibrate-teacache`: run, fit, write. Bad input prints one line per problem and exits 2."""
    # The engine pulls in WanPipeline and transformers; TeaCache imports this module only to read calibrations.
    from pydantic import ValidationError

    from chitu_diffusion.config import ConfigError, EngineConfig
    from chitu_diffusion.engine import Engine
    from chitu_diffusion.models.loading import ModelFolderError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parse(argv)
    prompts = args.prompt or list(DEFAULT_PROMPTS)
    try:
        requests = [
            DiffusionUserParams(
                prompt=prompt,
                num_inference_steps=args.steps,
                num_frames=args.frames,
                height=args.height,
                width=args.width,
                guidance_scale=args.guidance_scale,
                seed=args.seed,
            )
            for prompt in prompts
        ]
        engine = Engine.load(args.model, EngineConfig.from_overrides(args.overrides))
    except ValidationError as err:
        return _usage_error([f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()])
    except ConfigError as err:
        return _usage_error(err.errors)
    except ModelFolderError as err:
        return _usage_error([f"--model: {err}"])
    samples = record_runs(engine, requests)
    calibration = fit(samples, engine.adapter.variant(engine.transformer))
    calibration["runs"] = {
        "prompts": prompts,
        "dtype": str(engine.transformer.dtype).removeprefix("torch."),
        **requests[0].model_dump(include=_RUN_FIELDS),
    }
    path = write_calibration(calibration, args.output or calibration_path(args.model))
    fit_summary = f"{calibration['samples']} samples, rmse {calibration['fit_rmse']:.3g}"
    print(f"wrote {path}: {calibration['variant']}, {fit_summary}")
    return 0


def _usage_error(lines: list[str]) -> int:
    for line in lines:
        print(f"chitu calibrate-teacache: error: {line}", file=sys.stderr)
    return USAGE_ERROR
