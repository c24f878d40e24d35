"""No caching: every step computes in full (none.py). The baseline every other strategy is measured against.

This file holds only the strategy's torch-free traits, read by the registry without importing torch.
"""

REQUIRES_RING_ATTENTION = False
