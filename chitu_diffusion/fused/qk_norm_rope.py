"""Wan self-attention's query/key preparation in one pass: RMSNorm across heads, then interleaved RoPE.

Compiled, inductor makes this one reduction kernel per tensor, but it runs at about a fifth of memory speed:
13 ms of a 453 ms bf16 forward on an H200 (bench/results/profile_cdt_h200.json, kernel
`triton_red_fused__fused_rms_norm_..._unbind_view`), for a pass that reads and writes each (tokens, 1536) tensor
once. Here a Triton program owns a few whole rows (all heads of a token), so the row's mean square, the scaling
and the rotation happen in registers, and loads and stores stay contiguous.

Rounding follows the unfused modules: the norm's output is rounded to the model dtype (what `torch.nn.RMSNorm`
returns), RoPE runs in fp32 on that (Wan's freqs are fp32) and is rounded once at the end. Off CUDA, and for
anything but Wan's shapes, the same function runs as the modules.
"""

from __future__ import annotations

import functools

import torch


def apply_rotary(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Wan's interleaved RoPE. x: (B, L, H, D); freqs: (1, L, 1, D)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)  # (B, L, H, D/2) each
    cos, sin = freqs_cos[..., 0::2], freqs_sin[..., 1::2]
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, L, H, D/2, 2)
    return rotated.flatten(-2).type_as(x)


def norm_rope_reference(
    x: torch.Tensor, norm: torch.nn.Module, heads: int, freqs: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    """(B, L, H*D) -> (B, L, H, D): `norm` (RMSNorm over H*D), split heads, Wan's interleaved RoPE."""
    x = norm(x).unflatten(2, (heads, -1))
    return x if freqs is None else apply_rotary(x, *freqs)


@functools.cache
def _triton_norm_rope(rows_per_program: int = 2, num_warps: int = 4):
    """The fused kernel's launcher (Triton imported only where it runs; one launcher shared by every block, so
    compiled blocks see one kernel object). A program loads `rows_per_program` rows as (rows, heads, head_dim)
    tiles, heads padded to a power of two and masked."""
    import triton
    import triton.language as tl

    @triton.jit
    def norm_rope_rows(  # Triton's compile-time constants are upper case
        x_ptr,
        weight_ptr,
        cos_ptr,
        sin_ptr,
        out_ptr,
        n_rows,
        seq_len,
        heads,
        eps,
        x_stride,
        out_stride,
        freqs_stride,
        ROWS: tl.constexpr,  # noqa: N803
        HEADS: tl.constexpr,  # noqa: N803  heads rounded up to a power of two
        HEAD_DIM: tl.constexpr,  # noqa: N803
    ):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # (R,)
        head = tl.arange(0, HEADS)  # (Hp,)
        dim = tl.arange(0, HEAD_DIM)  # (D,)
        channel = head[None, :, None] * HEAD_DIM + dim[None, None, :]  # (1, Hp, D)
        mask = (rows[:, None, None] < n_rows) & (head[None, :, None] < heads)  # (R, Hp, 1)
        x = tl.load(x_ptr + rows[:, None, None] * x_stride + channel, mask=mask, other=0.0).to(tl.float32)
        mean_square = tl.sum(tl.sum(x * x, axis=2), axis=1) / (heads * HEAD_DIM)  # (R,)
        weight = tl.load(weight_ptr + channel, mask=head[None, :, None] < heads, other=0.0).to(tl.float32)
        normed = (x * tl.rsqrt(mean_square + eps)[:, None, None] * weight).to(out_ptr.dtype.element_ty)
        x1, x2 = tl.split(tl.reshape(normed.to(tl.float32), (ROWS, HEADS, HEAD_DIM // 2, 2)))  # (R, Hp, D/2)
        # Wan's freqs hold each value twice (once per pair member): cos at even, sin at odd positions
        pair = tl.arange(0, HEAD_DIM // 2)
        position = (rows % seq_len)[:, None] * freqs_stride + 2 * pair[None, :]  # (R, D/2)
        cos = tl.load(cos_ptr + position, mask=(rows < n_rows)[:, None], other=0.0)[:, None, :]
        sin = tl.load(sin_ptr + position + 1, mask=(rows < n_rows)[:, None], other=0.0)[:, None, :]
        rotated = tl.reshape(tl.join(x1 * cos - x2 * sin, x1 * sin + x2 * cos), (ROWS, HEADS, HEAD_DIM))
        tl.store(
            out_ptr + rows[:, None, None] * out_stride + channel,
            rotated.to(out_ptr.dtype.element_ty),
            mask=mask,
        )

    def launch(x: torch.Tensor, weight: torch.Tensor, eps: float, heads: int, cos: torch.Tensor, sin: torch.Tensor):
        batch, seq_len, channels = x.shape  # rows of x are x.stride(1) apart (a slice of a fused QKV output too)
        out = torch.empty((batch * seq_len, channels), dtype=x.dtype, device=x.device)
        norm_rope_rows[(triton.cdiv(batch * seq_len, rows_per_program),)](
            x,
            weight,
            cos,
            sin,
            out,
            batch * seq_len,
            seq_len,
            heads,
            eps,
            x.stride(1),
            out.stride(0),
            cos.stride(1),
            ROWS=rows_per_program,
            HEADS=triton.next_power_of_2(heads),
            HEAD_DIM=channels // heads,
            num_warps=num_warps,
        )
        return out.view(batch, seq_len, heads, channels // heads)

    return launch


def fusable(x: torch.Tensor, norm: torch.nn.Module, heads: int, freqs) -> bool:
    """Whether the kernel computes exactly what the modules would for these inputs."""
    return (
        x.is_cuda
        and x.dim() == 3
        and x.stride(-1) == 1
        and x.stride(0) == x.shape[1] * x.stride(1)
        and isinstance(norm, torch.nn.RMSNorm)
        and norm.weight is not None
        and freqs is not None
        and all(f.dtype == torch.float32 and f.dim() == 4 and f.shape[1] == x.shape[1] for f in freqs)
        and freqs[0].stride() == freqs[1].stride()
        and freqs[0].stride(3) == 1
        and x.shape[2] % heads == 0
        and (x.shape[2] // heads) & (x.shape[2] // heads - 1) == 0  # head_dim a power of two
    )


@torch.library.custom_op("chitu::norm_rope", mutates_args=())
def _fused_norm_rope(
    x: torch.Tensor, weight: torch.Tensor, eps: float, heads: int, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor
) -> torch.Tensor:
    """The kernel as an operator torch.compile keeps whole: dynamo cannot trace every Triton's launcher (on the
    H200 image's torch 2.11 it stopped at `triton._C.libtriton.getenv_bool`, which breaks the block's graph)."""
    return _triton_norm_rope()(x, weight, eps, heads, freqs_cos, freqs_sin)


@_fused_norm_rope.register_fake
def _(x, weight, eps, heads, freqs_cos, freqs_sin):
    batch, seq_len, channels = x.shape
    return x.new_empty((batch, seq_len, heads, channels // heads))


def norm_rope(
    x: torch.Tensor, norm: torch.nn.Module, heads: int, freqs: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    """(B, L, H*D) -> (B, L, H, D): RMSNorm across heads then RoPE, fused on CUDA (see the module docstring)."""
    if not fusable(x, norm, heads, freqs):
        return norm_rope_reference(x, norm, heads, freqs)
    eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
    return _fused_norm_rope(x, norm.weight, eps, heads, *freqs)
