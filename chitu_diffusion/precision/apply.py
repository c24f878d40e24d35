"""Put a transformer into a precision once, at load: which modules change is data (the adapter's blocks).

`fp8`: each block's GELU feed-forward becomes an `Fp8FeedForward` (FP8 GEMMs around one fused GELU + quantise
kernel), every other `nn.Linear` inside the repeated blocks an `Fp8Linear` (attention projections,
cross-attention), and the self-attention kernel becomes `fp8_attention_kernel(device)`. The patch embedding,
time/text embedders and the output projection run once per forward on few tokens or few channels and stay bf16, as do
all norms. `bf16` changes nothing. `PrecisionPlan.restore()` puts the bf16 layers back (benchmarks compare both
precisions on one loaded model). `fused_norms` (staged, off in the engine until a GPU measures it: fp8_norm.py)
also makes each block a `FusedNormWanBlock`, whose norms quantise their rows once for the linears they feed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from chitu_diffusion.attention.kernels import Kernel
from chitu_diffusion.precision import PRECISIONS
from chitu_diffusion.precision.fp8_attention import fp8_attention_kernel
from chitu_diffusion.precision.fp8_block import FusedNormWanBlock, fusable_block
from chitu_diffusion.precision.fp8_ffn import Fp8FeedForward, is_gelu_tanh_feed_forward
from chitu_diffusion.precision.fp8_linear import Fp8Linear


@dataclass
class PrecisionPlan:
    """What `apply_precision` changed: the swapped linears and the attention kernel to install (None: keep)."""

    precision: str
    attention_kernel: Kernel | None = None
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = field(default_factory=list)
    #: blocks whose class became `FusedNormWanBlock`, with their class before
    reclassed: list[tuple[torch.nn.Module, type]] = field(default_factory=list)

    def restore(self) -> None:
        for parent, name, linear in self.swapped:
            setattr(parent, name, linear)
        for block, cls in self.reclassed:
            block.__class__ = cls
        self.swapped.clear()
        self.reclassed.clear()

    @contextmanager
    def bf16_linears(self) -> Iterator[None]:
        """The original bf16 linears (and block forwards) in place for a while (a reference run), then the FP8
        ones again."""
        fp8 = [(parent, name, getattr(parent, name)) for parent, name, _ in self.swapped]
        fp8_classes = [(block, type(block)) for block, _ in self.reclassed]
        for parent, name, linear in self.swapped:
            setattr(parent, name, linear)
        for block, cls in self.reclassed:
            block.__class__ = cls
        try:
            yield
        finally:
            for parent, name, module in fp8:
                setattr(parent, name, module)
            for block, cls in fp8_classes:
                block.__class__ = cls


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"engine precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def apply_precision(
    blocks: torch.nn.ModuleList, precision: str, device: torch.device, fused_norms: bool = False
) -> PrecisionPlan:
    """Swap the blocks' linear layers for `precision` (in place) and say which attention kernel goes with it."""
    check_precision(precision)
    plan = PrecisionPlan(precision)
    if precision == "bf16":
        return plan
    for block in blocks:
        for name, child in list(block.named_children()):  # the feed-forward as a whole: its middle is fused
            if is_gelu_tanh_feed_forward(child):
                setattr(block, name, Fp8FeedForward(child))
                plan.swapped.append((block, name, child))
        for parent in list(block.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is torch.nn.Linear:
                    setattr(parent, name, Fp8Linear(child))
                    plan.swapped.append((parent, name, child))
        if fused_norms and fusable_block(block):
            plan.reclassed.append((block, type(block)))
            block.__class__ = FusedNormWanBlock
    plan.attention_kernel = fp8_attention_kernel(device)
    return plan
