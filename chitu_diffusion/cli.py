"""The `chitu` command line.

    chitu generate --model DIR --prompt TEXT --output DIR [flags] [infer.diffusion.key=value ...]
    chitu make-tiny-model DIR [--seed N]
    chitu make-random-model DIR --arch wan2.1-t2v-1.3b [--text-encoder tiny|umt5-xxl] [--seed N]
    chitu dev-cluster ...          (chitu_devcluster.cli)
    chitu calibrate-teacache ...   (chitu_diffusion.flex_cache.calibrate)

Bad input (a flag value, an override, an unsupported combination) prints one line per problem naming the flag
or key, and exits 2 without a traceback. Subcommands owned by other packages are listed in `EXTERNAL_COMMANDS`
and imported only when run, so `chitu --help` stays fast and one package's absence breaks no other command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

logger = logging.getLogger("chitu")

USAGE_ERROR = 2
StepCallback = Callable[[int, int], None]  # as chitu_diffusion.pipeline's, without importing torch here


@dataclass(frozen=True)
class ExternalCommand:
    module: str
    function: str  # called with the remaining argv, returns an exit code
    help: str


EXTERNAL_COMMANDS = {
    "dev-cluster": ExternalCommand("chitu_devcluster.cli", "main", "run the hermetic Kubernetes dev cluster"),
    "calibrate-teacache": ExternalCommand(
        "chitu_diffusion.flex_cache.calibrate", "main", "fit TeaCache rescale coefficients for a model"
    ),
}


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
    Flag("--seed", "seed", int, "noise seed (default: random, recorded in metrics.json)"),
    Flag("--fps", "fps", int, "frames per second of the mp4 (default 16)"),
    Flag("--flexcache", "flexcache_params.strategy", str, "FlexCache strategy: none, teacache, pab, ditango"),
    Flag("--cache-ratio", "flexcache_params.cache_ratio", float, "0 = quality first .. 1 = speed first (0.5)"),
    Flag("--warmup", "flexcache_params.warmup", int, "first N steps always computed (default 1)"),
    Flag("--cooldown", "flexcache_params.cooldown", int, "last N steps always computed (default 1)"),
)
_FLAG_BY_FIELD = {f.field: f.flag for f in GENERATE_FLAGS}


class UsageError(Exception):
    """Bad command-line input: printed line by line, exit code 2."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("; ".join(lines))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chitu", description="Chitu: Wan2.1 text-to-video generation")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="generate one video on this machine")
    generate.add_argument("--model", required=True, help="diffusers-format Wan2.1 T2V folder")
    generate.add_argument("--output", required=True, help="folder for <name>.mp4 and metrics.json")
    generate.add_argument("--name", default="video", help="video file name without .mp4 (default video)")
    for f in GENERATE_FLAGS:
        metavar = f.flag.removeprefix("--").replace("-", "_").upper()
        required = f.flag == "--prompt"
        generate.add_argument(f.flag, dest=f.field, type=f.type, metavar=metavar, required=required, help=f.help)
    generate.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="engine config, e.g. infer.diffusion.dtype=float32"
    )
    generate.set_defaults(run=_run_generate)

    tiny = commands.add_parser("make-tiny-model", help="write a tiny random Wan2.1 model folder (tests, demo)")
    tiny.add_argument("directory")
    tiny.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    tiny.set_defaults(run=_run_make_tiny_model)

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
    random_model.set_defaults(run=_run_make_random_model)

    for name, command in EXTERNAL_COMMANDS.items():
        commands.add_parser(name, help=command.help, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXTERNAL_COMMANDS:
        return _run_external(argv[0], argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as err:
        for line in err.lines:
            print(f"chitu {args.command}: error: {line}", file=sys.stderr)
        return USAGE_ERROR


def _run_external(name: str, argv: list[str]) -> int:
    command = EXTERNAL_COMMANDS[name]
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as err:
        if err.name is None or not (command.module == err.name or command.module.startswith(f"{err.name}.")):
            raise  # the package exists but one of its own imports failed: show the real error
        print(f"chitu {name}: error: needs {command.module}, which is not installed", file=sys.stderr)
        return 1
    return getattr(module, command.function)(argv) or 0


def _generate_request(args: argparse.Namespace) -> dict:
    """The flags the user gave, as a nested DiffusionUserParams dict (absent flags keep the model's defaults)."""
    request: dict = {}
    for f in GENERATE_FLAGS:
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


def _run_generate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from chitu_diffusion.config import ConfigError, EngineConfig
    from chitu_diffusion.engine import check_output_name
    from chitu_diffusion.flex_cache.registry import get_strategy
    from chitu_diffusion.models.loading import ModelFolderError
    from chitu_diffusion.parallel.engine import check_launch, load_engine
    from chitu_diffusion.parallel.launch import leave_gang
    from chitu_diffusion.task import DiffusionUserParams

    try:
        params = DiffusionUserParams.model_validate(_generate_request(args))
    except ValidationError as err:
        raise UsageError(_validation_lines(err)) from None
    try:
        check_output_name(args.name)
    except ValueError as err:
        raise UsageError([f"--name: {err}"]) from None
    try:
        config = EngineConfig.from_overrides(args.overrides)
        check_launch(config, get_strategy(params.cache.strategy))  # before the (slow) model load
        _quiet_library_progress_bars()
        engine = load_engine(args.model, config)  # a ParallelEngine under torchrun
        with _progress(params.num_inference_steps) as on_step:
            result = engine.generate(params, args.output, args.name, on_step=on_step)
        leave_gang()
    except ConfigError as err:
        raise UsageError(err.errors) from None
    except ModelFolderError as err:
        raise UsageError([f"--model: {err}"]) from None
    if result is None:
        return 0  # a rank other than 0 of a gang: rank 0 writes the outputs
    print(f"video: {result.video_path}\nmetrics: {result.metrics_path}")
    print(f"total: {result.metrics['timings_s']['total']:.2f} s")
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
    from chitu_diffusion.models.tiny import make_tiny_model

    _quiet_library_progress_bars()
    print(make_tiny_model(args.directory, seed=args.seed))
    return 0


def _run_make_random_model(args: argparse.Namespace) -> int:
    from chitu_diffusion.models.tiny import make_random_model

    _quiet_library_progress_bars()
    print(make_random_model(args.directory, args.arch, text_encoder=args.text_encoder, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
