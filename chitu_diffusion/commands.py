"""The engine's commands, a group of the `chitu` console script (chitu_cli.main; `python -m chitu_cli` too).

    chitu generate --model DIR --prompt TEXT --output DIR [flags] [infer.diffusion.key=value ...]
    chitu make-tiny-model DIR [--seed N]
    chitu make-random-model DIR --arch wan2.1-t2v-1.3b [--text-encoder tiny|umt5-xxl] [--seed N]
    chitu calibrate-teacache --model DIR [--prompt P ...] [--steps N] [--frames F --height H --width W] [--output FILE]

Bad input (a flag value, an override, an unsupported combination) prints one line per problem naming the flag
or key, and exits 2 without a traceback. Only light modules are imported at module level (the standard library, the
strategy names) and a request is validated (pydantic, no torch) before the engine is imported, so `chitu --help`
and a typo answer at once.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from chitu_diffusion.flex_cache.registry import strategy_names  # folder names: no torch, no pydantic

logger = logging.getLogger("chitu")

USAGE_ERROR = 2
StepCallback = Callable[[int, int], None]  # as chitu_diffusion.pipeline's, without importing torch here


@dataclass(frozen=True)
class Flag:
    flag: str
    field: str  # dotted path in DiffusionUserParams
    type: type
    help: str


# One table drives both the parser and the error messages, so an error names the flag the user typed.
GENERATE_FLAGS = (
    Flag("--prompt", "prompt", str, "text describing the video"),
    Flag("--negative-prompt", "negative_prompt", str, "what to steer away from (default empty)"),
    Flag("--steps", "num_inference_steps", int, "denoising steps (default 50)"),
    Flag("--guidance-scale", "guidance_scale", float, "classifier-free guidance; <= 1 disables it (default 5.0)"),
    Flag("--height", "height", int, "pixels, a multiple of 16 (default 480)"),
    Flag("--width", "width", int, "pixels, a multiple of 16 (default 832)"),
    Flag("--frames", "num_frames", int, "4k+1 frames (default 81)"),
    Flag("--seed", "seed", int, "noise seed (generate: random unless given, recorded in metrics.json; calibrate: 0)"),
    Flag("--fps", "fps", int, "frames per second of the mp4 (default 16)"),
    Flag("--flexcache", "flexcache_params.strategy", str, "FlexCache strategy: {strategies} (default none)"),
    Flag("--cache-ratio", "flexcache_params.cache_ratio", float, "0 = quality first .. 1 = speed first (0.5)"),
    Flag("--warmup", "flexcache_params.warmup", int, "first N steps always computed (default 1)"),
    Flag("--cooldown", "flexcache_params.cooldown", int, "last N steps always computed (default 1)"),
)
_FLAG_BY_FIELD = {f.field: f.flag for f in GENERATE_FLAGS}
#: calibration runs are full-compute runs of these request settings, one per --prompt
CALIBRATE_FLAGS = tuple(
    f
    for f in GENERATE_FLAGS
    if f.field in ("num_inference_steps", "guidance_scale", "height", "width", "num_frames", "seed")
)


class UsageError(Exception):
    """Bad command-line input: printed line by line, exit code 2."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("; ".join(lines))


