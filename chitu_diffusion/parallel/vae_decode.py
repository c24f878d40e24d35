"""VAE decode split across the ranks of a gang: each rank decodes one strip of the latents (with a halo of
neighbouring latents for context), keeps its own part of the pixels, and the strips are gathered.

Wan's VAE decoder is causal in time but not local in space (3x3 convolutions stacked deep, and a per-frame
attention in its middle block), so a strip's pixels depend on every latent of the frame: decoding strips is an
approximation, like diffusers' own tiled decoding. The halo bounds it: a strip sees `halo` latent columns beyond
its edges (8 pixels each), and the cut lands where both sides saw the same context. The bench reports the rel-L2
and PSNR of the stitched video against a whole decode, and `halo >= size` makes every rank decode the whole frame
(exact, no speed-up). The split runs along the longer latent axis (width for landscape video), in BF16 as loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

#: Wan2.1's VAE upsamples latents 8x in height and width.
SPATIAL_SCALE = 8
#: latent columns of context on each side of a strip (64 pixels)
DEFAULT_HALO = 8

DecodeFn = Callable[[torch.Tensor], torch.Tensor]  # (1, z_dim, F', h, w) latents -> (1, 3, F, 8h, 8w) pixels


@dataclass(frozen=True)
class Strip:
    """One rank's share along the split axis, in latent units: decode [start, stop), keep [keep_start, keep_stop)."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int


def strips(size: int, parts: int, halo: int) -> list[Strip]:
    """`parts` strips covering 0..size, the first `size % parts` one latent wider, each widened by `halo`."""
    if not 1 <= parts <= size:
        raise ValueError(f"cannot split {size} latent columns into {parts} strips")
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    base, extra = divmod(size, parts)
    result, keep_start = [], 0
    for index in range(parts):
        keep_stop = keep_start + base + (index < extra)
        result.append(Strip(max(0, keep_start - halo), min(size, keep_stop + halo), keep_start, keep_stop))
        keep_start = keep_stop
    return result


def split_axis(latents: torch.Tensor) -> int:
    """The longer spatial axis of (B, C, F', H', W') latents: 3 (height) or 4 (width)."""
    return 4 if latents.shape[4] >= latents.shape[3] else 3


def decode_strip(decode: DecodeFn, latents: torch.Tensor, strip: Strip, axis: int) -> torch.Tensor:
    """Pixels of `strip`'s kept part: decode its latents with the halo, then crop the halo's pixels off."""
    pixels = decode(latents.narrow(axis, strip.start, strip.stop - strip.start))  # (1, 3, F, ., .)
    offset = (strip.keep_start - strip.start) * SPATIAL_SCALE
    return pixels.narrow(axis, offset, (strip.keep_stop - strip.keep_start) * SPATIAL_SCALE)


def parallel_decode(
    decode: DecodeFn, latents: torch.Tensor, group: dist.ProcessGroup | None, halo: int = DEFAULT_HALO
) -> torch.Tensor:
    """The whole video (1, 3, F, H, W) on every rank of `group`, each rank having decoded one strip.

    `latents` must be the same on every rank (they are: every rank of a gang ends the loop with them). A group of
    one (or None) decodes everything here without strips."""
    world = 1 if group is None else dist.get_world_size(group)
    if world == 1:
        return decode(latents)
    axis = split_axis(latents)
    plan = strips(latents.shape[axis], world, halo)
    mine = decode_strip(decode, latents, plan[dist.get_rank(group)], axis).contiguous()
    # all_gather needs equal shapes: pad every strip to the widest, then cut each back to its own width.
    widest = max(s.keep_stop - s.keep_start for s in plan) * SPATIAL_SCALE
    padded = torch.nn.functional.pad(mine, _pad_last_dims(axis, widest - mine.shape[axis]))
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded, group=group)
    pieces = [
        part.narrow(axis, 0, (s.keep_stop - s.keep_start) * SPATIAL_SCALE)
        for part, s in zip(gathered, plan, strict=True)
    ]
    return torch.cat(pieces, dim=axis)


def _pad_last_dims(axis: int, amount: int) -> tuple[int, ...]:
    """F.pad's argument that appends `amount` at the end of `axis` (3 or 4) of a 5-d tensor."""
    return (0, amount) if axis == 4 else (0, 0, 0, amount)
