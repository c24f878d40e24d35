"""Randomly initialised Wan2.1 text-to-video pipelines, built without downloading anything.

Two architectures:
- `tiny`: every component shrunk so a 9-frame 64x64 video takes a fraction of a second on a CPU, yet keeps what
  the engine relies on: 4 DiT blocks (FlexCache needs several layers), 4 heads (Ulysses tests split them 2 or 4
  ways), the VAE's 4x temporal / 8x spatial compression and 16 latent channels, and the Wan flow-matching
  scheduler. Used by `make demo` and every CPU test.
- `wan2.1-t2v-1.3b`: the released 1.3B transformer and the Wan2.1 VAE with random weights, for GPU benchmarks.
  UMT5-XXL (5.7 B parameters) would dominate load time and disk for no benchmark value (it runs in ~0.06 s per
  video), so by default a tiny UMT5 with d_model = 4096 (the DiT's text_dim) stands in for it: benchmark-only,
  the text conditioning is noise either way. `text_encoder="umt5-xxl"` builds the full-size encoder.

The tokenizer is always ByT5 (byte level, needs no vocabulary file); its 384 ids fit every encoder here. A saved
folder has the layout of Wan-AI/Wan2.1-T2V-1.3B-Diffusers and loads through `models.loading` like a real one.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, ModelMixin, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

logger = logging.getLogger(__name__)

# Wan2.1's scheduler: UniPC in flow-matching mode, shift 3.0 (the 480p setting of the released model).
WAN21_SCHEDULER = dict(
    prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
)

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json
WAN21_1_3B_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)

TINY_TRANSFORMER = {
    **WAN21_1_3B_TRANSFORMER,
    **dict(num_attention_heads=4, attention_head_dim=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=4),
}

# AutoencoderKLWan's defaults are the Wan2.1 VAE; the tiny one keeps its 3 downsamplings (8x) and 2 temporal (4x).
WAN21_VAE: dict = {}
TINY_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])

# google/umt5-xxl encoder (Wan2.1's text encoder)
UMT5_XXL = dict(
    vocab_size=256384,
    d_model=4096,
    d_kv=64,
    num_heads=64,
    num_layers=24,
    d_ff=10240,
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    tie_word_embeddings=False,
)
BYT5_VOCAB = 384  # 256 bytes + 3 specials + 125 sentinel ids


def tiny_text_encoder_config(d_model: int) -> dict:
    """A 2-layer UMT5 whose output width is `d_model` (= the DiT's text_dim)."""
    return dict(
        vocab_size=BYT5_VOCAB,
        d_model=d_model,
        d_kv=8,
        num_heads=4,
        num_layers=2,
        d_ff=64,
        feed_forward_proj="gated-gelu",
    )


@dataclass(frozen=True)
class WanArch:
    transformer: dict
    vae: dict


ARCHS = {"tiny": WanArch(TINY_TRANSFORMER, TINY_VAE), "wan2.1-t2v-1.3b": WanArch(WAN21_1_3B_TRANSFORMER, WAN21_VAE)}
TEXT_ENCODERS = ("tiny", "umt5-xxl")


def cast_like_from_pretrained(model: ModelMixin, dtype: torch.dtype) -> ModelMixin:
    """`model.to(dtype)` except `_keep_in_fp32_modules` (Wan's RoPE, time embedder, norms), as loading does."""
    keep = set(model._keep_in_fp32_modules or ())
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        if tensor.is_floating_point() and not keep.intersection(name.split(".")):
            tensor.data = tensor.data.to(dtype)
    return model


def build_transformer(config: dict, dtype: torch.dtype = torch.float32, device: str = "cpu") -> WanTransformer3DModel:
    with torch.device(device):  # initialise in place: a 1.3B model is slow to initialise on CPU
        return cast_like_from_pretrained(WanTransformer3DModel(**config), dtype).eval()


def build_vae(config: dict, dtype: torch.dtype = torch.float32, device: str = "cpu") -> AutoencoderKLWan:
    with torch.device(device):
        return cast_like_from_pretrained(AutoencoderKLWan(**config), dtype).eval()


def build_text_encoder(config: dict, dtype: torch.dtype = torch.float32, device: str = "cpu") -> UMT5EncoderModel:
    with torch.device(device):
        return UMT5EncoderModel(UMT5Config(**config, dropout_rate=0.0)).to(dtype).eval()


def build_wan21_1_3b_transformer(dtype: torch.dtype = torch.bfloat16, device: str = "cuda") -> WanTransformer3DModel:
    """The Wan2.1-T2V-1.3B DiT with random weights (30 blocks, 12 x 128 heads)."""
    return build_transformer(WAN21_1_3B_TRANSFORMER, dtype, device)


def build_wan21_vae(dtype: torch.dtype = torch.bfloat16, device: str = "cuda") -> AutoencoderKLWan:
    """The Wan2.1 VAE architecture with random weights."""
    return build_vae(WAN21_VAE, dtype, device)


def build_random_pipeline(
    arch: str = "tiny",
    *,
    text_encoder: str = "tiny",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> WanPipeline:
    """A complete `WanPipeline` of architecture `arch` with seeded random weights (same seed -> same weights)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if text_encoder not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {text_encoder!r}; choose one of {', '.join(TEXT_ENCODERS)}")
    spec = ARCHS[arch]
    text_config = UMT5_XXL if text_encoder == "umt5-xxl" else tiny_text_encoder_config(spec.transformer["text_dim"])
    with torch.random.fork_rng():  # seed locally: the caller's RNG streams stay untouched
        torch.manual_seed(seed)
        components = dict(
            tokenizer=ByT5Tokenizer(),
            text_encoder=build_text_encoder(text_config, dtype, device),
            transformer=build_transformer(spec.transformer, dtype, device),
            vae=build_vae(spec.vae, dtype, device),
            scheduler=UniPCMultistepScheduler(**WAN21_SCHEDULER),
        )
    return WanPipeline(**components)


def make_random_model(directory: str | Path, arch: str = "tiny", *, text_encoder: str = "tiny", seed: int = 0) -> Path:
    """Write a diffusers-format Wan2.1 T2V folder (model_index.json, tokenizer/, text_encoder/, ...) to `directory`.

    Weights are saved in float32, like the released folder, so loading in any dtype keeps diffusers' fp32 modules.
    """
    directory = Path(directory)
    pipe = build_random_pipeline(arch, text_encoder=text_encoder, seed=seed)
    pipe.save_pretrained(directory)
    logger.info("wrote random %s Wan2.1 model (seed %d, %s text encoder) to %s", arch, seed, text_encoder, directory)
    return directory


def make_tiny_model(directory: str | Path, seed: int = 0) -> Path:
    return make_random_model(directory, "tiny", seed=seed)
