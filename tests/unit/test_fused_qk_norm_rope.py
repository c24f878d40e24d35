"""The fused RMSNorm + RoPE kernel (chitu_diffusion/fused/qk_norm_rope.py) computes what Wan's modules compute.

The Triton kernel runs here on the CPU through Triton's interpreter, rounding as the GPU does
(triton_interpreter.py). The stated tolerance is one bf16 ulp (2^-7 relative) of the rotated pair's length per
element: the kernel's mean square sums in another order, which can move the norm's rounding to nearest by one
ulp at a tie (here the outputs are bit-equal); any mistake in the indexing, the mean over heads, the pairing of
RoPE or the freqs' strides is many ulps off.
"""

from __future__ import annotations

import pytest
import torch
from triton_interpreter import interpreted

from chitu_diffusion.fused.qk_norm_rope import fusable, norm_rope, norm_rope_reference

INTERPRETED_CHECK = r"""
import json, torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
from chitu_diffusion.fused.qk_norm_rope import _fused_norm_rope, _triton_norm_rope, norm_rope_reference

torch.manual_seed(0)
results = {}
for heads, head_dim, batch in ((3, 16, 2), (4, 32, 1)):
    channels = heads * head_dim
    norm = torch.nn.RMSNorm(channels, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.2)
    norm = norm.to(torch.bfloat16)
    freqs = WanRotaryPosEmbed(head_dim, (1, 2, 2), 1024)(torch.randn(1, 16, 3, 4, 6))
    tokens = freqs[0].shape[1]
    qkv = torch.randn(batch, tokens, 3 * channels).bfloat16() * 3  # a fused projection's output: k is a slice
    x = qkv[:, :, channels : 2 * channels]
    reference = norm_rope_reference(x, norm, heads, freqs).float()
    fused = _triton_norm_rope()(x, norm.weight, norm.eps, heads, *freqs).float()
    # RoPE keeps each pair's length, so an ulp of the normed input is an ulp of that length in the output
    pair_length = reference.unflatten(-1, (-1, 2)).norm(dim=-1).repeat_interleave(2, dim=-1)
    ulps = (fused - reference).abs() / (pair_length * 2**-7)
    results[f"{heads}x{head_dim}"] = {
        "shape": list(fused.shape),
        "max_ulps": ulps.max().item(),
        "rel_l2": ((fused - reference).norm() / reference.norm()).item(),
    }
# the operator torch.compile sees: its fake agrees with the kernel, and a graph holds it whole (no break)
args = (x, norm.weight, norm.eps, heads, *freqs)
torch.library.opcheck(_fused_norm_rope, args, test_utils=("test_schema", "test_faketensor"))
compiled = torch.compile(lambda *a: _fused_norm_rope(*a) * 2, backend="aot_eager", fullgraph=True)
with torch.no_grad():  # as the engine runs: inference only, the operator has no backward
    results["compiled_equal"] = torch.equal(compiled(*args), _fused_norm_rope(*args) * 2)
print(json.dumps(results))
"""


def test_the_kernel_computes_norm_then_rope_within_one_bf16_ulp():
    results = interpreted(INTERPRETED_CHECK)
    assert results["3x16"]["shape"] == [2, 18, 3, 16]  # heads not a power of two: padded and masked
    assert results.pop("compiled_equal") is True
    for case in results.values():
        assert case["max_ulps"] <= 1.0, results
        assert case["rel_l2"] < 2**-8, results


def test_off_cuda_the_modules_run():
    heads, head_dim = 2, 8
    norm = torch.nn.RMSNorm(heads * head_dim, eps=1e-6)
    x = torch.randn(1, 5, heads * head_dim)
    cos, sin = torch.randn(1, 5, 1, head_dim), torch.randn(1, 5, 1, head_dim)
    assert not fusable(x, norm, heads, (cos, sin))
    torch.testing.assert_close(norm_rope(x, norm, heads, (cos, sin)), norm_rope_reference(x, norm, heads, (cos, sin)))
    # without freqs it is the norm with heads split
    torch.testing.assert_close(norm_rope(x, norm, heads, None), norm(x).unflatten(2, (heads, -1)))


@pytest.mark.parametrize(
    ("odd", "fused"),
    [("none", True), ("no_freqs", False), ("layer_norm", False), ("head_dim_not_power_of_two", False)],
)
def test_only_shapes_the_kernel_covers_are_fused(odd, fused):
    heads, head_dim = (2, 12) if odd == "head_dim_not_power_of_two" else (2, 8)
    channels = heads * head_dim
    norm = torch.nn.LayerNorm(channels) if odd == "layer_norm" else torch.nn.RMSNorm(channels)
    x = torch.randn(1, 5, channels)
    freqs = None if odd == "no_freqs" else (torch.randn(1, 5, 1, head_dim), torch.randn(1, 5, 1, head_dim))
    # `fusable` also needs CUDA; pretend the tensor's device is one, to test the shape rules alone
    cuda_like = type("CudaLike", (), {"is_cuda": True, "dim": x.dim, "stride": x.stride, "shape": x.shape})()
    assert fusable(cuda_like, norm, heads, freqs) is fused