def register(commands: argparse._SubParsersAction) -> None:
    """Add the engine's commands to the `chitu` parser's subcommands (each sets `func`)."""
    strategies = ", ".join(strategy_names())

    generate = commands.add_parser("generate", help="generate one video on this machine (a gang under torchrun)")
    generate.add_argument("--model", required=True, help="diffusers-format Wan2.1 T2V folder")
    generate.add_argument("--output", required=True, help="folder for <name>.mp4 and metrics.json")
    generate.add_argument("--name", default="video", help="video file name without .mp4 (default video)")
    for f in GENERATE_FLAGS:
        metavar = f.flag.removeprefix("--").replace("-", "_").upper()
        required = f.flag == "--prompt"
        help_text = f.help.format(strategies=strategies)
        generate.add_argument(f.flag, dest=f.field, type=f.type, metavar=metavar, required=required, help=help_text)
    _add_overrides(generate)
    generate.set_defaults(func=_run_generate)

    tiny = commands.add_parser("make-tiny-model", help="write a tiny random Wan2.1 model folder (tests, demo)")
    tiny.add_argument("directory")
    tiny.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    tiny.set_defaults(func=_run_make_tiny_model)

    random_model = commands.add_parser("make-random-model", help="write a Wan2.1 architecture with random weights")
    random_model.add_argument("directory")
    random_model.add_argument("--arch", required=True, choices=("tiny", "wan2.1-t2v-1.3b"))
    random_model.add_argument(
        "--text-encoder",
        choices=("tiny", "umt5-xxl"),
        default="tiny",
        help="tiny: a 2-layer UMT5 with the arch's text width, benchmark-only (default); umt5-xxl: full size",
    )
    random_model.add_argument("--seed", type=int, default=0)
    random_model.set_defaults(func=_run_make_random_model)

    calibrate = commands.add_parser(
        "calibrate-teacache",
        help="fit TeaCache rescale coefficients for a model",
        description="Fit TeaCache's rescale polynomial for a model from full-compute runs and store it next to it.",
    )
    calibrate.add_argument("--model", required=True, help="diffusers-format Wan2.1 T2V folder")
    calibrate.add_argument("--prompt", action="append", help="a calibration prompt (repeatable; default: 3 built-in)")
    for f in CALIBRATE_FLAGS:
        calibrate.add_argument(f.flag, dest=f.field, type=f.type, help=f.help)
    calibrate.set_defaults(seed=0)
    calibrate.add_argument("--output", help="file to write (default <model>/transformer/chitu_teacache.json)")
    _add_overrides(calibrate)
    calibrate.set_defaults(func=_run_calibrate_teacache)


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="engine config, e.g. infer.diffusion.dtype=float32"
    )


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed engine command; a usage error prints one line per problem and returns 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except UsageError as err:
        for line in err.lines:
            print(f"chitu {args.command}: error: {line}", file=sys.stderr)
        return USAGE_ERROR


def _request(args: argparse.Namespace, flags: Sequence[Flag] = GENERATE_FLAGS) -> dict:
    """The flags the user gave, as a nested DiffusionUserParams dict (absent flags keep the model's defaults)."""
    request: dict = {}
    for f in flags:
        value = getattr(args, f.field)
        if value is None:
            continue
        *parents, leaf = f.field.split(".")
        node = request
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return request


def _validation_lines(err) -> list[str]:
    """One line per pydantic error, naming the CLI flag (and field) it came from."""
    lines = []
    for e in err.errors():
        message = re.sub(r"^Value error, ", "", e["msg"])
        field = ".".join(str(p) for p in e["loc"])
        if field in _FLAG_BY_FIELD:
            lines.append(f"{_FLAG_BY_FIELD[field]} ({field}): {message}")
        else:  # a check across fields: name every flag its message mentions
            flags = [flag for name, flag in _FLAG_BY_FIELD.items() if re.search(rf"\b{re.escape(name)}\b", message)]
            lines.append(f"{message}" + (f" [{', '.join(flags)}]" if flags else ""))
    return lines


def _validated(request: dict):
    """`request` as DiffusionUserParams, or a UsageError naming the flags (pydantic only: no torch yet)."""
    from pydantic import ValidationError

    from chitu_diffusion.task import DiffusionUserParams

    try:
        return DiffusionUserParams.model_validate(request)
    except ValidationError as err:
        raise UsageError(_validation_lines(err)) from None


@contextmanager
def _engine_errors() -> Iterator[None]:
    """Configuration and model-folder problems as usage errors naming the key or `--model`."""
    from chitu_diffusion.config import ConfigError
    from chitu_diffusion.models.folder import ModelFolderError

    try:
        yield
    except ConfigError as err:
        raise UsageError(err.errors) from None
    except ModelFolderError as err:
        raise UsageError([f"--model: {err}"]) from None


