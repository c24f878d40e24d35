"""The single-process engine: load a Wan2.1 T2V model once, then generate one video per request.

`Engine.generate(params, output_dir, name)` writes `<output_dir>/<name>.mp4`, `<output_dir>/metrics.json` and
any FlexCache policy files. A request's FlexCache strategy is attached for that request only and removed
afterwards (even on error), so the transformer is clean for the next prompt of the job. `ParallelEngine`
(gang.py) is this engine with a gang's layout; get either from `chitu_diffusion.engines.load_engine`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import WanPipeline

from chitu_diffusion.attention.kernels import get_kernel, resolve_backend
from chitu_diffusion.attention.processor import set_cross_attention, set_self_attention
from chitu_diffusion.compile_cache import (
    compile_blocks,
    compile_cache_dir,
    keeping_traced_code,
    save_traced_code,
    use_compile_cache,
)
from chitu_diffusion.config import ConfigError, EngineConfig
from chitu_diffusion.engines.checks import check_output_name, check_request, check_single_process
from chitu_diffusion.flex_cache.base import FlexCacheStrategy
from chitu_diffusion.flex_cache.registry import get_strategy
from chitu_diffusion.fused.gelu_epilogue import fuse_gelu_epilogues
from chitu_diffusion.fused.row_reductions import use_wide_row_reductions
from chitu_diffusion.metrics import StageTimer, peak_memory, reset_peak_memory, versions, write_metrics
from chitu_diffusion.models.adapter import adapter_for
from chitu_diffusion.models.loading import load_wan_pipeline
from chitu_diffusion.parallel.degrees import ParallelLayout
from chitu_diffusion.pipeline import (
    Guide,
    PredictNoise,
    StepCallback,
    decode_latent_chunks,
    denoise,
    encode_text,
    guided_noise,
    initial_noise,
    transformer_noise_predictor,
)
from chitu_diffusion.precision.apply import apply_precision
from chitu_diffusion.precision.compare import precision_report
from chitu_diffusion.task import DiffusionUserParams

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationResult:
    video_path: Path
    metrics_path: Path
    extra_paths: list[Path]  # FlexCache policy pictures and the like
    metrics: dict


@dataclass
class Sample:
    """Denoised latents of one request, before decoding (what every rank of a parallel gang ends with)."""

    latents: torch.Tensor  # (1, z_dim, F', H/8, W/8) fp32
    seed: int
    cache: dict = field(default_factory=dict)  # the strategy's report
    extra_paths: list[Path] = field(default_factory=list)


@contextmanager
def attached(strategy: FlexCacheStrategy, transformer: torch.nn.Module):
    """`strategy`'s hooks on `transformer` for the duration of one request; removed and reset afterwards."""
    strategy.apply(transformer)
    try:
        yield strategy
    finally:
        strategy.remove(transformer)
        strategy.reset()


def cache_report(strategy: FlexCacheStrategy, output_dir: Path | None) -> tuple[dict, list[Path]]:
    """The strategy's metrics (read before `reset` forgets them) and its visualisation files."""
    files = strategy.write_visualisations(output_dir) if output_dir is not None else []
    report = {
        "strategy": strategy.name,
        "params": strategy.params.model_dump(mode="json"),
        "summary": strategy.log.summary(),
        "ratio": strategy.describe_ratio(),
        "extra_memory_bytes": strategy.extra_memory_bytes(),
        "visualisations": [Path(f).name for f in files],
    }
    return report, [Path(f) for f in files]


