"""Triton kernels on the CPU: Triton's interpreter (TRITON_INTERPRET=1), rounding as the GPU rounds.

The interpreter is chosen when a kernel is defined, so a check runs in a fresh process (`interpreted`). Its own
float casts are not the GPU's: fp32 -> bf16 rounds toward zero, and fp32 -> e4m3 rounds ties up and drops the
carry when the mantissa rounds over (7.94 became 4.0, not 8.0). `round_as_the_gpu` replaces them with torch's
casts, which round to nearest even as the GPU's `cvt.rn` does, so a check compares the kernel's own arithmetic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: the float types the kernels cast between, by Triton's name, as torch names them
_TORCH_FLOATS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp8e4nv": "float8_e4m3fn"}


def round_as_the_gpu() -> None:
    """Make this process's Triton interpreter cast floats with torch (round to nearest even)."""
    import numpy as np
    import torch
    import triton.runtime.interpreter as interpreter

    def cast(bits, input_dtype, output_dtype, rounding_mode):  # the interpreter's signature; bits in, bits out
        in_bits = f"int{input_dtype.primitive_bitwidth}"  # the same name in numpy and torch
        out_bits = f"int{output_dtype.primitive_bitwidth}"
        values = torch.from_numpy(np.frombuffer(bits.tobytes(), dtype=in_bits).copy())
        values = values.view(getattr(torch, _TORCH_FLOATS[input_dtype.name]))
        out = values.to(getattr(torch, _TORCH_FLOATS[output_dtype.name])).view(getattr(torch, out_bits))
        return out.numpy().view(f"u{out_bits}").reshape(bits.shape)

    interpreter._convert_float = cast


def interpreted(script: str) -> dict:
    """Run `script` in a fresh process with the interpreter on and `round_as_the_gpu` applied; returns the JSON
    object its last line of output prints."""
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])),
    }
    prologue = "import triton_interpreter\ntriton_interpreter.round_as_the_gpu()\n"
    run = subprocess.run(
        [sys.executable, "-c", prologue + script], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])
