"""Wan self-attention processor with the attention computation as a parameter.

diffusers' `WanAttnProcessor` fixes how q/k/v meet (its dispatcher); we keep its projections, norms and RoPE and
swap only the core `attention_fn(q, k, v) -> out` (layout (B, tokens, heads, head_dim)). That one seam carries a
faster kernel (FA3) on one GPU and Ulysses / ring / DiTango attention under context parallelism, without
editing the model. An `attention_fn` with a `stage(x)` method gets each input as soon as it is computed, v first,
then k, then q, and receives what `stage` returned: a distributed core starts moving v while k and q are still
being normalised and rotated (one fused pass each on CUDA: fused/qk_norm_rope.py). Cross-attention keeps
diffusers' own processor (512 text tokens: not worth a custom path).
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
        query, key, value = _get_qkv_projections(attn, hidden_states, None)  # (B, L, C) each
        stage = getattr(self.attention_fn, "stage", _as_is)
        value = stage(value.unflatten(2, (attn.heads, -1)))  # (B, L, H, D); may move while k and q are prepared
        key = stage(norm_rope(key, attn.norm_k, attn.heads, rotary_emb))
        query = norm_rope(query, attn.norm_q, attn.heads, rotary_emb)
        out = self.attention_fn(stage(query), key, value)  # (B, L, H, D)
        return attn.to_out[1](attn.to_out[0](out.flatten(2, 3).type_as(hidden_states)))


def set_self_attention(
    transformer: torch.nn.Module, blocks_attr: str, self_attn_attr: str, attention_fn: AttentionFn
) -> list:
    """Install `attention_fn` on every block's self-attention; returns the previous processors for restoring."""
    previous = []
    for block in getattr(transformer, blocks_attr):
        module = getattr(block, self_attn_attr)
        previous.append(module.processor)
        module.set_processor(WanSelfAttnProcessor(attention_fn))
    return previous


def restore_self_attention(transformer: torch.nn.Module, blocks_attr: str, self_attn_attr: str, previous: list) -> None:
    for block, processor in zip(getattr(transformer, blocks_attr), previous, strict=True):
        getattr(block, self_attn_attr).set_processor(processor)
