"""Engine assembly above the parallel primitives, and the one way to get an engine: `load_engine`.

- single.py: `Engine`, one process running the whole video.
- gang.py: `ParallelEngine`, one rank of a torchrun gang; per request its transformer is wrapped by
- parallelize.py: CFG split -> context parallelism -> FlexCache -> compile, in that order.
- checks.py: what the entry points refuse before the slow load, and the engines per request (no torch).

The command line (`chitu generate`), the worker's ranks and the Python API (`Engine.load`, `generate`) all call
`load_engine`. Importing this package imports no torch (`load_engine` imports the engines), so an entry point
runs `check_launch` first and a bad request fails at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chitu_diffusion.config import EngineConfig
from chitu_diffusion.engines.checks import check_launch
from chitu_diffusion.parallel.launch import DistributedEnv
from chitu_diffusion.task import DiffusionUserParams

if TYPE_CHECKING:
    from chitu_diffusion.engines.single import Engine, GenerationResult

__all__ = ["check_launch", "generate", "load_engine"]


def load_engine(model_dir: str | Path, config: EngineConfig | None = None) -> Engine:
    """A `ParallelEngine` when launched as a gang of >= 2 ranks (torchrun, the worker's launcher), else an `Engine`.

    The launch environment is read here and nowhere below (`DistributedEnv` is its one reader)."""
    from chitu_diffusion.engines.gang import ParallelEngine
    from chitu_diffusion.engines.single import Engine

    config = config or EngineConfig()
    env = DistributedEnv.from_env()
    if env is None or env.world_size == 1:
        return Engine.load_on_device(model_dir, config)
    return ParallelEngine.launch(model_dir, config, env)


def generate(
    model_dir: str | Path,
    params: DiffusionUserParams | Mapping[str, Any],
    output_dir: str | Path,
    name: str = "video",
    engine_config: EngineConfig | Iterable[str] | Mapping[str, Any] | None = None,
) -> GenerationResult | None:
    """Load `model_dir` and generate one video (for many prompts, load an engine once instead)."""
    if not isinstance(engine_config, EngineConfig):
        engine_config = EngineConfig.from_overrides(engine_config or ())
    return load_engine(model_dir, engine_config).generate(params, output_dir, name)
