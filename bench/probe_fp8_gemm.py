"""FP8 GEMMs on Wan2.1-1.3B's block shapes, one GPU: cuBLAS through `torch._scaled_mm` with row-wise scales (what
`Fp8Linear` runs) or one scale per tensor, each with exact (promoted) or fast accumulation, against bf16.

    python bench/probe_fp8_gemm.py --out $OUT/fp8_gemm.json     # after `source bench/device_env.sh`

Per block of a forward at 81x480x832 (32760 tokens): six 1536 x 1536 projections (self q, k, v, out; cross q,
out), the feed-forward's 1536 -> 8960 and 8960 -> 1536; `ms_per_forward` sums them over 30 blocks. Inputs are
random (activations N(0, 1), weights N(0, 0.02)); the error is rel-L2 against fp32 of the bf16 operands.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from benchlib import commit, cuda_times_ms, rel_l2

from chitu_diffusion.metrics import versions
from chitu_diffusion.precision.fp8_scaling import quantize

# (K, N, GEMMs of this shape per block)
SHAPES = [(1536, 1536, 6), (1536, 8960, 1), (8960, 1536, 1)]
BLOCKS = 30


def variants(x: torch.Tensor, w: torch.Tensor) -> dict:
    """name -> a call computing x @ w.T in bf16."""
    x_row, x_row_scale = quantize(x, (-1,))
    w_row, w_row_scale = quantize(w, (-1,))
    x_ten, x_ten_scale = quantize(x, (0, 1))
    w_ten, w_ten_scale = quantize(w, (0, 1))
    found = {"bf16": lambda: torch.nn.functional.linear(x, w)}
    for fast in (False, True):
        accumulate = "fast_accum" if fast else "exact_accum"
        found[f"fp8_rowwise_{accumulate}"] = lambda fast=fast: torch._scaled_mm(
            x_row, w_row.t(), scale_a=x_row_scale, scale_b=w_row_scale.reshape(1, -1), out_dtype=torch.bfloat16,
            use_fast_accum=fast,
        )  # fmt: skip
        found[f"fp8_tensorwise_{accumulate}"] = lambda fast=fast: torch._scaled_mm(
            x_ten, w_ten.t(), scale_a=x_ten_scale.reshape(()), scale_b=w_ten_scale.reshape(()),
            out_dtype=torch.bfloat16, use_fast_accum=fast,
        )  # fmt: skip
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=32760)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    results: dict = {"inputs": "random", "tokens": args.tokens, "commit": commit(), "versions": versions()}
    per_forward: dict[str, float] = {}
    for k, n, count in SHAPES:
        x = torch.randn(args.tokens, k, device="cuda", dtype=torch.bfloat16)
        w = (0.02 * torch.randn(n, k, device="cuda")).bfloat16()
        exact = x.float() @ w.float().t()
        flop = 2 * args.tokens * k * n
        entry = {}
        for name, fn in variants(x, w).items():
            ms = statistics.median(cuda_times_ms(fn, args.repeats))
            entry[name] = {"ms": ms, "tflops": flop / (ms * 1e-3) / 1e12, "rel_l2_vs_fp32": rel_l2(fn(), exact)}
            per_forward[name] = per_forward.get(name, 0.0) + BLOCKS * count * ms
        results[f"{args.tokens}x{k} @ {k}x{n} (x{count} per block)"] = entry
        print(k, n, entry, flush=True)
    results["ms_per_forward"] = per_forward
    print(per_forward)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
