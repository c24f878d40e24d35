"""DiTango (ASE-guided group reuse under ring attention): the strategy, its planner and its policy picture."""

from chitu_diffusion.flex_cache.strategy.ditango.ditango import POLICY_FILE, DiTango
from chitu_diffusion.flex_cache.strategy.ditango.planner import DiTangoConfig

__all__ = ["POLICY_FILE", "DiTango", "DiTangoConfig"]
