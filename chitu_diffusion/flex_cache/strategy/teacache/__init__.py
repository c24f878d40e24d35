"""TeaCache: the strategy (teacache.py), the block-stack hook pair it shares with its calibration (stack.py), and
the calibration that fits its rescale polynomial for one model (calibrate.py).

This file holds only the strategy's torch-free traits, read by the registry without importing torch.
"""

REQUIRES_RING_ATTENTION = False
