"""Does torch's `caching_precompile` let a fresh process skip dynamo's tracing of the compiled Wan blocks?

One forward of the tiny random Wan transformer with the engine's processors (math kernel) and
`compile_repeated_blocks`, in a fresh process per run, all runs sharing one inductor cache folder:

    export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)
    python bench/probe_precompile.py --precompile --save   # compiles, then writes dynamo's entries
    python bench/probe_precompile.py --precompile          # a fresh process: loads them
    python bench/probe_precompile.py                       # a fresh process without them: traces again

Each run prints one JSON line: dynamo cache hits, frames compiled, the tracing phases of dynamo's compile
times, seconds to wrap the blocks (where precompiled entries are installed) and of the first forward, and a
checksum of the output (equal across runs when the installed graphs compute what a fresh trace does).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch._dynamo.utils import compile_times, counters

from chitu_diffusion.attention.kernels import get_kernel
from chitu_diffusion.attention.processor import set_cross_attention, set_self_attention
from chitu_diffusion.models.random_init import TINY_TRANSFORMER, build_transformer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precompile", action="store_true", help="torch._dynamo.config.caching_precompile")
    parser.add_argument("--save", action="store_true", help="torch.compiler.save_cache_artifacts() afterwards")
    args = parser.parse_args()
    torch._dynamo.config.caching_precompile = args.precompile
    torch.manual_seed(0)
    transformer = build_transformer(TINY_TRANSFORMER)
    set_self_attention(transformer, "blocks", "attn1", get_kernel("math"))
    set_cross_attention(transformer, "blocks", "attn2", get_kernel("math"))
    start = time.perf_counter()
    transformer.compile_repeated_blocks(fullgraph=False)
    wrap_s = time.perf_counter() - start
    config = transformer.config
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, config.in_channels, 2, 8, 8, generator=generator)
    text = torch.randn(1, 512, config.text_dim, generator=generator)
    start = time.perf_counter()
    with torch.no_grad():
        out = transformer(hidden_states=latents, timestep=torch.tensor([500.0]), encoder_hidden_states=text)[0]
    first_forward_s = time.perf_counter() - start
    if args.save:
        torch.compiler.save_cache_artifacts()
    phases = ("_compile.compile_inner", "bytecode_tracing")
    times = compile_times(repr="str", aggregate=True).splitlines()
    print(
        json.dumps(
            {
                "precompile": args.precompile,
                "dynamo_cache": dict(counters["dynamo_cache"]),
                "frames": dict(counters["frames"]),
                "compile_times_s": [line for line in times if line.startswith(phases)],
                "wrap_s": round(wrap_s, 3),
                "first_forward_s": round(first_forward_s, 3),
                "checksum": float(out.double().sum()),
            }
        )
    )


if __name__ == "__main__":
    main()
