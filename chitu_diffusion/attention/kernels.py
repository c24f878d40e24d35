"""Exact attention kernels behind one signature, layout (B, tokens, heads, head_dim) like diffusers' dispatch.

`attention` returns the output; `attention_with_lse` also returns the log-sum-exp of the scores, the
"attention state" that ring attention and DiTango merge across K/V partitions. Backends:
- `sdpa`: torch SDPA (cuDNN on Hopper, what stock diffusers runs); no lse.
- `fa3`: FlashAttention-3 forward (PyPI `fa3-fwd`), faster than cuDNN on H100 for Wan's shapes
  (see shared notes: 699 vs 573 TFLOP/s); bf16/fp16 on Hopper only.
- `cudnn` / `flash`: torch's private SDPA ops that also return lse (GPU).
- `math`: fp32 reference with lse, for CPU and tests.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
LseKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

BACKENDS = ("auto", "sdpa", "fa3", "cudnn", "flash", "math")


def fa3_available() -> bool:
    return importlib.util.find_spec("fa3_fwd_interface") is not None and torch.cuda.is_available()


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B, H, L, D)
    return out.transpose(1, 2)  # (B, L, H, D)


def _fa3_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from fa3_fwd_interface import flash_attn_func

    out, lse = flash_attn_func(q, k, v, return_attn_probs=True)[:2]  # (B, L, H, D), (B, H, L)
    return out, lse


def _fa3(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _fa3_with_lse(q, k, v)[0]


def _cudnn_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, True, 0.0, False, False
    )[:2]  # (B, H, L, D), (B, H, L[, 1])
    return out.transpose(1, 2), lse.reshape(lse.shape[:3])


def _flash_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    )[:2]
    return out.transpose(1, 2), lse


def _math_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 reference: softmax(q k^T / sqrt(d)) v and logsumexp of the scaled scores."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.einsum("blhd,bmhd->bhlm", q.float(), k.float()) * scale  # (B, H, Lq, Lk)
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, Lq)
    out = torch.einsum("bhlm,bmhd->blhd", torch.exp(scores - lse.unsqueeze(-1)), v.float())  # (B, Lq, H, D)
    return out.to(q.dtype), lse


_KERNELS: dict[str, Kernel] = {
    "sdpa": _sdpa,
    "fa3": _fa3,
    "cudnn": lambda q, k, v: _cudnn_with_lse(q, k, v)[0],
    "flash": lambda q, k, v: _flash_with_lse(q, k, v)[0],
    "math": lambda q, k, v: _math_with_lse(q, k, v)[0],
}
_LSE_KERNELS: dict[str, LseKernel] = {
    "fa3": _fa3_with_lse,
    "cudnn": _cudnn_with_lse,
    "flash": _flash_with_lse,
    "math": _math_with_lse,
}
#: every kernel a `NamedKernel` can call: the exact ones above (lse variants as "<name>+lse") and those other
#: modules register (precision/fp8_attention.py)
_REGISTRY: dict[str, Callable] = {**_KERNELS, **{f"{name}+lse": kernel for name, kernel in _LSE_KERNELS.items()}}


def register_kernel(name: str, kernel: Callable) -> NamedKernel:
    """Make `kernel` callable as `NamedKernel(name)`; a name stands for one function for the whole process."""
    if _REGISTRY.setdefault(name, kernel) is not kernel:
        raise ValueError(f"attention kernel {name!r} is already registered to another function")
    return NamedKernel(name)


@dataclass(frozen=True)
class NamedKernel:
    """A registered attention kernel, held by its name.

    torch.compile tells two plain functions apart only by identity, and torch's caching_precompile (which lets a
    fresh process skip tracing: compile_cache.py) drops identity guards: a block compiled around one kernel would
    be reused with another, in one process or in the next one that shares the cache folder (jobs on one model
    volume may set different `attention_backend`s). A name is guarded by value: each kernel keeps its own graph.
    """

    name: str

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        return _REGISTRY[self.name](q, k, v)


def resolve_backend(name: str | None, device: torch.device, dtype: torch.dtype) -> str:
    """'auto' -> fa3 on Hopper in bf16/fp16 when installed, sdpa otherwise; validates explicit names."""
    name = (name or "auto").lower()
    if name not in BACKENDS:
        raise ValueError(f"infer.diffusion.attention_backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "auto":
        half = dtype in (torch.bfloat16, torch.float16)
        return "fa3" if device.type == "cuda" and half and fa3_available() else "sdpa"
    if name == "fa3" and not fa3_available():
        raise ValueError("infer.diffusion.attention_backend=fa3 needs a CUDA GPU and the `fa3-fwd` package")
    return name


def get_kernel(backend: str) -> Kernel:
    if backend not in _KERNELS:
        raise ValueError(f"attention kernel must be one of {', '.join(_KERNELS)}, got {backend!r}")
    return NamedKernel(backend)


def get_lse_kernel(backend: str, device: torch.device) -> LseKernel:
    """A kernel returning (out, lse); `sdpa` has none, so it maps to the lse-capable kernel for the device."""
    if backend not in _LSE_KERNELS:
        backend = "cudnn" if device.type == "cuda" else "math"
    return NamedKernel(f"{backend}+lse")
