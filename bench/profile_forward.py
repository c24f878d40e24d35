"""Where one transformer forward's time goes, per variant, and checks of the FP8 kernels against their references.

Random bf16 weights, Wan2.1-T2V-1.3B architecture, one forward at 81x480x832 (32760 tokens). For each variant:
median seconds per forward (CUDA events, after a compiling warm-up), and a torch.profiler pass over 2 forwards
whose GPU kernel time is grouped into attention, GEMM, fused elementwise (Triton) and the rest, so the bench
says what is left to fuse beyond attention and GEMMs. Also: FA3 FP8 attention and the row-wise FP8 linear against
their reference math on the GPU, the VAE decode of a whole frame vs one rank's slice (what each GPU of a 2-GPU
split decodes), and the mp4 encode; with `--checks norm_quantize`, the staged fused FP8 norm kernel
(precision/fp8_norm.py) against inductor's.

    python bench/profile_forward.py --out /tmp/profile.json [--variants tuned,chitu,chitu+xattn+rows,fp8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch._functorch.config
import torch._inductor.config
from benchlib import commit, rel_l2

from chitu_diffusion.attention.kernels import get_kernel
from chitu_diffusion.attention.processor import set_self_attention
from chitu_diffusion.compile_cache import compile_blocks
from chitu_diffusion.metrics import versions
from chitu_diffusion.models.random_init import build_wan21_1_3b_transformer, build_wan21_vae

# Order matters: inductor names a fused kernel after the ops it feeds, e.g. triton_..._flash_attn_forward_...
CATEGORIES = (
    ("triton_fused", ("triton",)),
    ("attention", ("flash", "fmha", "attention", "fwd_kernel")),
    ("gemm", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "scaled_mm", "sm90")),
)


def category(name: str) -> str:
    lowered = name.lower()
    return next((label for label, keys in CATEGORIES if any(k in lowered for k in keys)), "other")


def inputs(frames: int, height: int, width: int):
    generator = torch.Generator("cuda").manual_seed(0)
    latents = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, device="cuda", generator=generator)
    text = torch.randn(1, 512, 4096, device="cuda", generator=generator)
    return latents.bfloat16(), torch.tensor([500.0], device="cuda"), text.bfloat16()


def build_variant(name: str):
    """A fresh transformer set up like the variant (weights seeded identically). A name is a base (`tuned`, `chitu`:
    today's engine in bf16, `fp8`, `fp8-attention-only`, `fp8-linear-only`) and `+feature`s: `xattn` (cross-attention
    through FA3 too), `rows` (fused/row_reductions.py), `mk` (inductor's multi-kernel: both reduction kinds, the
    faster picked at run time), `cdt` (coordinate-descent tuning of Triton block sizes), `mat` (inductor's
    max_autotune_pointwise: more block sizes tried for elementwise and reduction kernels), `fastacc` (FP8 GEMMs
    with cuBLAS's fast accumulation), `lnq` (FP8: the staged fused norm + quantise blocks, precision/fp8_block.py).
    Tried at 4efea96 and
    dropped: `qkv` (one q/k/v GEMM: slower) and `cfg2` (both CFG branches as one batch: no faster), see
    bench/results/README.md."""
    from torch._inductor.choices import InductorChoices
    from torch._inductor.virtualized import V

    from chitu_diffusion.attention.processor import set_cross_attention
    from chitu_diffusion.fused.gelu_epilogue import fuse_gelu_epilogues
    from chitu_diffusion.fused.row_reductions import WideRowChoices

    base, *features = name.split("+")
    unknown = set(features) - {"xattn", "rows", "mk", "cdt", "mat", "fastacc", "lnq"}
    if unknown:
        raise ValueError(f"unknown variant features {sorted(unknown)}")
    torch._dynamo.reset()  # nothing compiled for an earlier variant may serve this one
    torch._inductor.config.coordinate_descent_tuning = "cdt" in features
    torch._inductor.config.max_autotune_pointwise = "mat" in features
    torch._inductor.config.triton.multi_kernel = int("mk" in features)
    V.set_choices_handler(WideRowChoices() if "rows" in features else InductorChoices())
    torch.manual_seed(0)
    transformer = build_wan21_1_3b_transformer()
    if base == "tuned":
        transformer.set_attention_backend("_flash_3")
        transformer.compile_repeated_blocks(fullgraph=True)
        return transformer
    kernel = get_kernel("fa3")
    if base.startswith("fp8"):
        from chitu_diffusion.precision.apply import apply_precision

        plan = apply_precision(transformer.blocks, "fp8", torch.device("cuda"), fused_norms="lnq" in features)
        if base != "fp8-linear-only":
            kernel = plan.attention_kernel
        if base == "fp8-attention-only":
            plan.restore()
        for module in transformer.modules():
            if hasattr(module, "fast_accum"):
                module.fast_accum = "fastacc" in features
    elif base == "chitu":
        fuse_gelu_epilogues(transformer.blocks)
    else:
        raise ValueError(f"unknown variant {base!r}")
    set_self_attention(transformer, "blocks", "attn1", kernel)
    if "xattn" in features:
        set_cross_attention(transformer, "blocks", "attn2", get_kernel("fa3"))
    compile_blocks(transformer.blocks, fullgraph=False)  # as the engine
    return transformer


def time_forwards(transformer, args_, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        transformer(*args_, return_dict=False)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return times


def profile(transformer, args_) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            transformer(*args_, return_dict=False)
        torch.cuda.synchronize()
    totals: dict[str, float] = {}
    kernels: dict[str, float] = {}
    for event in prof.key_averages():
        device_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if device_us <= 0 or event.key.startswith("ProfilerStep"):
            continue
        totals[category(event.key)] = totals.get(category(event.key), 0.0) + device_us / 2e6  # s per forward
        kernels[event.key] = device_us / 2e6
    top = dict(sorted(kernels.items(), key=lambda kv: -kv[1])[:25])
    return {"seconds_per_forward_by_category": totals, "top_kernels_s_per_forward": top}


def check_fp8_kernels() -> dict:
    """FA3 FP8 vs its reference math and exact attention; FP8 linear vs its reference and bf16."""
    from chitu_diffusion.precision.fp8_attention import _fa3_fp8, fp8_attention_reference
    from chitu_diffusion.precision.fp8_linear import Fp8Linear

    generator = torch.Generator("cuda").manual_seed(1)
    q, k, v = (torch.randn(1, 8192, 12, 128, device="cuda", generator=generator).bfloat16() for _ in range(3))
    k = k + 2.0 * torch.randn(1, 1, 12, 128, device="cuda", generator=generator).bfloat16()
    exact = get_kernel("math")(q, k, v)
    out = {
        "fa3_fp8_vs_reference": rel_l2(_fa3_fp8(q, k, v), fp8_attention_reference(q, k, v)),
        "fa3_fp8_vs_exact": rel_l2(_fa3_fp8(q, k, v), exact),
        "fa3_bf16_vs_exact": rel_l2(get_kernel("fa3")(q, k, v), exact),
    }
    linear = torch.nn.Linear(1536, 8960, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(4096, 1536, device="cuda", dtype=torch.bfloat16, generator=generator)
    fp8 = Fp8Linear(linear)
    fp8.use_scaled_mm = False
    reference = fp8(x)
    fp8.use_scaled_mm = True
    fast = fp8(x)
    out.update(fp8_linear_vs_reference=rel_l2(fast, reference), fp8_linear_vs_bf16=rel_l2(fast, linear(x)))
    from chitu_diffusion.precision.fp8_ffn import _triton_gelu_quantize, gelu_quantize_reference
    from chitu_diffusion.precision.fp8_scaling import dequantize

    hidden = 3 * torch.randn(32760, 8960, device="cuda", dtype=torch.bfloat16, generator=generator)
    reference = gelu_quantize_reference(hidden)
    configs = {"eager_reference": gelu_quantize_reference}
    for rows, chunk, warps, approx in (
        (4, 1024, 4, False),
        (4, 1024, 4, True),
        (1, 1024, 4, True),
        (2, 2048, 8, True),
        (8, 512, 4, True),
        (16, 256, 4, True),
        (8, 1024, 8, True),
    ):
        tanh = "approx" if approx else "exact"
        configs[f"fused_rows{rows}_chunk{chunk}_warps{warps}_{tanh}_tanh"] = _triton_gelu_quantize(
            rows, chunk, warps, approx
        )
    for name, fn in configs.items():
        fused = fn(hidden)
        out[f"gelu_quantize_{name}_vs_reference"] = rel_l2(dequantize(*fused), dequantize(*reference))
        codes_differ = fused[0].view(torch.uint8) != reference[0].view(torch.uint8)
        out[f"gelu_quantize_{name}_e4m3_codes_differing"] = codes_differ.float().mean().item()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            fn(hidden)
        torch.cuda.synchronize()
        out[f"gelu_quantize_{name}_ms"] = (time.perf_counter() - start) * 100
    return out


def vae_decode_split(frames: int, height: int, width: int) -> dict:
    """Whole decode vs rank 0's share of the exact 2-GPU split (parallel/vae_decode.py), on one GPU.

    Decoding rank 0's slice of the latents alone runs the split's convolutions on the same shapes (zero padding
    stands where the neighbour's halo column would be), so its time is one rank's compute in the split; the 2-GPU
    decode adds the halo exchanges, the whole-frame mid-block attention (one small per-frame attention at the
    latents' resolution) and the gather, which `bench_e2e.py --gpus 2` (mode chitu-cfg2-split-decode) measures."""
    from chitu_diffusion.parallel.vae_decode import slice_sizes, split_axis

    torch.manual_seed(0)
    vae = build_wan21_vae()
    z = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, device="cuda").bfloat16()
    axis = split_axis(z)
    rank0_slice = z.narrow(axis, 0, slice_sizes(z.shape[axis], 2)[0])  # the wider one when the split is uneven
    result = {}
    with torch.no_grad():
        for name, latents in (("whole", z), ("rank0_slice", rank0_slice)):
            vae.decode(latents[:, :, :2])  # cuDNN autotuning for this width out of the timed run
            torch.cuda.synchronize()
            start = time.perf_counter()
            vae.decode(latents)
            torch.cuda.synchronize()
            result[f"{name}_s"] = time.perf_counter() - start
    result["two_gpu_speedup_estimate"] = result["whole_s"] / result["rank0_slice_s"]  # before communication
    return result


def norm_rope_kernel(frames: int, height: int, width: int) -> dict:
    """The fused q/k RMSNorm + RoPE (fused/qk_norm_rope.py) against the modules, compiled, on one block's shape."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    from chitu_diffusion.fused.qk_norm_rope import fusable, norm_rope, norm_rope_reference

    torch.manual_seed(0)
    heads, head_dim = 12, 128
    norm = torch.nn.RMSNorm(heads * head_dim, eps=1e-6).cuda().bfloat16()
    latents = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, device="cuda")
    freqs = WanRotaryPosEmbed(head_dim, (1, 2, 2), 1024).cuda()(latents)
    x = torch.randn(1, freqs[0].shape[1], 3 * heads * head_dim, device="cuda").bfloat16()[..., : heads * head_dim]
    result = {"fusable": fusable(x, norm, heads, freqs)}
    reference_fn = torch.compile(norm_rope_reference, fullgraph=True)
    for name, fn in (("compiled_reference", reference_fn), ("fused", norm_rope)):
        out = fn(x, norm, heads, freqs)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(20):
            fn(x, norm, heads, freqs)
        torch.cuda.synchronize()
        result[f"{name}_ms"] = (time.perf_counter() - start) / 20 * 1000
        result[name] = out
    result["rel_l2"] = rel_l2(result.pop("fused"), result.pop("compiled_reference"))
    return result


def norm_quantize_kernel(frames: int, height: int, width: int) -> dict:
    """The fused gated residual + LayerNorm + modulation + FP8 quantise (precision/fp8_norm.py) against the same
    function compiled by inductor, for each of a Wan block's three norms, on one block's shape. Per use: ms per
    call of each, rel-L2 of the dequantised rows and the share of e4m3 codes that differ. A forward runs each use
    once per block (30 blocks); today's FP8 block spends 17.5 ms per forward on these three norms."""
    from chitu_diffusion.precision.fp8_norm import norm_quantize_reference, triton_norm_quantize
    from chitu_diffusion.precision.fp8_scaling import dequantize

    generator = torch.Generator("cuda").manual_seed(0)
    dim = 1536
    tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, device="cuda", generator=generator).to(dtype)

    x, delta = randn(1, tokens, dim, dtype=torch.bfloat16), randn(1, tokens, dim, dtype=torch.bfloat16)
    gate, scale, shift = randn(1, 1, dim), 0.3 * randn(1, 1, dim), 0.3 * randn(1, 1, dim)
    uses = {
        "norm1_modulated": dict(scale=scale, shift=shift),
        "norm2_gated_residual_affine": dict(delta=delta, gate=gate, weight=randn(dim) + 1, bias=randn(dim)),
        "norm3_residual_modulated": dict(delta=delta, scale=scale, shift=shift),
    }
    configs = {"compiled_reference": torch.compile(norm_quantize_reference)}
    for rows, warps in ((1, 4), (2, 4), (4, 8), (8, 8)):
        configs[f"fused_rows{rows}_warps{warps}"] = triton_norm_quantize(rows, warps)
    result = {"tokens": tokens}
    for use, kwargs in uses.items():
        reference = norm_quantize_reference(x, **kwargs)
        for name, fn in configs.items():
            out = fn(x, **kwargs)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(20):
                fn(x, **kwargs)
            torch.cuda.synchronize()
            result[f"{use}_{name}_ms"] = (time.perf_counter() - start) / 20 * 1000
            result[f"{use}_{name}_rel_l2"] = rel_l2(dequantize(*out[1:]), dequantize(*reference[1:]))
            codes_differ = out[1].view(torch.uint8) != reference[1].view(torch.uint8)
            result[f"{use}_{name}_e4m3_codes_differing"] = codes_differ.float().mean().item()
            result[f"{use}_{name}_stream_equal"] = torch.equal(out[0], reference[0])
    return result


def vae_cudnn_benchmark(frames: int, height: int, width: int) -> dict:
    """Whole decode seconds with cuDNN's algorithm search off, then on (its first call pays the search)."""
    torch.manual_seed(0)
    vae = build_wan21_vae()
    z = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, device="cuda").bfloat16()
    result = {}
    with torch.no_grad():
        for benchmark in (False, True):
            torch.backends.cudnn.benchmark = benchmark
            for run in ("first", "second"):
                torch.cuda.synchronize()
                start = time.perf_counter()
                vae.decode(z, return_dict=False)
                torch.cuda.synchronize()
                result[f"benchmark_{str(benchmark).lower()}_{run}_s"] = time.perf_counter() - start
    torch.backends.cudnn.benchmark = False
    return result


