"""VAE decode split exactly across the ranks of a gang: each rank decodes its own slice of the latents along the
longer spatial axis (width for landscape video), and the pixel slices of each latent frame's chunk are gathered
(`pipeline.decode_latent_chunks` with a `SpatialSplit`), so every rank streams the whole video chunk by chunk.

Wan2.1's VAE decoder is local in space except for two kinds of layers, which `split_decoder` makes rank-aware on
the module instances for the time of one decode (and puts back afterwards, also on error):
- convolutions whose zero padding reaches along the split axis (the 3x3x3 `WanCausalConv3d`s, the 3x3 `nn.Conv2d`
  after each 2x upsample): that padding becomes the neighbour ranks' edge columns (the halo, as wide as the
  padding), zeros only at the frame's edges. The swap is on the conv step itself, below diffusers' forward, so the
  halo is exchanged after the causal cache's frames are prepended: every rank caches its own slice, and the cached
  frames get their halo too. 1x1x1 and (3, 1, 1) convs have no padding there and exchange nothing.
- the mid block's per-frame attention (`WanAttentionBlock`, at the latents' resolution, where it is cheap):
  gathers the whole frame, runs, keeps this rank's slice.
Everything else maps a slice onto the same slice: the RMS norms (over channels), SiLU, the clamp, and the
nearest-exact 2x upsampling (output column i reads input column i // 2, and after each upsample every slice starts
at an even column). So the gathered video equals a whole decode up to float rounding (a conv on a narrower input
may pick another algorithm); tests/distributed/test_parallel_decode.py holds them equal.

Each rank decodes 1/world of the columns plus a halo of one column per conv and side: the decode's compute splits
almost evenly; the halos cost 33 small neighbour exchanges per latent frame (one per 3x3 conv of Wan2.1's decoder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan, WanAttentionBlock, WanCausalConv3d
from torch import nn


def slice_sizes(size: int, parts: int) -> list[int]:
    """Columns per rank: `size` split into `parts` slices in rank order, the first `size % parts` one wider."""
    if not 1 <= parts <= size:
        raise ValueError(f"cannot split {size} latent columns into {parts} slices")
    base, extra = divmod(size, parts)
    return [base + (index < extra) for index in range(parts)]


def split_axis(latents: torch.Tensor) -> int:
    """The longer spatial axis of (B, C, F', H', W') latents: 3 (height) or 4 (width)."""
    return 4 if latents.shape[4] >= latents.shape[3] else 3


@dataclass(frozen=True)
class SpatialSplit:
    """Rank `rank` of `group` holds `sizes[rank]` latent columns of `axis` (3 or 4 of (B, C, F, H, W)), right after
    rank - 1's; at every later resolution its slice is as many times wider as the tensor is."""

    group: dist.ProcessGroup | None
    rank: int
    sizes: tuple[int, ...]
    axis: int

    @classmethod
    def of(cls, latents: torch.Tensor, group: dist.ProcessGroup) -> SpatialSplit:
        """This rank's part in decoding (B, C, F', H', W') latents split along their longer spatial axis across
        `group`; the latents must be the same on every rank (they are: a gang ends the denoising loop with them)."""
        axis = split_axis(latents)
        sizes = slice_sizes(latents.shape[axis], dist.get_world_size(group))
        return cls(group, dist.get_rank(group), tuple(sizes), axis)

    @property
    def from_end(self) -> int:
        """The split axis counted from the last: the same in (B, C, F, H, W) and frames-as-batch (B*F, C, H, W)."""
        return 5 - self.axis

    def take(self, latents: torch.Tensor) -> torch.Tensor:
        """This rank's slice of the whole (B, C, F', H', W') latents."""
        return latents.narrow(self.axis, sum(self.sizes[: self.rank]), self.sizes[self.rank])

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The whole of the split axis from every rank's slice `x` (a collective: every rank calls it)."""
        axis = x.dim() - self.from_end
        scale = x.shape[axis] // self.sizes[self.rank]  # 2 ** (upsamples so far): every slice grew alike
        widths = [size * scale for size in self.sizes]
        # all_gather needs equal shapes: pad every slice to the widest, then cut each back to its own width.
        padded = F.pad(x, _pad_end(axis, x.dim(), max(widths) - x.shape[axis])).contiguous()
        parts = [torch.empty_like(padded) for _ in widths]
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([part.narrow(axis, 0, width) for part, width in zip(parts, widths, strict=True)], dim=axis)

    def keep(self, whole: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a tensor covering the whole split axis."""
        axis = whole.dim() - self.from_end
        scale = whole.shape[axis] // sum(self.sizes)
        return whole.narrow(axis, sum(self.sizes[: self.rank]) * scale, self.sizes[self.rank] * scale)

    def with_halo(self, x: torch.Tensor, width: int) -> torch.Tensor:
        """`x` widened by `width` columns on each side of the split axis: the neighbours' edge columns, zeros at the
        frame's edges (a collective between neighbours: every rank calls it)."""
        axis = x.dim() - self.from_end
        columns = (*x.shape[:axis], width, *x.shape[axis + 1 :])
        left, right = x.new_zeros(columns), x.new_zeros(columns)  # stay zeros at the frame's edges
        exchanges = []
        if self.rank > 0:
            exchanges += self._exchange(x.narrow(axis, 0, width), left, self.rank - 1)
        if self.rank < len(self.sizes) - 1:
            exchanges += self._exchange(x.narrow(axis, x.shape[axis] - width, width), right, self.rank + 1)
        for work in dist.batch_isend_irecv(exchanges):
            work.wait()  # on NCCL this orders the current stream after the transfer; the host does not block
        return torch.cat([left, x, right], dim=axis)

    def _exchange(self, send: torch.Tensor, receive: torch.Tensor, peer: int) -> list[dist.P2POp]:
        return [
            dist.P2POp(dist.isend, send.contiguous(), group=self.group, group_peer=peer),
            dist.P2POp(dist.irecv, receive, group=self.group, group_peer=peer),
        ]


@contextmanager
def split_decoder(vae: AutoencoderKLWan, split: SpatialSplit) -> Iterator[None]:
    """Within the block, `vae.decode` of this rank's slice of the latents is its slice of the whole-frame decode;
    every rank of `split.group` must decode its slice of the same latents meanwhile (halos and the attention are
    collectives)."""
    if vae.use_tiling:
        raise ValueError("the split decode needs the whole-frame decode: disable the VAE's tiling")
    with ExitStack() as swaps:
        for module in vae.decoder.modules():
            if isinstance(module, WanCausalConv3d):
                _give_halo(swaps, module, "_padding", split)
            elif type(module) is nn.Conv2d:
                _give_halo(swaps, module, "padding", split)
            elif isinstance(module, WanAttentionBlock):
                swaps.enter_context(_swapped(module, "forward", _on_whole_frame(module.forward, split)))
        yield


def _give_halo(swaps: ExitStack, conv: nn.Conv2d | nn.Conv3d, padding_name: str, split: SpatialSplit) -> None:
    """Swap `conv`'s zero padding along the split axis for the neighbours' columns.

    `padding_name` is where the module keeps the padding it applies: `WanCausalConv3d._padding`, F.pad's order
    (W, W, H, H, 2T, 0), applied before the conv; `nn.Conv2d.padding`, (H, W), applied by the conv step."""
    if conv.padding_mode != "zeros":
        raise ValueError(f"the split decode pads with zeros, not {conv.padding_mode!r}")
    padding = list(getattr(conv, padding_name))
    index = 2 * (split.from_end - 1) if padding_name == "_padding" else len(padding) - split.from_end
    width = padding[index]
    if width == 0:
        return  # 1x1 or (3, 1, 1): nothing crosses a slice's edge
    if padding_name == "_padding":
        padding[index + 1] = 0  # F.pad's (left, right) pair of the split axis
    padding[index] = 0
    conv_step = conv._conv_forward  # (input, weight, bias) -> output: the conv itself, after any padding

    def conv_with_halo(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return conv_step(split.with_halo(x, width), weight, bias)

    swaps.enter_context(_swapped(conv, padding_name, tuple(padding)))
    swaps.enter_context(_swapped(conv, "_conv_forward", conv_with_halo))


def _on_whole_frame(
    forward: Callable[[torch.Tensor], torch.Tensor], split: SpatialSplit
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`forward` run on the whole frame gathered from every rank's slice; returns this rank's slice."""
    return lambda x: split.keep(forward(split.gather(x)))  # (B, C, F, h, w_slice) -> same


@contextmanager
def _swapped(obj: object, name: str, value: object) -> Iterator[None]:
    """`obj.name = value` within the block; then the instance's own attribute again, or none (the class's)."""
    own = vars(obj)
    had, before = name in own, own.get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, before)
        else:
            delattr(obj, name)


def _pad_end(axis: int, dims: int, amount: int) -> tuple[int, ...]:
    """F.pad's argument that appends `amount` at the end of `axis` of a `dims`-d tensor."""
    return (0, 0) * (dims - 1 - axis) + (0, amount)
