"""fused/qkv_projection.py: one GEMM for q/k/v (and cross-attention's k/v) computes the same block, shares the
separate layers' memory, and can be undone."""

from __future__ import annotations

import torch

from chitu_diffusion.fused.qkv_projection import fuse_qkv_projections
from chitu_diffusion.models.random_init import build_random_pipeline


def block_inputs(transformer, generator):
    config = transformer.config
    channels = config.num_attention_heads * config.attention_head_dim
    hidden = torch.randn(2, 24, channels, generator=generator)
    text = torch.randn(2, 7, channels, generator=generator)
    temb = torch.randn(2, 6, channels, generator=generator)
    head_dim = config.attention_head_dim
    angles = torch.randn(1, 24, 1, head_dim // 2, generator=generator).repeat_interleave(2, dim=-1)
    return hidden, text, temb, (angles.cos(), angles.sin())


def parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes of the distinct storages behind `module`'s parameters (views of one storage count once)."""
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage() for p in module.parameters()}
    return sum(storage.nbytes() for storage in storages.values())


def test_fused_projections_compute_the_same_block_in_the_same_memory():
    transformer = build_random_pipeline().transformer.float()
    block = transformer.blocks[0]
    inputs = block_inputs(transformer, torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = block(*inputs)
    bytes_before = parameter_bytes(block)

    assert fuse_qkv_projections(transformer.blocks, ("attn1", "attn2")) == 2 * len(transformer.blocks)
    self_attn, cross_attn = block.attn1, block.attn2
    assert self_attn.fused_projections and cross_attn.fused_projections
    assert self_attn.to_qkv.out_features == 3 * self_attn.to_q.out_features
    assert cross_attn.to_kv.out_features == 2 * cross_attn.to_k.out_features
    # the separate layers are views of the stacked one, in q, k, v order
    for attention, fused, parts in ((self_attn, self_attn.to_qkv, "qkv"), (cross_attn, cross_attn.to_kv, "kv")):
        rows = fused.weight.shape[0] // len(parts)
        for index, part in enumerate(parts):
            layer = getattr(attention, f"to_{part}")
            assert layer.weight.untyped_storage().data_ptr() == fused.weight.untyped_storage().data_ptr()
            assert torch.equal(layer.weight, fused.weight[index * rows : (index + 1) * rows])
            assert torch.equal(layer.bias, fused.bias[index * rows : (index + 1) * rows])
    assert parameter_bytes(block) == bytes_before  # no extra memory

    with torch.no_grad():
        fused_out = block(*inputs)
        assert (fused_out - reference).norm() / reference.norm() < 1e-6
        self_attn.unfuse_projections()
        cross_attn.unfuse_projections()
        assert not hasattr(self_attn, "to_qkv")
        assert (block(*inputs) - reference).norm() / reference.norm() < 1e-6
