"""Pyramid Attention Broadcast (pab.py): reuse attention outputs across steps, cross-attention longest.

This file holds only the strategy's torch-free traits, read by the registry without importing torch.
"""

REQUIRES_RING_ATTENTION = False
