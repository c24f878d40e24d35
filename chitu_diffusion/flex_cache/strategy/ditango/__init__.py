"""DiTango (ASE-guided group reuse under ring attention): the strategy (ditango.py), its planner and its picture.

This file holds only the strategy's torch-free traits, read by the registry without importing torch.
"""

REQUIRES_RING_ATTENTION = True
