"""The fused gated residual + LayerNorm + modulation + FP8 quantise kernel (precision/fp8_norm_triton.py) computes
`norm_quantize_reference`, for each of the three ways a Wan block uses it, and the reference computes what
diffusers' WanTransformerBlock feeds its linears.

The kernel runs on the CPU through Triton's interpreter, rounding as the GPU does (triton_interpreter.py). Stated
tolerance: the residual stream is bit-equal (one fp32 add and one rounding, as in torch); the mean and variance
sum in another order than torch's LayerNorm, an fp32 ulp or so, which moves an e4m3 code one step only where
the value sits on a rounding boundary: at most 0.2% of the codes, one step each, and scales within 1e-5.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.normalization import FP32LayerNorm
from triton_interpreter import interpreted

from chitu_diffusion.precision.fp8_norm import norm_quantize_reference
from chitu_diffusion.precision.fp8_scaling import dequantize

INTERPRETED_CHECK = r"""
import json
import torch
from chitu_diffusion.precision.fp8_norm import (
    _fused_norm_quantize, _fused_residual_norm_quantize, norm_quantize_reference, triton_norm_quantize
)

torch.manual_seed(0)
batch, tokens, dim = 2, 7, 96  # 14 rows over programs of 4, a row padded from 96 to 128
x = (torch.randn(batch, tokens, dim) * 2 + 0.5).bfloat16()
delta = torch.randn(batch, tokens, dim).bfloat16()
gate = torch.randn(batch, 1, dim)
scale, shift = torch.randn(batch, 1, dim) * 0.3, torch.randn(batch, 1, dim) * 0.3
per_token_scale, per_token_shift = torch.randn(batch, tokens, dim) * 0.3, torch.randn(batch, tokens, dim) * 0.3
weight, bias = torch.randn(dim) * 0.2 + 1, torch.randn(dim) * 0.1
uses = {
    "norm1_modulated": dict(scale=scale, shift=shift),
    "norm2_gated_residual_affine": dict(delta=delta, gate=gate, weight=weight, bias=bias),
    "norm3_residual_modulated": dict(delta=delta, scale=scale, shift=shift),
    "per_token_modulation": dict(scale=per_token_scale, shift=per_token_shift),  # Wan2.2's (B, L, C) temb
}
results = {}
fused_fn = triton_norm_quantize(4, 4)
for name, kwargs in uses.items():
    stream, codes, scales = fused_fn(x, eps=1e-6, **kwargs)
    ref_stream, ref_codes, ref_scales = norm_quantize_reference(x, eps=1e-6, **kwargs)
    step = (codes.float() - ref_codes.float()).abs() / ref_codes.float().abs().clamp(min=2**-9)
    results[name] = {
        "stream_equal": torch.equal(stream, ref_stream),
        "shapes": [list(codes.shape), list(scales.shape), str(codes.dtype)],
        "codes_differing": (codes.float() != ref_codes.float()).float().mean().item(),
        "max_step": step.max().item(),
        "scale_rel": ((scales - ref_scales).abs() / ref_scales).max().item(),
    }
# the operators compiled graphs hold: their fakes agree with the kernel, and they return the kernel's results
kwargs = uses["norm3_residual_modulated"]
op_args = (x, delta, None, None, None, kwargs["scale"], kwargs["shift"], 1e-6)
checks = ("test_schema", "test_faketensor")
torch.library.opcheck(_fused_residual_norm_quantize, op_args, test_utils=checks)
torch.library.opcheck(_fused_norm_quantize, (x, weight, bias, scale, shift, 1e-6), test_utils=checks)
launched = fused_fn(*op_args)
bits = lambda t: t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t
results["operators_equal_the_launcher"] = all(
    torch.equal(bits(a), bits(b)) for a, b in zip(_fused_residual_norm_quantize(*op_args), launched)
)
print(json.dumps(results))
"""


def test_the_kernel_computes_the_reference_for_every_use():
    results = interpreted(INTERPRETED_CHECK)
    assert results.pop("operators_equal_the_launcher") is True
    assert set(results) == {
        "norm1_modulated",
        "norm2_gated_residual_affine",
        "norm3_residual_modulated",
        "per_token_modulation",
    }
    for case in results.values():
        assert case["stream_equal"] is True, results
        assert case["shapes"] == [[14, 96], [14, 1], "torch.float8_e4m3fn"], results
        assert case["codes_differing"] <= 0.002, results
        assert case["max_step"] <= 2**-3, results  # one e4m3 step (2^-3 relative at most), never more
        assert case["scale_rel"] < 1e-5, results


def test_the_reference_is_what_the_wan_block_feeds_its_linears():
    """The three uses against diffusers' own expressions (WanTransformerBlock.forward, Wan2.1) and modules: the
    only difference allowed is the bf16 rounding of the normed rows that the bf16 path applies before quantising."""
    torch.manual_seed(1)
    dim = 64
    hidden = torch.randn(2, 5, dim).bfloat16()
    attn_output = torch.randn(2, 5, dim).bfloat16()
    shift_msa, scale_msa, gate_msa = (torch.randn(2, 1, dim) * 0.3 for _ in range(3))
    norm1, norm3 = FP32LayerNorm(dim, 1e-6, elementwise_affine=False), FP32LayerNorm(dim, 1e-6, False)
    norm2 = FP32LayerNorm(dim, 1e-6, elementwise_affine=True)
    with torch.no_grad():
        norm2.weight.normal_(1, 0.2)
        norm2.bias.normal_(0, 0.1)
    block = {
        "norm1": (norm1(hidden.float()) * (1 + scale_msa) + shift_msa, hidden),
        "norm2": (
            norm2((residual := (hidden.float() + attn_output * gate_msa).type_as(hidden)).float()),
            residual,
        ),
        "norm3": (norm3((residual3 := hidden + attn_output).float()) * (1 + scale_msa) + shift_msa, residual3),
    }
    ours = {
        "norm1": norm_quantize_reference(hidden, scale=scale_msa, shift=shift_msa),
        "norm2": norm_quantize_reference(hidden, attn_output, gate_msa, norm2.weight.detach(), norm2.bias.detach()),
        "norm3": norm_quantize_reference(hidden, attn_output, scale=scale_msa, shift=shift_msa),
    }
    for name, (normed, stream) in block.items():
        ours_stream, codes, scales = ours[name]
        assert torch.equal(ours_stream, stream), name
        rows = normed.reshape(-1, dim)
        values = dequantize(codes, scales)
        # what the FP8 linear quantises from: the rows rounded to bf16, then e4m3 (2^-4 relative at most)
        assert (values - rows).abs().max() <= rows.abs().amax(dim=1, keepdim=True).max() * 2**-4, name
        assert F.mse_loss(values, rows) / rows.pow(2).mean() < 2**-8, name


def test_the_launcher_refuses_half_a_modulation():
    from chitu_diffusion.precision.fp8_norm_triton import norm_quantize

    x = torch.zeros(1, 2, 8).bfloat16()
    with pytest.raises(ValueError, match="both scale and shift"):
        norm_quantize(x, scale=torch.zeros(1, 1, 8), rows_per_program=1, num_warps=1)
