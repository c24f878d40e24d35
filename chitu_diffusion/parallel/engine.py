"""The engine on one rank of a gang launched by torchrun: the single-device `Engine` with parallel denoising.

Loading, text encoding, noise and decoding are the single-device engine's; per request `sample` wraps the
transformer with `parallelize` (CFG split -> context parallelism -> FlexCache with a gang-wide reducer -> compile)
and removes it afterwards. Every rank denoises; after the last step all ranks hold the same latents and only rank
0 decodes and writes the video, metrics and policy pictures (`generate` returns None elsewhere).

Every check that can fail runs on every rank before the first collective, with the same inputs, so a bad request
fails on all ranks alike instead of leaving peers waiting in a collective.

`load_engine` is the entry points' one call: it reads the launch environment (the only place besides
`launch.DistributedEnv`) and returns a `ParallelEngine` in a gang of two or more ranks, the `Engine` otherwise.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from diffusers import WanPipeline

from chitu_diffusion.config import EngineConfig
from chitu_diffusion.engine import (
    Engine,
    GenerationResult,
    Sample,
    check_output_name,
    check_single_process,
)
from chitu_diffusion.flex_cache.base import FlexCacheStrategy
from chitu_diffusion.flex_cache.registry import get_strategy
from chitu_diffusion.models.loading import check_model_folder, load_wan_pipeline
from chitu_diffusion.parallel.groups import ParallelGroups, build_groups
from chitu_diffusion.parallel.launch import DistributedEnv, init_distributed
from chitu_diffusion.parallel.layout import LayoutError, ParallelLayout
from chitu_diffusion.parallel.parallelize import parallelized
from chitu_diffusion.pipeline import Guide, PredictNoise, StepCallback
from chitu_diffusion.task import FRAME_STRIDE, SPATIAL_STRIDE, DiffusionUserParams

logger = logging.getLogger(__name__)


def transformer_tokens(params: DiffusionUserParams) -> int:
    """Sequence length of one video in Wan2.1's DiT: latent frames x (H/16) x (W/16)."""
    latent_frames = (params.num_frames - 1) // FRAME_STRIDE + 1
    return latent_frames * (params.height // SPATIAL_STRIDE) * (params.width // SPATIAL_STRIDE)


class ParallelEngine(Engine):
    """One rank's engine; build it with `ParallelEngine.launch` (or `load_engine`) on every rank."""

    def __init__(
        self, pipe: WanPipeline, config: EngineConfig, groups: ParallelGroups, *, model_dir: str | Path | None = None
    ):
        self.groups = groups
        super().__init__(pipe, config, model_dir=model_dir)

    @classmethod
    def launch(cls, model_dir: str | Path, config: EngineConfig, env: DistributedEnv) -> ParallelEngine:
        """Join the gang, validate the layout against the model (before loading weights), load, build groups."""
        settings = config.diffusion
        transformer_config = check_model_folder(model_dir) / "transformer" / "config.json"
        heads = json.loads(transformer_config.read_text())["num_attention_heads"]
        layout = ParallelLayout.resolve(env.world_size, settings.cp_size, settings.up_limit, heads)
        device = init_distributed(env, settings.resolved_device(torch.cuda.is_available()))
        dtype = getattr(torch, settings.resolved_dtype(device.type))
        start = time.perf_counter()
        pipe = load_wan_pipeline(model_dir, dtype, str(device))
        groups = build_groups(layout, device)
        engine = cls(pipe, config, groups, model_dir=model_dir)
        engine.load_s = time.perf_counter() - start
        logger.info("rank %d: model loaded in %.1f s, layout %s", env.rank, engine.load_s, layout.describe())
        return engine

    @classmethod
    def check_config(cls, config: EngineConfig, strategy: type[FlexCacheStrategy] | None = None) -> None:
        """cp_size > 1 is what this engine is for; the layout itself was validated by `launch`."""

    def _configure_transformer(self) -> None:
        """The single-device configuration minus compile, which `parallelize` applies last."""
        config, self.config = self.config, self.config.with_overrides({"infer.diffusion.compile": False})
        try:
            super()._configure_transformer()
        finally:
            self.config = config

    def _check_request(self, params: DiffusionUserParams) -> None:
        layout = self.groups.layout
        layout.check_guidance(params.do_classifier_free_guidance)
        layout.check_tokens(transformer_tokens(params))
        strategy = get_strategy(params.cache.strategy)
        if strategy.requires_context_parallel and layout.ring < 2:
            raise LayoutError(
                f"{strategy.name} works on ring attention, but this gang has ulysses {layout.ulysses} x ring "
                f"{layout.ring}: set infer.diffusion.up_limit so that cp_size / ulysses >= 2 (up_limit=1: all ring)"
            )

    def _seed(self, params: DiffusionUserParams) -> int:
        """The request's seed, or rank 0's random draw sent to every rank (all ranks must start from one noise)."""
        if params.seed is not None:
            return params.seed
        seed = [secrets.randbits(32)]
        dist.broadcast_object_list(seed, src=0, group=self.groups.world)
        return seed[0]

    @contextmanager
    def _denoiser(
        self, params: DiffusionUserParams, predict_noise: PredictNoise
    ) -> Iterator[tuple[Guide, FlexCacheStrategy]]:
        """The gang's layout (CFG split, context parallelism, cache, compile) for one request; every rank ends
        the loop with the same latents."""
        settings = self.config.diffusion
        options = dict(cache=params.cache, backend=settings.attention_backend, compile=settings.compile)
        with parallelized(self.transformer, self.adapter, self.groups, **options) as par:
            yield par.guide(predict_noise, params.guidance_scale), par.strategy

    @torch.no_grad()
    def generate(
        self,
        params: DiffusionUserParams | Mapping[str, Any],
        output_dir: str | Path,
        name: str = "video",
        on_step: StepCallback | None = None,
    ) -> GenerationResult | None:
        """Rank 0: one video and its metrics, as `Engine.generate`. Other ranks: denoise only, return None."""
        if not isinstance(params, DiffusionUserParams):
            params = DiffusionUserParams.model_validate(params)
        check_output_name(name)
        self._check_request(params)
        if self.groups.rank == 0:
            return super().generate(params, output_dir, name, on_step)
        self.sample(params)
        return None

    def _metrics(self, params, sample: Sample, *args) -> dict:
        metrics = super()._metrics(params, sample, *args)
        metrics["parallel"] = self.groups.layout.describe()
        return metrics


def check_launch(config: EngineConfig, strategy: type[FlexCacheStrategy] | None = None) -> None:
    """The entry point's early check, before the slow model load: single-process rules outside a gang."""
    env = DistributedEnv.from_env()
    if env is None or env.world_size == 1:
        check_single_process(config, strategy)


def load_engine(model_dir: str | Path, config: EngineConfig) -> Engine:
    """A `ParallelEngine` when launched as a gang of >= 2 ranks (torchrun / the worker launcher), else `Engine`."""
    env = DistributedEnv.from_env()
    if env is None or env.world_size == 1:
        return Engine.load(model_dir, config)
    return ParallelEngine.launch(model_dir, config, env)
