"""Attention kernels (with and without log-sum-exp) and the Wan self-attention processor that uses them."""
