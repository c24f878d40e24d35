"""The FP8 paths compute the function they claim, on CPU: the reference/fallback math of what runs on Hopper.

The Hopper kernels themselves (FA3 FP8, row-wise `torch._scaled_mm`) need the GPU; bench/bench_e2e.py checks them
against these same references on the device. Tolerances: e4m3 rounds each element to within 2^-4 relative, so
one FP8 GEMM or attention of random data lands at a few percent rel-L2 against exact math, and the fallback
equals the dequantise-then-compute definition to fp32 rounding.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from chitu_diffusion.models.random_init import TINY_TRANSFORMER, build_transformer
from chitu_diffusion.precision.apply import apply_precision
from chitu_diffusion.precision.fp8_attention import fp8_attention_kernel, fp8_attention_reference, smooth_keys
from chitu_diffusion.precision.fp8_ffn import Fp8FeedForward, gelu_quantize_reference
from chitu_diffusion.precision.fp8_linear import Fp8Linear
from chitu_diffusion.precision.fp8_scaling import E4M3_MAX, dequantize, quantize


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def exact_attention(q, k, v):  # (B, L, H, D)
    out = F.scaled_dot_product_attention(*(x.double().transpose(1, 2) for x in (q, k, v)))
    return out.transpose(1, 2)


def test_quantize_keeps_each_element_within_e4m3_rounding():
    x = torch.randn(64, 256) * torch.logspace(-3, 3, 64).unsqueeze(1)  # rows of very different magnitude
    x8, scale = quantize(x, (-1,))
    assert scale.shape == (64, 1)
    assert torch.allclose(x8.float().abs().amax(dim=1), torch.full((64,), E4M3_MAX))
    back = dequantize(x8, scale)
    normal = x.abs() > scale * 2**-6  # e4m3's normal range relative to each row's scale
    assert ((back - x).abs()[normal] <= x.abs()[normal] * 2**-4).all()


def test_quantize_zeros_gives_zeros_not_nan():
    x8, scale = quantize(torch.zeros(4, 8), (-1,))
    assert torch.equal(dequantize(x8, scale), torch.zeros(4, 8))


def test_smoothing_keys_leaves_attention_unchanged():
    q, k, v = (torch.randn(2, 96, 3, 16, dtype=torch.float64) for _ in range(3))
    k = k + 5.0 * torch.randn(1, 1, 3, 16, dtype=torch.float64)  # a shared offset per head, as RoPE'd keys carry
    assert rel_l2(exact_attention(q, smooth_keys(k), v), exact_attention(q, k, v)) < 1e-12


def test_fp8_attention_reference_is_close_to_exact_and_smoothing_helps():
    torch.manual_seed(0)
    q, v = torch.randn(1, 256, 4, 64), torch.randn(1, 256, 4, 64)
    k = torch.randn(1, 256, 4, 64) + 8.0 * torch.randn(1, 1, 4, 64)
    exact = exact_attention(q, k, v)
    smoothed_error = rel_l2(fp8_attention_reference(q, k, v), exact)
    # Random values averaged over 256 keys make a small output, so its relative error is large (4.8% here).
    assert smoothed_error < 0.06
    # Without smoothing the keys' offset sets their scale and the per-token part loses resolution.
    unsmoothed = F.scaled_dot_product_attention(
        *(dequantize(*quantize(x, (1, 3))).transpose(1, 2) for x in (q, k, v)), scale=1 / math.sqrt(64)
    ).transpose(1, 2)
    assert smoothed_error < rel_l2(unsmoothed, exact) / 3  # 21.9% without smoothing


def test_fp8_attention_kernel_off_hopper_is_the_reference():
    kernel = fp8_attention_kernel(torch.device("cpu"))
    assert kernel.name == "fp8-reference"
    q, k, v = (torch.randn(1, 16, 2, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    assert torch.equal(kernel(q, k, v), fp8_attention_reference(q, k, v))


@pytest.mark.parametrize("bias", [True, False])
def test_fp8_linear_is_the_dequantised_linear_and_close_to_bf16_math(bias):
    torch.manual_seed(0)
    linear = torch.nn.Linear(128, 96, bias=bias)
    x = torch.randn(3, 40, 128)
    fp8 = Fp8Linear(linear)
    out = fp8(x)
    assert out.shape == (3, 40, 96) and out.dtype == x.dtype
    x8, x_scale = quantize(x.reshape(-1, 128), (-1,))
    weight = dequantize(fp8.weight8, fp8.weight_scale.reshape(-1, 1))
    definition = dequantize(x8, x_scale) @ weight.t() + (linear.bias if bias else 0)
    assert rel_l2(out.reshape(-1, 96), definition) < 1e-6
    assert rel_l2(out, linear(x)) < 0.05


def test_apply_fp8_swaps_every_block_linear_and_restore_puts_them_back():
    torch.manual_seed(0)
    transformer = build_transformer(TINY_TRANSFORMER)
    originals = {name: module for name, module in transformer.blocks.named_modules() if type(module) is torch.nn.Linear}
    latents = torch.randn(1, 16, 3, 16, 16)
    text = torch.randn(1, 8, TINY_TRANSFORMER["text_dim"])
    timestep = torch.tensor([500])
    with torch.no_grad():
        reference = transformer(latents, timestep, text, return_dict=False)[0]
        plan = apply_precision(transformer.blocks, "fp8", torch.device("cpu"))
        assert plan.attention_kernel == fp8_attention_kernel(torch.device("cpu"))
        swapped = dict(transformer.blocks.named_modules())
        assert all(isinstance(block.ffn, Fp8FeedForward) for block in transformer.blocks)
        assert all(isinstance(swapped[name], Fp8Linear) for name in originals if ".ffn." not in f".{name}")
        fp8_out = transformer(latents, timestep, text, return_dict=False)[0]
        plan.restore()
        restored = transformer(latents, timestep, text, return_dict=False)[0]
    assert all(dict(transformer.blocks.named_modules())[name] is module for name, module in originals.items())
    assert 0 < rel_l2(fp8_out, reference) < 0.1
    assert torch.equal(restored, reference)


def test_bf16_changes_nothing_and_unknown_precision_is_refused():
    transformer = build_transformer(TINY_TRANSFORMER)
    plan = apply_precision(transformer.blocks, "bf16", torch.device("cpu"))
    assert plan.swapped == [] and plan.attention_kernel is None
    with pytest.raises(ValueError, match="bf16, fp8"):
        apply_precision(transformer.blocks, "int4", torch.device("cpu"))


def test_fp8_feed_forward_is_up_gemm_gelu_quantise_down_gemm():
    from diffusers.models.attention import FeedForward

    torch.manual_seed(0)
    ffn = FeedForward(64, inner_dim=160, activation_fn="gelu-approximate").eval()
    x = torch.randn(2, 24, 64)
    fp8 = Fp8FeedForward(ffn)
    with torch.no_grad():
        out = fp8(x)
        hidden = fp8.up(x.reshape(-1, 64))
        h8, h_scale = quantize(F.gelu(hidden, approximate="tanh"), (-1,))
        definition = dequantize(h8, h_scale) @ dequantize(fp8.down.weight8, fp8.down.weight_scale.reshape(-1, 1)).t()
        definition = definition + ffn.net[2].bias
        reference = ffn(x)
    assert rel_l2(out.reshape(-1, 64), definition) < 1e-6
    assert rel_l2(out, reference) < 0.06
    assert torch.equal(gelu_quantize_reference(hidden)[1], h_scale)
    with pytest.raises(ValueError, match="GELU"):
        Fp8FeedForward(FeedForward(64, inner_dim=160, activation_fn="gelu"))
