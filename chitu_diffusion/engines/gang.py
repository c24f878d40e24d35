"""The engine on one rank of a gang launched by torchrun: the single-device `Engine` with parallel denoising.

Loading, text encoding, noise and decoding are the single-device engine's; per request `sample` wraps the
transformer with `parallelize` (CFG split -> context parallelism -> FlexCache with a gang-wide reducer -> compile)
and removes it afterwards. Every rank denoises; after the last step all ranks hold the same latents, rank 0 decodes
(or, with infer.diffusion.parallel_decode, every rank its slice of each latent frame) and only rank 0 writes the
video, metrics and policy pictures (`generate` returns None elsewhere).

Every check that can fail runs on every rank before the first collective, with the same inputs, so a bad request
fails on all ranks alike instead of leaving peers waiting in a collective (the request check is the single
engine's, on this gang's layout). Build it with `chitu_diffusion.engines.load_engine`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from diffusers import WanPipeline

from chitu_diffusion.config import EngineConfig
from chitu_diffusion.engines.checks import check_output_name
from chitu_diffusion.engines.parallelize import parallelized
from chitu_diffusion.engines.single import Engine, GenerationResult, Sample
from chitu_diffusion.flex_cache.base import FlexCacheStrategy
from chitu_diffusion.models.folder import num_attention_heads
from chitu_diffusion.models.loading import load_wan_pipeline
from chitu_diffusion.parallel.degrees import ParallelLayout
from chitu_diffusion.parallel.groups import ParallelGroups, build_groups
from chitu_diffusion.parallel.launch import DistributedEnv, init_distributed
from chitu_diffusion.parallel.vae_decode import SpatialSplit
from chitu_diffusion.pipeline import Guide, PredictNoise, StepCallback, decode_latent_chunks
from chitu_diffusion.task import DiffusionUserParams

logger = logging.getLogger(__name__)


class ParallelEngine(Engine):
    """One rank's engine; build it with `load_engine` (or `ParallelEngine.launch`) on every rank."""

    def __init__(
        self, pipe: WanPipeline, config: EngineConfig, groups: ParallelGroups, *, model_dir: str | Path | None = None
    ):
        self.groups = groups
        super().__init__(pipe, config, model_dir=model_dir)

    @classmethod
    def launch(cls, model_dir: str | Path, config: EngineConfig, env: DistributedEnv) -> ParallelEngine:
        """Join the gang, validate the layout against the model (before loading weights), load, build groups."""
        settings = config.diffusion
        heads = num_attention_heads(model_dir)
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

    @property
    def layout(self) -> ParallelLayout:
        """The gang's degrees, validated by `launch` against the world size and the model."""
        return self.groups.layout

    compiles_at_load = False  # `parallelize` compiles last, after the gang's processors and hooks
    # the gang's token-splitting hooks run inside the first block's compiled call, as closures that dynamo tells
    # apart by identity only: not yet proven safe with identity guards dropped (compile_cache.py)
    keeps_traced_code = False

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
        options = dict(cache=params.cache, backend=settings.attention_backend, compile=self.compile)
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
        sample = self.sample(params)  # the collectives rank 0's generate runs, in the same order
        self._decode(sample.latents)
        if self.checks_precision:
            self._precision_check(params, sample, None)
        return None

    def _decode_chunks(self, latents: torch.Tensor) -> Iterator[np.ndarray]:
        """Rank 0 decodes the whole video, or, with infer.diffusion.parallel_decode, every rank decodes its slice
        of each latent frame and all get each chunk's frames, so rank 0's mp4 encoder starts on the first while the
        gang decodes the rest (the decode stage's time on rank 0 is then the gang's)."""
        if not self.config.diffusion.parallel_decode:
            return super()._decode_chunks(latents) if self.groups.rank == 0 else iter(())
        return decode_latent_chunks(self.pipe, latents, SpatialSplit.of(latents, self.groups.world))

    def _metrics(self, params, sample: Sample, *args) -> dict:
        metrics = super()._metrics(params, sample, *args)
        metrics["parallel"] = self.groups.layout.describe()
        metrics["parallel_decode"] = self.config.diffusion.parallel_decode
        return metrics
