"""The GELU-epilogue feed-forward computes diffusers' FeedForward; on CPU exactly (same ops), on CUDA the
bench compares it (bench/profile_forward.py, variant chitu-gelu)."""

import pytest
import torch
from diffusers.models.attention import FeedForward

from chitu_diffusion.fused.gelu_epilogue import GeluEpilogueLinear, fuse_gelu_epilogues


class Block(torch.nn.Module):
    def __init__(self, activation: str = "gelu-approximate"):
        super().__init__()
        self.ffn = FeedForward(64, inner_dim=160, activation_fn=activation)


def test_swapped_feed_forward_matches_and_keeps_the_original():
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList([Block(), Block()])
    x = torch.randn(2, 7, 64)
    with torch.no_grad():
        reference = [block.ffn(x) for block in blocks]
        swapped = fuse_gelu_epilogues(blocks)
        fused = [block.ffn(x) for block in blocks]
    assert [type(block.ffn.net[0]) for block in blocks] == [GeluEpilogueLinear, GeluEpilogueLinear]
    assert all(torch.equal(a, b) for a, b in zip(fused, reference, strict=True))
    for parent, index, original in swapped:
        parent[int(index)] = original
    assert all(type(block.ffn.net[0]).__name__ == "GELU" for block in blocks)


def test_exact_gelu_is_not_fused():
    blocks = torch.nn.ModuleList([Block("gelu")])
    assert fuse_gelu_epilogues(blocks) == []
    with pytest.raises(ValueError, match="tanh"):
        GeluEpilogueLinear(blocks[0].ffn.net[0])