class Engine:
    """A Wan2.1 T2V pipeline on one device, loaded once and reused for every request."""

    def __init__(self, pipe: WanPipeline, config: EngineConfig | None = None, *, model_dir: str | Path | None = None):
        """Wrap an already loaded/built pipeline (used as it is: its device and dtype); see `Engine.load`."""
        self.config = config or EngineConfig()
        if self.layout.world_size == 1:
            check_single_process(self.config)
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.adapter = adapter_for(self.transformer)
        self.device = self.transformer.device
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.load_s: float | None = None
        self._configure_transformer()

    @staticmethod
    def load(model_dir: str | Path, config: EngineConfig | None = None) -> Engine:
        """The seed's API: `chitu_diffusion.engines.load_engine` (a `ParallelEngine` when run under torchrun)."""
        from chitu_diffusion.engines import load_engine  # the package imports this module

        return load_engine(model_dir, config)

    @classmethod
    def load_on_device(cls, model_dir: str | Path, config: EngineConfig) -> Engine:
        """Load a diffusers-format Wan2.1 T2V folder in this process, on the configured device and dtype."""
        check_single_process(config)  # before the slow load
        device = config.diffusion.resolved_device(torch.cuda.is_available())
        dtype = getattr(torch, config.diffusion.resolved_dtype(device))
        start = time.perf_counter()
        engine = cls(load_wan_pipeline(model_dir, dtype, device), config, model_dir=model_dir)
        engine.load_s = time.perf_counter() - start
        logger.info("model loaded in %.1f s", engine.load_s)
        return engine

    @property
    def layout(self) -> ParallelLayout:
        """One process holds the whole video: cfg 1 x ulysses 1 x ring 1 (`ParallelEngine`: its gang's)."""
        return ParallelLayout()

    #: whether the blocks are compiled at load; a gang's `parallelize` compiles last, after its own processors
    compiles_at_load = True
    #: whether dynamo's traced code is kept in the compile cache for the next process (compile_cache.py)
    keeps_traced_code = True

    def _configure_transformer(self) -> None:
        """Precision and exact fusions, attention kernel, then compile (last: it traces whatever the forward is)."""
        settings = self.config.diffusion
        try:
            backend = resolve_backend(settings.attention_backend, self.device, self.transformer.dtype)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if settings.precision == "fp8" and self.device.type == "cuda" and self.transformer.dtype != torch.bfloat16:
            raise ConfigError(
                "infer.diffusion.precision=fp8 needs a bfloat16 model on CUDA: infer.diffusion.dtype=auto or bfloat16"
            )
        blocks = self.adapter.blocks(self.transformer)
        self.precision = apply_precision(blocks, settings.precision, self.device)
        if settings.precision == "bf16" and self.device.type == "cuda":
            fuse_gelu_epilogues(blocks)  # exact: the FFN's GELU in its GEMM's epilogue
        self.bf16_kernel = get_kernel(backend)  # also the bf16 reference of a precision check
        if self.precision.attention_kernel is not None or backend != "sdpa":  # sdpa: keep diffusers' processor
            self._set_self_attention(self.precision.attention_kernel or self.bf16_kernel)
        if backend != "sdpa":  # cross-attention stays bf16: 512 keys, 2% of the attention work
            adapter = self.adapter
            set_cross_attention(self.transformer, adapter.blocks_attr, adapter.cross_attention_attr, self.bf16_kernel)
        self.attention_backend = backend
        self.compile = settings.resolved_compile(self.device.type)
        #: where compiled code is kept (None when not compiling); a worker shares it when it is in the model folder
        self.compile_cache_folder: Path | None = None
        if self.compile:
            self.compile_cache_folder = use_compile_cache(compile_cache_dir(settings.compile_cache_dir, self.model_dir))
            use_wide_row_reductions()  # 1536-wide norms in one pass (fused/row_reductions.py)
            if self.compiles_at_load:
                # FlexCache strategies add no graph break (their decisions are taken outside the blocks:
                # tests/unit/test_flexcache_compile.py); fullgraph=False so a kernel dynamo cannot trace runs
                # eagerly instead of failing the load.
                compile_blocks(self.adapter.blocks(self.transformer), self.keeps_traced_code, fullgraph=False)

    def _set_self_attention(self, kernel) -> None:
        set_self_attention(self.transformer, self.adapter.blocks_attr, self.adapter.self_attention_attr, kernel)

    @property
    def checks_precision(self) -> bool:
        """Whether every video is also made in bf16 and compared (infer.diffusion.precision_check)."""
        settings = self.config.diffusion
        return settings.precision_check and settings.precision != "bf16"

    def _check_request(self, params: DiffusionUserParams) -> None:
        """Reject, before any work, a request this engine's layout cannot run (checks.check_request)."""
        heads = self.transformer.config.num_attention_heads
        check_request(params, self.layout, self.config.diffusion.up_limit, heads)

    def _seed(self, params: DiffusionUserParams) -> int:
        return params.seed if params.seed is not None else secrets.randbits(32)

    @contextmanager
    def _denoiser(
        self, params: DiffusionUserParams, predict_noise: PredictNoise
    ) -> Iterator[tuple[Guide, FlexCacheStrategy]]:
        """The guide of the denoising loop and the request's FlexCache strategy, attached for this request only.
        Both CFG branches on this device; `ParallelEngine` swaps in its gang's layout here."""
        with attached(get_strategy(params.cache.strategy)(params.cache, self.adapter), self.transformer) as strategy:
            yield partial(guided_noise, predict_noise, params.guidance_scale), strategy

    @torch.no_grad()
    def sample(
        self,
        params: DiffusionUserParams,
        *,
        timer: StageTimer | None = None,
        on_step: StepCallback | None = None,
        visualisation_dir: Path | None = None,
    ) -> Sample:
        """Text encoding and the denoising loop with the request's FlexCache strategy attached."""
        self._check_request(params)
        timer = timer or StageTimer(self.device)
        seed = self._seed(params)
        with timer.stage("text_encode"):
            embeds = encode_text(
                self.pipe, params.prompt, params.negative_prompt, params.do_classifier_free_guidance, self.device
            )
        latents = initial_noise(self.pipe, params.num_frames, params.height, params.width, seed, self.device)
        scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)  # per-request solver state
        keeps_traced_code = self.compile and self.keeps_traced_code
        with self._denoiser(params, transformer_noise_predictor(self.transformer, embeds)) as (guide, strategy):
            with timer.stage("denoise"), keeping_traced_code(keeps_traced_code):  # traces new variants with it
                latents = denoise(latents, scheduler, params.num_inference_steps, guide, timer, on_step)
            report, files = cache_report(strategy, visualisation_dir)
        if keeps_traced_code and save_traced_code():
            logger.info("saved what this request compiled for the next process (compile cache)")
        return Sample(latents, seed, report, files)

    @torch.no_grad()
    def generate(
        self,
        params: DiffusionUserParams | Mapping[str, Any],
        output_dir: str | Path,
        name: str = "video",
        on_step: StepCallback | None = None,
    ) -> GenerationResult:
        """One video: `<output_dir>/<name>.mp4` and `<output_dir>/metrics.json`."""
        if not isinstance(params, DiffusionUserParams):
            params = DiffusionUserParams.model_validate(params)
        check_output_name(name)
        self._check_request(params)
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        timer = StageTimer(self.device)
        reset_peak_memory(self.device)
        with timer.stage("total"):
            sample = self.sample(params, timer=timer, on_step=on_step, visualisation_dir=output_dir)
            from chitu_diffusion.video import Mp4Writer  # ffmpeg is needed to write, not to sample

            with Mp4Writer(output_dir / f"{name}.mp4", params.fps) as writer:
                with timer.stage("decode"):  # the encoder works on earlier frames meanwhile
                    chunks = []
                    for chunk in self._decode_chunks(sample.latents):  # (f, H, W, 3) uint8
                        writer.write(chunk)
                        chunks.append(chunk)
                with timer.stage("encode_mp4"):  # what the encoder still had to do after the last frame
                    video_path = writer.close()
            frames = np.concatenate(chunks)
        metrics = self._metrics(params, sample, timer, video_path, frames.shape)
        if self.checks_precision:
            metrics["precision_check"] = self._precision_check(params, sample, frames)
        metrics_path = write_metrics(output_dir, metrics)
        logger.info("wrote %s and %s in %.2f s", video_path, metrics_path, timer.stages["total"])
        return GenerationResult(video_path, metrics_path, sample.extra_paths, metrics)

    def _decode_chunks(self, latents: torch.Tensor) -> Iterator[np.ndarray]:
        """Frames (f, H, W, 3) uint8 of the denoised latents, in the order the VAE makes them (`ParallelEngine`:
        its gang's way)."""
        return decode_latent_chunks(self.pipe, latents)

    def _decode(self, latents: torch.Tensor) -> np.ndarray | None:
        """All frames (F, H, W, 3) uint8 of the denoised latents; None where this process gets no frames."""
        chunks = list(self._decode_chunks(latents))
        return np.concatenate(chunks) if chunks else None

    def _precision_check(self, params: DiffusionUserParams, sample: Sample, frames: np.ndarray | None) -> dict | None:
        """The same request and seed with the bf16 layers and kernel put back, compared with `sample`. A gang's
        other ranks pass no frames: they take part in the reference run's collectives and get None."""
        start = time.perf_counter()
        with self.precision.bf16_linears():
            self._set_self_attention(self.bf16_kernel)
            try:
                reference = self.sample(params.model_copy(update={"seed": sample.seed}))
            finally:
                self._set_self_attention(self.precision.attention_kernel)
        reference_frames = self._decode(reference.latents)
        if frames is None:
            return None
        return precision_report(
            sample.latents, reference.latents, frames, reference_frames, time.perf_counter() - start
        )

    def _metrics(self, params, sample: Sample, timer: StageTimer, video_path: Path, frames_shape) -> dict:
        num_frames, height, width, _ = frames_shape
        return {
            "video": video_path.name,
            "seed": sample.seed,
            "seed_source": "request" if params.seed is not None else "random",
            "params": params.model_dump(mode="json"),
            "engine_config": self.config.model_dump(mode="json"),
            "runtime": {
                "device": str(self.device),
                "dtype": str(self.transformer.dtype).removeprefix("torch."),
                "attention_backend": self.attention_backend,
                "precision": self.precision.precision,
                "compiled": self.compile,
            },
            "model": {
                "dir": str(self.model_dir) if self.model_dir else None,
                "family": self.adapter.family,
                "variant": self.adapter.variant(self.transformer),
                "transformer_parameters": sum(p.numel() for p in self.transformer.parameters()),
                "load_s": self.load_s,
            },
            "output": {
                "num_frames": num_frames,
                "height": height,
                "width": width,
                "fps": params.fps,
                "bytes": video_path.stat().st_size,
            },
            "timings_s": timer.stages,
            "dit_step_s": timer.steps,
            "peak_memory": peak_memory(self.device),
            "cache": sample.cache,
            "versions": versions(),
        }
