"""The FP8 block with fused norms (precision/fp8_block.py) computes what the FP8 block computes, on CPU where the
norms run as `norm_quantize_reference`: the tiny model is fp32 here, so the one rounding the fused path skips
(the normed rows to the model dtype before quantising) is no rounding at all, and the two agree to fp32 order.
The swap is undone by `restore`, lifted for a bf16 reference run, and compiles into one graph with the
quantised rows passed between modules."""

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanTransformerBlock

from chitu_diffusion.models.random_init import TINY_TRANSFORMER, build_transformer
from chitu_diffusion.precision.apply import apply_precision
from chitu_diffusion.precision.fp8_block import FusedNormWanBlock
from chitu_diffusion.precision.fp8_linear import QuantizedRows

CPU = torch.device("cpu")


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def forward_inputs():
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 16, 3, 16, 16, generator=generator)
    text = torch.randn(1, 8, TINY_TRANSFORMER["text_dim"], generator=generator)
    return latents, torch.tensor([500]), text


def fp8_transformer(fused_norms: bool):
    torch.manual_seed(0)
    transformer = build_transformer(TINY_TRANSFORMER)
    plan = apply_precision(transformer.blocks, "fp8", CPU, fused_norms=fused_norms)
    return transformer, plan


def test_fused_norm_blocks_compute_the_fp8_blocks_function():
    plain, _ = fp8_transformer(fused_norms=False)
    fused, plan = fp8_transformer(fused_norms=True)
    assert {type(block) for block in fused.blocks} == {FusedNormWanBlock}
    assert {type(block) for block in plain.blocks} == {WanTransformerBlock}
    with torch.no_grad():
        expected = plain(*forward_inputs(), return_dict=False)[0]
        out = fused(*forward_inputs(), return_dict=False)[0]
    assert expected.abs().max() > 0
    assert rel_l2(out, expected) < 1e-5
    plan.restore()
    assert {type(block) for block in fused.blocks} == {WanTransformerBlock}


def test_a_reference_run_gets_the_bf16_blocks_back():
    fused, plan = fp8_transformer(fused_norms=True)
    torch.manual_seed(0)
    exact = build_transformer(TINY_TRANSFORMER)
    with torch.no_grad():
        expected = exact(*forward_inputs(), return_dict=False)[0]
        with plan.bf16_linears():
            assert {type(block) for block in fused.blocks} == {WanTransformerBlock}
            reference = fused(*forward_inputs(), return_dict=False)[0]
        assert {type(block) for block in fused.blocks} == {FusedNormWanBlock}
    assert torch.equal(reference, expected)


def test_the_fused_block_compiles_whole():
    fused, _ = fp8_transformer(fused_norms=True)
    block = fused.blocks[0]
    hidden = torch.randn(1, 12, TINY_TRANSFORMER["num_attention_heads"] * TINY_TRANSFORMER["attention_head_dim"])
    text = torch.randn(1, 8, hidden.shape[-1])
    temb = torch.randn(1, 6, hidden.shape[-1])
    head_dim = TINY_TRANSFORMER["attention_head_dim"]
    rotary = (torch.ones(1, 12, 1, head_dim), torch.zeros(1, 12, 1, head_dim))
    with torch.no_grad():
        eager = block(hidden, text, temb, rotary)
        compiled = torch.compile(block, backend="aot_eager", fullgraph=True)(hidden, text, temb, rotary)
    torch.testing.assert_close(compiled, eager)


def test_quantized_rows_feed_an_fp8_linear_as_its_own_quantisation_does():
    from chitu_diffusion.precision.fp8_linear import ROW, Fp8Linear
    from chitu_diffusion.precision.fp8_scaling import quantize

    torch.manual_seed(0)
    linear = Fp8Linear(torch.nn.Linear(32, 48))
    x = torch.randn(2, 5, 32)
    rows = QuantizedRows(*quantize(x.reshape(-1, 32), ROW), x.shape, x.dtype)
    assert torch.equal(linear(rows), linear(x))
    with pytest.raises(AttributeError):
        rows.codes = None  # frozen: one quantisation shared by several linears must not be changed by one
