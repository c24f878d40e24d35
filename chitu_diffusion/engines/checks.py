"""What an engine refuses before any work, without torch: the command line and the worker run these before the
slow imports, downloads and model load; the engines run the same functions per request.

A single process is the layout cfg 1 x ulysses 1 x ring 1 (`ParallelLayout()`), so one request check serves both
engines: what needs more ranks fails on one process by the same arithmetic that admits it on a gang.
"""

from __future__ import annotations

from pathlib import Path

from chitu_diffusion.config import ConfigError, EngineConfig
from chitu_diffusion.flex_cache.registry import strategy_problem
from chitu_diffusion.parallel.degrees import LayoutError, ParallelLayout
from chitu_diffusion.parallel.launch import DistributedEnv
from chitu_diffusion.task import FRAME_STRIDE, SPATIAL_STRIDE, DiffusionUserParams


def check_single_process(config: EngineConfig) -> None:
    """cp_size > 1 needs a gang of processes: reject it in a single one, before any work."""
    cp_size = config.diffusion.cp_size
    if cp_size > 1:
        raise ConfigError(
            f"infer.diffusion.cp_size={cp_size} needs context parallelism across processes: launch under torchrun "
            f"with world size = cfg degree x cp_size (e.g. torchrun --nproc-per-node={2 * cp_size} for cfg 2); "
            "a single process runs cp_size=1"
        )


def check_strategy(strategy: str, cp_size: int, up_limit: int, num_heads: int | None) -> None:
    """Raise `LayoutError` when FlexCache `strategy` cannot run at these degrees (registry.strategy_problem)."""
    problem = strategy_problem(strategy, cp_size, up_limit, num_heads)
    if problem is not None:
        raise LayoutError(problem)


def check_launch(config: EngineConfig, strategy: str, num_heads: int | None = None) -> None:
    """The entry points' early check, before the slow load: this process (alone or in a gang) can run `config`
    with `strategy`. `num_heads`: the model's, when its folder is at hand; None checks the worst case, as the
    GenerationJob contract does at admission."""
    env = DistributedEnv.from_env()
    if env is None or env.world_size == 1:
        check_single_process(config)
    check_strategy(strategy, config.diffusion.cp_size, config.diffusion.up_limit, num_heads)


def transformer_tokens(params: DiffusionUserParams) -> int:
    """Sequence length of one video in Wan2.1's DiT: latent frames x (H/16) x (W/16)."""
    latent_frames = (params.num_frames - 1) // FRAME_STRIDE + 1
    return latent_frames * (params.height // SPATIAL_STRIDE) * (params.width // SPATIAL_STRIDE)


def check_request(params: DiffusionUserParams, layout: ParallelLayout, up_limit: int, num_heads: int) -> None:
    """A request the engine on `layout` can run: both guidance branches for a CFG split, a sequence that shards
    evenly, and a FlexCache strategy whose layout needs are met. Every rank runs it with the same inputs before
    the first collective, so a bad request fails on all ranks alike instead of leaving peers waiting."""
    layout.check_guidance(params.do_classifier_free_guidance)
    layout.check_tokens(transformer_tokens(params))
    check_strategy(params.cache.strategy, layout.cp, up_limit, num_heads)


def check_output_name(name: str) -> None:
    """`name` becomes `<output_dir>/<name>.mp4`: it must not leave the folder or hide the file."""
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"name must be a plain file name stem (no folders, not hidden), got {name!r}")