def mp4_encode(frames: int, height: int, width: int) -> dict:
    import numpy as np

    from chitu_diffusion.video import write_mp4

    video = (np.random.default_rng(0).random((frames, height, width, 3)) * 255).astype(np.uint8)
    start = time.perf_counter()
    path = write_mp4(video, Path("/tmp/profile-encode.mp4"), 16)
    return {
        "seconds": time.perf_counter() - start,
        "bytes": path.stat().st_size,
        "content": "uniform noise (worst case)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="tuned,chitu,chitu+xattn+rows,fp8,fp8+xattn+rows")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--checks", default="fp8_kernels,vae_decode,mp4_encode")
    args = parser.parse_args()
    results: dict = {"weights": "random bf16", "commit": commit(), "versions": versions(), "variants": {}}
    # every variant compiles from scratch: inductor's cache key does not see the choices handler
    torch._inductor.config.fx_graph_cache = False
    torch._functorch.config.enable_autograd_cache = False
    forward_args = inputs(args.frames, args.height, args.width)
    reference = None
    steps = [
        ("fp8_kernels", check_fp8_kernels),
        ("vae_decode", lambda: vae_decode_split(args.frames, args.height, args.width)),
        ("mp4_encode", lambda: mp4_encode(args.frames, args.height, args.width)),
        ("norm_rope", lambda: norm_rope_kernel(args.frames, args.height, args.width)),
        ("norm_quantize", lambda: norm_quantize_kernel(args.frames, args.height, args.width)),
        ("vae_cudnn_benchmark", lambda: vae_cudnn_benchmark(args.frames, args.height, args.width)),
    ]
    steps = [step for step in steps if step[0] in args.checks.split(",")]
    for name, fn in steps:
        try:
            results[name] = fn()
        except Exception as err:  # keep measuring the rest; the failure is in the JSON
            results[name] = {"error": f"{type(err).__name__}: {err}"}
        print(name, results[name], flush=True)
        args.out.write_text(json.dumps(results, indent=2, default=str))
    with torch.no_grad():
        for name in filter(None, args.variants.split(",")):  # "" = the checks only
            try:
                transformer = build_variant(name)
                start = time.perf_counter()
                output = transformer(*forward_args, return_dict=False)[0]
                torch.cuda.synchronize()
                entry = {"first_forward_s (compile)": time.perf_counter() - start}
                times = time_forwards(transformer, forward_args, args.repeats)
                entry.update(median_s=statistics.median(times), times_s=times, **profile(transformer, forward_args))
                if reference is None:
                    reference = output.float()
                entry["rel_l2_vs_first_variant"] = rel_l2(output, reference)
                del transformer
                torch.cuda.empty_cache()
            except Exception as err:
                entry = {"error": f"{type(err).__name__}: {err}"[:2000]}
            results["variants"][name] = entry
            print(name, {k: v for k, v in entry.items() if k != "top_kernels_s_per_forward"}, flush=True)
            args.out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
