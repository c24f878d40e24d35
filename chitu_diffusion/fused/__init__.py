"""Exact (bf16) fusions of the DiT's elementwise work into the kernels next to it, applied as module swaps on
the loaded model (the model code stays diffusers'); each keeps the module it replaced for restoring."""
