"""Wan2.1 text-to-video as separate steps: text -> embeddings -> seeded noise -> denoise -> VAE decode -> frames.

Text encoding, noise and decoding call diffusers' `WanPipeline`; the denoising loop is ours because FlexCache and
parallelism need seams inside it that `WanPipeline.__call__` does not offer:

- `PredictNoise(branch, latents, step)`: one transformer forward for one CFG branch ("cond" / "uncond"), run
  inside `transformer.cache_context(...)` (the FlexCache contract, flex_cache/base.py). Context parallelism
  changes the attention inside the transformer, not this call.
- `Guide(latents, step)`: the guided noise of a step. `guided_noise` runs both branches on this device; CFG
  parallelism swaps in a guide that runs one branch per rank and exchanges the predictions.

Everything is seeded from one CPU generator, so the same seed gives the same noise on any device and rank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import WanPipeline
from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from chitu_diffusion.metrics import StageTimer
from chitu_diffusion.parallel.vae_decode import SpatialSplit, split_decoder

# WanPipeline's max_sequence_length: Wan2.1 was trained with 512 text tokens (padding included).
TEXT_TOKENS = 512


@dataclass(frozen=True)
class DenoiseStep:
    """Where the loop is; passed to every noise prediction (and from there to FlexCache's cache context)."""

    index: int
    num_steps: int
    timestep: torch.Tensor  # () the scheduler's timestep
    sigma: float


PredictNoise = Callable[[str, torch.Tensor, DenoiseStep], torch.Tensor]
Guide = Callable[[torch.Tensor, DenoiseStep], torch.Tensor]
#: called after each denoising step with (steps done, total steps)
StepCallback = Callable[[int, int], None]


def encode_text(
    pipe: WanPipeline, prompt: str, negative_prompt: str | None, with_uncond: bool, device: torch.device
) -> dict[str, torch.Tensor]:
    """Text embeddings per CFG branch, in the transformer's dtype: {"cond": (1, 512, text_dim), ["uncond": ...]}."""
    cond, uncond = pipe.encode_prompt(
        prompt,
        negative_prompt=negative_prompt or "",
        do_classifier_free_guidance=with_uncond,
        max_sequence_length=TEXT_TOKENS,
        device=device,
    )
    dtype = pipe.transformer.dtype
    embeds = {"cond": cond.to(dtype)}
    if with_uncond:
        embeds["uncond"] = uncond.to(dtype)
    return embeds


def initial_noise(
    pipe: WanPipeline, num_frames: int, height: int, width: int, seed: int, device: torch.device
) -> torch.Tensor:
    """Gaussian latents (1, z_dim, (F-1)/4+1, H/8, W/8) in fp32, drawn on the CPU from `seed` then moved."""
    generator = torch.Generator("cpu").manual_seed(seed)
    channels = pipe.transformer.config.in_channels
    return pipe.prepare_latents(1, channels, height, width, num_frames, torch.float32, device, generator)


def transformer_noise_predictor(transformer: torch.nn.Module, embeds: dict[str, torch.Tensor]) -> PredictNoise:
    """`PredictNoise` for one device: a plain forward of `transformer` with the branch's text embeddings."""

    def predict_noise(branch: str, latents: torch.Tensor, step: DenoiseStep) -> torch.Tensor:
        with transformer.cache_context(
            branch, step_index=step.index, num_inference_steps=step.num_steps, timestep=step.timestep, sigma=step.sigma
        ):
            return transformer(
                hidden_states=latents.to(transformer.dtype),  # (B, C, F', H', W')
                timestep=step.timestep.expand(latents.shape[0]),  # (B,)
                encoder_hidden_states=embeds[branch],  # (B, 512, text_dim)
                return_dict=False,
            )[0]  # (B, C, F', H', W') flow velocity

    return predict_noise


def guided_noise(
    predict_noise: PredictNoise, guidance_scale: float, latents: torch.Tensor, step: DenoiseStep
) -> torch.Tensor:
    """Classifier-free guidance with separate cond and uncond forwards (no batching: FlexCache keeps one cache
    per branch, and CFG parallelism puts the branches on different ranks). guidance_scale <= 1 skips uncond."""
    cond = predict_noise("cond", latents, step)  # (B, C, F', H', W')
    if guidance_scale <= 1.0:
        return cond
    uncond = predict_noise("uncond", latents, step)
    return uncond + guidance_scale * (cond - uncond)


def denoise(
    latents: torch.Tensor,
    scheduler: SchedulerMixin,
    num_steps: int,
    guide: Guide,
    timer: StageTimer,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Integrate the flow from noise to clean latents (B, C, F', H', W'); `scheduler` must be this request's own."""
    scheduler.set_timesteps(num_steps, device=latents.device)
    scheduler.set_begin_index(0)  # as WanPipeline: spares a device-to-host sync per step
    for index, timestep in enumerate(scheduler.timesteps):
        step = DenoiseStep(index, num_steps, timestep, float(scheduler.sigmas[index]))
        with timer.step():
            noise = guide(latents, step)
        latents = scheduler.step(noise, timestep, latents, return_dict=False)[0]
        if on_step is not None:
            on_step(index + 1, num_steps)
    return latents


def _denormalise(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> the VAE's latent space, on its device and dtype (as WanPipeline)."""
    z = latents.to(vae.device, vae.dtype)
    mean = torch.tensor(vae.config.latents_mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
    return z * std + mean


def _to_frames(pipe: WanPipeline, video: torch.Tensor) -> np.ndarray:
    """(1, 3, F, H, W) pixels in [-1, 1] -> (F, H, W, 3) uint8 RGB, as WanPipeline post-processes."""
    frames = pipe.video_processor.postprocess_video(video, output_type="pt")[0]  # (F, 3, H, W) in [0, 1]
    return (frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def decode_latents(pipe: WanPipeline, latents: torch.Tensor) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 RGB from normalised latents (1, z_dim, F', H', W'), as WanPipeline decodes. Never
    records autograd: a video's decode graph is ~130 GiB."""
    vae = pipe.vae
    return _to_frames(pipe, vae.decode(_denormalise(vae, latents), return_dict=False)[0])


@torch.no_grad()
def decode_latent_chunks(
    pipe: WanPipeline, latents: torch.Tensor, split: SpatialSplit | None = None
) -> Iterator[np.ndarray]:
    """`decode_latents` one latent frame at a time: (f, H, W, 3) uint8 chunks as the Wan VAE's causal decoder
    makes them (1 frame, then 4 per latent frame), so an mp4 encoder can work on the first frames while the GPU
    decodes the rest. The computation is `AutoencoderKLWan._decode`'s loop with its causal feature cache (diffusers
    keeps that loop inside `decode` and concatenates before returning); a unit test holds the two equal.

    With `split` (a gang's exact split decode, parallel/vae_decode.py) this rank decodes its slice of each latent
    frame and every chunk's pixels are gathered: every rank of the split's group must take the chunks alike, and
    each gets every frame."""
    vae = pipe.vae
    if split is not None:
        latents = split.take(latents)  # (1, z_dim, F', ., .): this rank's columns
    z = vae.post_quant_conv(_denormalise(vae, latents))  # 1x1x1: a slice maps onto the same slice
    with nullcontext() if split is None else split_decoder(vae, split):  # restores the decoder on close too
        vae.clear_cache()
        try:
            for index in range(z.shape[2]):
                vae._conv_idx = [0]
                pixels = vae.decoder(
                    z[:, :, index : index + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=index == 0
                )
                if vae.config.patch_size is not None:
                    pixels = unpatchify(pixels, patch_size=vae.config.patch_size)
                if split is not None:
                    pixels = split.gather(pixels)  # (1, 3, f, H, W) from every rank's slice
                yield _to_frames(pipe, pixels.clamp(-1.0, 1.0))
        finally:
            vae.clear_cache()
