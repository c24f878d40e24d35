"""The FP8 feed-forward's fused GELU + quantise kernel (precision/fp8_ffn_triton.py) computes
`gelu_quantize_reference`: e4m3 codes and fp32 row scales.

The kernel runs here on the CPU through Triton's interpreter, rounding as the GPU does (triton_interpreter.py),
so what is compared is the kernel's arithmetic, indexing and masking. Its GELU is tanh from a sigmoid in fp32
where the reference calls torch's tanh: an fp32 ulp apart, which moves a code one e4m3 step only where the
value sits on a rounding boundary. The shipped `tanh.approx.f32` is inline PTX, which the interpreter cannot
run: its accuracy is measured on the GPU (bench/results/fp8_gelu_tanh_h200.json: 0.13% of codes one step off).
"""

from __future__ import annotations

from triton_interpreter import interpreted

INTERPRETED_CHECK = r"""
import functools
import json

import torch

from chitu_diffusion.precision import fp8_ffn
from chitu_diffusion.precision.fp8_ffn import _fused_gelu_quantize, _triton_gelu_quantize, gelu_quantize_reference

fp8_ffn._triton_gelu_quantize = functools.partial(_triton_gelu_quantize, approx_tanh=False)  # no inline PTX here

torch.manual_seed(0)
results = {}
# rows and columns that programs and chunks do not divide: the masks are exercised
for rows, cols, rows_per_program, chunk in ((5, 300, 2, 128), (7, 1000, 4, 256)):
    h = (torch.randn(rows, cols) * 3).bfloat16()
    h[1] = 0  # a row of zeros: GELU(0) = 0, its scale is the floor and its codes zeros
    codes, scales = _triton_gelu_quantize(rows_per_program, chunk, 4, False)(h)
    ref_codes, ref_scales = gelu_quantize_reference(h)
    step = (codes.float() - ref_codes.float()).abs() / ref_codes.float().abs().clamp(min=2**-9)
    values, ref_values = codes.float() * scales, ref_codes.float() * ref_scales
    results[f"{rows}x{cols}"] = {
        "dtypes": [str(codes.dtype), str(scales.dtype)],
        "shapes": [list(codes.shape), list(scales.shape)],
        "codes_differing": (codes.float() != ref_codes.float()).float().mean().item(),
        "max_step": step.max().item(),
        "scale_rel": ((scales - ref_scales).abs() / ref_scales).max().item(),
        "zero_row": [codes[1].float().abs().max().item(), scales[1].item(), ref_scales[1].item()],
        "rel_l2": ((values - ref_values).norm() / ref_values.norm()).item(),
    }
torch.library.opcheck(_fused_gelu_quantize, (h,), test_utils=("test_schema", "test_faketensor"))
print(json.dumps(results))
"""


def test_the_kernel_computes_gelu_then_row_quantisation():
    results = interpreted(INTERPRETED_CHECK)
    assert results["7x1000"]["shapes"] == [[7, 1000], [7, 1]]
    for case in results.values():
        assert case["dtypes"] == ["torch.float8_e4m3fn", "torch.float32"], results
        assert case["codes_differing"] <= 0.002, results  # an fp32 ulp of GELU across a rounding boundary
        assert case["max_step"] <= 2**-3, results  # and then one e4m3 step (2^-3 relative at most), never more
        assert case["scale_rel"] < 1e-6, results
        assert case["zero_row"][0] == 0 and case["zero_row"][1] == case["zero_row"][2], results
        assert case["rel_l2"] < 1e-3, results
