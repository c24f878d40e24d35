"""Self-attention kernels on Wan2.1-1.3B's shape, one GPU: time and error of each against exact fp32 attention.

FlashAttention-3 (BF16, FP8 with per-head scales: what the engine runs today), torch SDPA's cuDNN backend, and
cuDNN's own graph API from `nvidia-cudnn-frontend` (BF16 and FP8 SDPA with per-tensor scales). The question it
answers: is there an exact or FP8 kernel faster than FA3's on this card (bench/results/README.md, issue 13)?

On the GPU machine, after `source bench/device_env.sh` with the frontend's wheel carried too:
    python bench/probe_attention.py --out $OUT/attention.json
Inputs are random (q, k ~ N(0, 1) with a shared key offset as Wan's keys carry one; v ~ N(0, 1)); the error is
measured on the first --ref-queries query rows against fp32 attention over all keys.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from benchlib import commit, cuda_times_ms, rel_l2

from chitu_diffusion.metrics import versions
from chitu_diffusion.precision.fp8_attention import smooth_keys
from chitu_diffusion.precision.fp8_scaling import quantize

PER_TENSOR = (0, 1, 2, 3)  # one scale for all of q, k or v: what cuDNN's FP8 graph takes


def reference(q, k, v, rows: int) -> torch.Tensor:
    """Exact attention in fp32 for the first `rows` queries, (B, rows, H, D)."""
    qf, kf, vf = (x.float().transpose(1, 2) for x in (q[:, :rows], k, v))
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        return F.scaled_dot_product_attention(qf, kf, vf).transpose(1, 2)


class CudnnSdpa:
    """One cuDNN graph for (B, L, H, D) tensors viewed as (B, H, L, D), built once for the shape."""

    def __init__(self, q: torch.Tensor, fp8: bool, out_dtype: torch.dtype, s_scale: float = 256.0):
        import cudnn

        self.cudnn = cudnn
        self.handle = cudnn.create_handle()
        cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream().cuda_stream)
        io = cudnn.data_type.FP8_E4M3 if fp8 else cudnn.data_type.BFLOAT16
        graph = cudnn.pygraph(
            io_data_type=io,
            intermediate_data_type=cudnn.data_type.FLOAT,
            compute_data_type=cudnn.data_type.FLOAT,
            handle=self.handle,
        )
        view = q.transpose(1, 2)  # (B, H, L, D) strides of the (B, L, H, D) memory
        self.q_t, self.k_t, self.v_t = (graph.tensor_like(view).set_data_type(io) for _ in range(3))
        scale = 1.0 / math.sqrt(q.shape[-1])
        self.scalars = {}
        if fp8:
            one = torch.ones(1, 1, 1, 1, dtype=torch.float32, device=q.device)
            names = ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o")
            tensors = {name: graph.tensor_like(one) for name in names}
            o, _stats, amax_s, amax_o = graph.sdpa_fp8(
                q=self.q_t, k=self.k_t, v=self.v_t, **tensors, is_inference=True, attn_scale=scale
            )
            self.scalar_tensors = tensors
            self.scalars = {
                "descale_s": torch.full_like(one, 1.0 / s_scale),
                "scale_s": torch.full_like(one, s_scale),
                "scale_o": one,
            }
            self.amax = {amax_s: torch.zeros_like(one), amax_o: torch.zeros_like(one)}
            for t in (amax_s, amax_o):
                t.set_output(True).set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1)).set_data_type(cudnn.data_type.FLOAT)
        else:
            o, _stats = graph.sdpa(q=self.q_t, k=self.k_t, v=self.v_t, is_inference=True, attn_scale=scale)
            self.scalar_tensors, self.amax = {}, {}
        self.out = torch.empty(q.shape, dtype=out_dtype, device=q.device)
        o.set_output(True).set_dim(list(view.shape)).set_stride(list(self.out.transpose(1, 2).stride()))
        o.set_data_type(cudnn.data_type.FP8_E4M3 if out_dtype == torch.float8_e4m3fn else cudnn.data_type.BFLOAT16)
        self.o_t = o
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
        self.graph = graph
        self.workspace = torch.empty(graph.get_workspace_size(), dtype=torch.uint8, device=q.device)

    def __call__(self, q, k, v, descales=None) -> torch.Tensor:
        pack = {self.q_t: q, self.k_t: k, self.v_t: v, self.o_t: self.out, **self.amax}
        if self.scalar_tensors:
            values = dict(self.scalars)
            values.update(zip(("descale_q", "descale_k", "descale_v"), descales, strict=True))
            pack.update({self.scalar_tensors[name]: value for name, value in values.items()})
        self.graph.execute(pack, self.workspace, handle=self.handle)
        return self.out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=32760)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--ref-queries", type=int, default=2048)
    parser.add_argument("--only", default="", help="comma-separated substrings: run the kernels whose name has one")
    args = parser.parse_args()
    torch.manual_seed(0)
    shape = (1, args.tokens, args.heads, args.head_dim)
    q = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    key_offset = 0.5 * torch.randn(1, 1, args.heads, args.head_dim, device="cuda")
    k = (torch.randn(shape, device="cuda") + key_offset).bfloat16()
    v = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    flop = 4 * args.heads * args.tokens**2 * args.head_dim
    ref = reference(q, k, v, args.ref_queries)
    results: dict = {
        "inputs": "random",
        "shape (B, L, H, D)": list(shape),
        "commit": commit(),
        "versions": versions(),
        "kernels": {},
    }
    try:
        import cudnn

        results["versions"]["cudnn_backend"] = cudnn.backend_version()
        results["versions"]["cudnn_frontend"] = cudnn.__version__
    except Exception as err:
        results["versions"]["cudnn_frontend"] = f"unavailable: {err}"

    def fa3_bf16():
        from fa3_fwd_interface import flash_attn_func

        return lambda: flash_attn_func(q, k, v)

    def fa3_fp8_per_head():
        from fa3_fwd_interface import flash_attn_func

        from chitu_diffusion.precision.fp8_attention import quantize_qkv

        q8, qs, k8, ks, v8, vs = quantize_qkv(q, k, v)
        descale = [s.reshape(s.shape[0], s.shape[2]) for s in (qs, ks, vs)]
        return lambda: flash_attn_func(q8, k8, v8, q_descale=descale[0], k_descale=descale[1], v_descale=descale[2])

    def sdpa_cudnn():
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))

        def run():
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(qt, kt, vt).transpose(1, 2)

        return run

    def cudnn_bf16():
        sdpa = CudnnSdpa(q, fp8=False, out_dtype=torch.bfloat16)
        return lambda: sdpa(q, k, v)

    def cudnn_fp8(out_dtype, smooth_k: bool, s_scale: float):
        def build():
            keys = smooth_keys(k) if smooth_k else k
            (q8, qd), (k8, kd), (v8, vd) = (quantize(x, PER_TENSOR) for x in (q, keys, v))
            sdpa = CudnnSdpa(q, fp8=True, out_dtype=out_dtype, s_scale=s_scale)

            def run():
                return sdpa(q8, k8, v8, (qd, kd, vd))

            if out_dtype == torch.float8_e4m3fn:  # |out| <= max |v|: v's scale fits the output exactly
                sdpa.scalars["scale_o"] = 1.0 / vd
                run.dequantize = lambda out: out.float() * vd
            return run

        return build

    candidates = {
        "fa3_bf16": fa3_bf16,
        "fa3_fp8_per_head_smooth_k (engine today)": fa3_fp8_per_head,
        "sdpa_cudnn_bf16 (torch)": sdpa_cudnn,
        "cudnn_frontend_bf16": cudnn_bf16,
        "cudnn_frontend_fp8_per_tensor_smooth_k_out_bf16": cudnn_fp8(torch.bfloat16, True, 256.0),
        "cudnn_frontend_fp8_per_tensor_out_bf16": cudnn_fp8(torch.bfloat16, False, 256.0),
        "cudnn_frontend_fp8_per_tensor_smooth_k_out_bf16_s_scale_1": cudnn_fp8(torch.bfloat16, True, 1.0),
        "cudnn_frontend_fp8_per_tensor_smooth_k_out_fp8": cudnn_fp8(torch.float8_e4m3fn, True, 256.0),
    }
    chosen = [part for part in args.only.split(",") if part]
    for name, build in candidates.items():
        if chosen and not any(part in name for part in chosen):
            continue
        try:
            run = build()
            out = run()
            out = out[0] if isinstance(out, tuple) else out
            out = getattr(run, "dequantize", lambda x: x)(out)
            times = cuda_times_ms(run, args.repeats)
            median = statistics.median(times)
            entry = {
                "median_ms": median,
                "min_ms": min(times),
                "tflops": flop / (median * 1e-3) / 1e12,
                "rel_l2_vs_fp32_exact": rel_l2(out[:, : args.ref_queries], ref),
                "ms_per_forward_30_blocks": 30 * median,
            }
        except Exception as err:
            entry = {"error": f"{type(err).__name__}: {err}"[:1500], "trace": traceback.format_exc()[-1500:]}
        results["kernels"][name] = entry
        print(name, entry, flush=True)
        args.out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
