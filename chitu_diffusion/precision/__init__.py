"""Numeric precision of the DiT's heavy work: `bf16` (exact, the default) or `fp8` (opt-in, approximate).

`fp8` runs the blocks' self-attention through FlashAttention-3's FP8 kernel (per-head scales, keys smoothed by
their mean, `fp8_attention.py`) and every linear layer inside the repeated blocks as an FP8 row-wise scaled
matmul (`fp8_linear.py`); embeddings, the output projection, norms and the VAE stay in bf16/fp32. Which modules
change is decided once, at load (`apply.py`). This package's `__init__` imports no torch, so configuration code
can validate the name.
"""

from __future__ import annotations

PRECISIONS = ("bf16", "fp8")
