"""A Wan block whose three norms each run as one fused pass that also quantises the rows for the FP8 linears they
feed (fp8_norm.py): norm1 -> self-attention q/k/v, gated residual + norm2 -> cross-attention q, residual + norm3
-> the feed-forward's up projection. Each norm's rows are quantised once, not once per linear.

The forward is diffusers' `WanTransformerBlock.forward` (diffusers 0.42) with those three steps swapped, and the
swap is of the block's class, so compiled code tells the two forwards apart by type (compile_cache.py). Only
blocks whose cross-attention norm is an affine LayerNorm (Wan2.1 and 2.2) are swapped.
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_wan import WanTransformerBlock

from chitu_diffusion.precision.fp8_norm import norm_quantize


class FusedNormWanBlock(WanTransformerBlock):
    def forward(
        self,
        hidden_states: torch.Tensor,  # (B, L, C)
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        rotary_emb: torch.Tensor,
    ) -> torch.Tensor:
        if temb.ndim == 4:  # (B, L, 6, C): Wan2.2 TI2V's per-token modulation
            modulation = (self.scale_shift_table.unsqueeze(0) + temb.float()).chunk(6, dim=2)
            modulation = [m.squeeze(2) for m in modulation]
        else:  # (B, 6, C)
            modulation = (self.scale_shift_table + temb.float()).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = modulation

        _, rows = norm_quantize(hidden_states, scale=scale_msa, shift=shift_msa, eps=self.norm1.eps)
        attn_output = self.attn1(rows, None, None, rotary_emb)

        affine = (self.norm2.weight, self.norm2.bias)
        hidden_states, rows = norm_quantize(hidden_states, attn_output, gate_msa, *affine, eps=self.norm2.eps)
        attn_output = self.attn2(rows, encoder_hidden_states, None, None)

        hidden_states, rows = norm_quantize(
            hidden_states, attn_output, scale=c_scale_msa, shift=c_shift_msa, eps=self.norm3.eps
        )
        ff_output = self.ffn(rows)
        return (hidden_states.float() + ff_output.float() * c_gate_msa).type_as(hidden_states)


def fusable_block(block: torch.nn.Module) -> bool:
    """A plain diffusers Wan block with an affine LayerNorm before its cross-attention."""
    norm2 = getattr(block, "norm2", None)
    return type(block) is WanTransformerBlock and isinstance(norm2, torch.nn.LayerNorm) and norm2.elementwise_affine