def _run_generate(args: argparse.Namespace) -> int:
    params = _validated(_request(args))  # first: a typo is answered before anything else is imported

    from chitu_diffusion.config import EngineConfig
    from chitu_diffusion.engines import check_launch, load_engine
    from chitu_diffusion.engines.checks import check_output_name
    from chitu_diffusion.models.folder import num_attention_heads
    from chitu_diffusion.parallel.launch import leave_gang

    try:
        check_output_name(args.name)
    except ValueError as err:
        raise UsageError([f"--name: {err}"]) from None
    with _engine_errors():
        config = EngineConfig.from_overrides(args.overrides)
        check_launch(config, params.cache.strategy, num_attention_heads(args.model))  # before torch and the load
        _quiet_library_progress_bars()
        engine = load_engine(args.model, config)  # a ParallelEngine under torchrun
        with _progress(params.num_inference_steps) as on_step:
            result = engine.generate(params, args.output, args.name, on_step=on_step)
        leave_gang()
    if result is None:
        return 0  # a rank other than 0 of a gang: rank 0 writes the outputs
    print(f"video: {result.video_path}\nmetrics: {result.metrics_path}")
    print(f"total: {result.metrics['timings_s']['total']:.2f} s")
    return 0


def _run_calibrate_teacache(args: argparse.Namespace) -> int:
    from chitu_diffusion.config import EngineConfig
    from chitu_diffusion.engines import load_engine
    from chitu_diffusion.engines.checks import check_single_process
    from chitu_diffusion.flex_cache.strategy.teacache.calibrate import (
        DEFAULT_PROMPTS,
        calibrate,
        calibration_path,
        write_calibration,
    )
    from chitu_diffusion.models.folder import check_model_folder
    from chitu_diffusion.parallel.launch import DistributedEnv

    prompts = args.prompt or list(DEFAULT_PROMPTS)
    requests = [_validated({**_request(args, CALIBRATE_FLAGS), "prompt": prompt}) for prompt in prompts]
    env = DistributedEnv.from_env()
    if env is not None and env.world_size > 1:  # a rank sees one branch or one shard, not the whole stack
        raise UsageError(["calibrate-teacache fits on one process: run it without torchrun"])
    with _engine_errors():
        config = EngineConfig.from_overrides(args.overrides)
        check_single_process(config)
        check_model_folder(args.model)  # before torch and the load
        _quiet_library_progress_bars()
        engine = load_engine(args.model, config)
    calibration = calibrate(engine, requests)
    path = write_calibration(calibration, Path(args.output) if args.output else calibration_path(args.model))
    fit_summary = f"{calibration['samples']} samples, rmse {calibration['fit_rmse']:.3g}"
    print(f"wrote {path}: {calibration['variant']}, {fit_summary}")
    return 0


def _quiet_library_progress_bars() -> None:
    """diffusers/transformers draw tqdm bars while loading; ours is the only progress the user should see."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _progress(total: int):
    """A context giving an `on_step(done, total)` callback: a rich bar on a terminal, log lines otherwise."""
    return _rich_progress(total) if sys.stderr.isatty() else _log_progress()


@contextmanager
def _rich_progress(total: int) -> Iterator[StepCallback]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    columns = ("denoising", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("denoise", total=total)
        yield lambda done, _total: progress.update(task, completed=done)


@contextmanager
def _log_progress() -> Iterator[StepCallback]:
    yield lambda done, total: logger.info("denoising step %d/%d", done, total)


def _run_make_tiny_model(args: argparse.Namespace) -> int:
    from chitu_diffusion.models.random_init import make_tiny_model

    _quiet_library_progress_bars()
    print(make_tiny_model(args.directory, seed=args.seed))
    return 0


def _run_make_random_model(args: argparse.Namespace) -> int:
    from chitu_diffusion.models.random_init import make_random_model

    _quiet_library_progress_bars()
    print(make_random_model(args.directory, args.arch, text_encoder=args.text_encoder, seed=args.seed))
    return 0
