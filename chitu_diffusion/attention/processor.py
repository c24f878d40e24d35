"""Wan self-attention processor with the attention computation as a parameter.

diffusers' `WanAttnProcessor` fixes how q/k/v meet (its dispatcher); we keep its projections, norms and RoPE and
swap only the core `attention_fn(q, k, v) -> out` (layout (B, tokens, heads, head_dim)). That one seam carries a
faster kernel (FA3) on one GPU and Ulysses / ring / DiTango attention under context parallelism, without
editing the model. An `attention_fn` with a `stage(x)` method gets each input as soon as it is computed, v first,
then k, then q, and receives what `stage` returned: a distributed core starts moving v while k and q are still
being normalised and rotated (one fused pass each on CUDA: fused/qk_norm_rope.py).

Text-to-video cross-attention gets the same kernel through `WanCrossAttnProcessor`: diffusers' processor
dispatches it to SDPA (cuDNN on Hopper), 6.5 ms of a 0.44 s forward on an H200 where FA3 takes 5.9 ms
(bench/results/profile_rows_xattn_h200.json), and a tuned diffusers runs FA3 for both attentions. Its queries are
this device's tokens and its 512 text keys are whole on every rank, so the one-device kernel is exact under every
parallel layout too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.models.transformers.transformer_wan import _get_qkv_projections

from chitu_diffusion.fused.qk_norm_rope import norm_rope

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _as_is(x: torch.Tensor) -> torch.Tensor:
    return x


class WanSelfAttnProcessor:
    """Drop-in processor for `WanAttention` self-attention (`attn1`) calling `attention_fn` for the core."""

    def __init__(self, attention_fn: AttentionFn):
        self.attention_fn = attention_fn

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,  # (B, L, C)
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("WanSelfAttnProcessor handles unmasked self-attention (attn1) only")
        # (B, L, C) each; hidden_states may be rows quantised once for all three (precision/fp8_norm.py)
        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        dtype = query.dtype
        stage = getattr(self.attention_fn, "stage", _as_is)
        value = stage(value.unflatten(2, (attn.heads, -1)))  # (B, L, H, D); may move while k and q are prepared
        key = stage(norm_rope(key, attn.norm_k, attn.heads, rotary_emb))
        query = norm_rope(query, attn.norm_q, attn.heads, rotary_emb)
        out = self.attention_fn(stage(query), key, value)  # (B, L, H, D)
        return attn.to_out[1](attn.to_out[0](out.flatten(2, 3).to(dtype)))


class WanCrossAttnProcessor:
    """Drop-in processor for text-to-video cross-attention (`attn2`) calling `kernel` for the core."""

    def __init__(self, kernel: AttentionFn):
        self.kernel = kernel

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,  # (B, L, C)
        encoder_hidden_states: torch.Tensor | None = None,  # (B, 512, C) projected text
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is None or attention_mask is not None or attn.add_k_proj is not None:
            raise ValueError("WanCrossAttnProcessor handles unmasked text-only cross-attention (attn2) only")
        query, key, value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))  # (B, L, H, D)
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))  # (B, 512, H, D)
        out = self.kernel(query, key, value.unflatten(2, (attn.heads, -1)))  # (B, L, H, D)
        return attn.to_out[1](attn.to_out[0](out.flatten(2, 3).type_as(query)))


def _set_processors(transformer: torch.nn.Module, blocks_attr: str, attr: str, processor, applies=None) -> list:
    """`processor` on every block's `attr` module where `applies(module)`; the previous processors, in order."""
    previous = []
    for block in getattr(transformer, blocks_attr):
        module = getattr(block, attr)
        previous.append(module.processor)
        if applies is None or applies(module):
            module.set_processor(processor)
    return previous


def set_self_attention(
    transformer: torch.nn.Module, blocks_attr: str, self_attn_attr: str, attention_fn: AttentionFn
) -> list:
    """Install `attention_fn` on every block's self-attention; returns the previous processors for restoring."""
    return _set_processors(transformer, blocks_attr, self_attn_attr, WanSelfAttnProcessor(attention_fn))


def set_cross_attention(transformer: torch.nn.Module, blocks_attr: str, cross_attn_attr: str, kernel) -> list:
    """`kernel` as the core of every text-only cross-attention (image-conditioned ones keep their processor)."""
    processor = WanCrossAttnProcessor(kernel)
    return _set_processors(
        transformer, blocks_attr, cross_attn_attr, processor, lambda module: module.add_k_proj is None
    )


def restore_self_attention(transformer: torch.nn.Module, blocks_attr: str, self_attn_attr: str, previous: list) -> None:
    for block, processor in zip(getattr(transformer, blocks_attr), previous, strict=True):
        getattr(block, self_attn_attr).set_processor(processor)
