"""FP8 self-attention: FlashAttention-3's FP8 forward with per-(batch, head) scales and smoothed keys.

Softmax is unchanged when one vector is subtracted from every key of a head: q.(k - m) = q.k - q.m shifts each
score row by a constant. With m the keys' mean over tokens, the keys that get quantised are centred, so their
per-head scale is set by their spread rather than by a shared offset (Wan's keys after RMSNorm and RoPE carry
one), and e4m3's 3 mantissa bits resolve more of what the softmax sees (SageAttention's "smooth K").

`fp8_attention_kernel(device)` returns a `Kernel` (the signature of `attention.kernels`), layout (B, tokens,
heads, head_dim), bf16 in and out. On a Hopper GPU with `fa3-fwd` it calls the FP8 kernel with the scales as
descale factors; elsewhere (CPU tests, other GPUs) it computes the same function from the dequantised inputs
with exact attention, so the rounding FP8 introduces is testable without the GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from chitu_diffusion.attention.kernels import NamedKernel, fa3_available, register_kernel
from chitu_diffusion.precision.fp8_scaling import dequantize, quantize

# (B, L, H, D): one scale per batch element and head, over tokens and head_dim
PER_HEAD = (1, 3)


def smooth_keys(k: torch.Tensor) -> torch.Tensor:
    """k minus its mean over tokens, per batch element and head (softmax-invariant, see the module docstring)."""
    return k - k.mean(dim=1, keepdim=True, dtype=torch.float32).to(k.dtype)


def quantize_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """e4m3 q, smoothed k, v with their (B, 1, H, 1) fp32 scales."""
    return (*quantize(q, PER_HEAD), *quantize(smooth_keys(k), PER_HEAD), *quantize(v, PER_HEAD))


def fp8_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """What the FP8 kernel computes, from the dequantised inputs in fp32: exact attention of the rounded values."""
    q8, q_scale, k8, k_scale, v8, v_scale = quantize_qkv(q, k, v)
    qf, kf, vf = (dequantize(x, s).transpose(1, 2) for x, s in ((q8, q_scale), (k8, k_scale), (v8, v_scale)))
    out = F.scaled_dot_product_attention(qf, kf, vf, scale=1.0 / math.sqrt(q.shape[-1]))  # (B, H, L, D)
    return out.transpose(1, 2).to(q.dtype)


def _fa3_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from fa3_fwd_interface import flash_attn_func

    q8, q_scale, k8, k_scale, v8, v_scale = quantize_qkv(q, k, v)
    descale = [s.reshape(s.shape[0], s.shape[2]) for s in (q_scale, k_scale, v_scale)]  # (B, H) each
    out = flash_attn_func(q8, k8, v8, q_descale=descale[0], k_descale=descale[1], v_descale=descale[2])
    return (out[0] if isinstance(out, tuple) else out).to(q.dtype)  # (B, L, H, D)


def fp8_kernel_available(device: torch.device) -> bool:
    """FA3's FP8 forward runs on Hopper (compute capability 9.x) with `fa3-fwd` installed."""
    return device.type == "cuda" and fa3_available() and torch.cuda.get_device_capability(device)[0] == 9


_FA3_FP8 = register_kernel("fp8-fa3", _fa3_fp8)
_FP8_REFERENCE = register_kernel("fp8-reference", fp8_attention_reference)


def fp8_attention_kernel(device: torch.device) -> NamedKernel:
    """The FP8 attention `Kernel` for `device`: FA3 FP8 on Hopper, its reference math elsewhere. Chosen once,
    not per call, so a compiled block sees one kernel."""
    return _FA3_FP8 if fp8_kernel_available(device) else _FP8_REFERENCE
