"""No caching: every step computes in full. Logs one unit per (step, branch) so metrics keep one shape."""

from __future__ import annotations

import torch

from chitu_diffusion.flex_cache.base import Decision, DecisionLog, FlexCacheStrategy
from chitu_diffusion.flex_cache.hooks import StatefulHook, attach_hook, context_manager, current_step, detach_hooks
from chitu_diffusion.flex_cache.registry import register_strategy

_HOOK = "chitu_flexcache_none"


class _LogComputeHook(StatefulHook):
    def __init__(self, log: DecisionLog):
        super().__init__(context_manager())
        self.log = log

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        context = self.state_manager.context
        self.log.record(current_step(context), context.name, "blocks", Decision.COMPUTE)
        return self.fn_ref.original_forward(*args, **kwargs)


@register_strategy
class NoCache(FlexCacheStrategy):
    name = "none"

    def apply(self, transformer: torch.nn.Module) -> None:
        attach_hook(transformer, _LogComputeHook(self.log), _HOOK)

    def remove(self, transformer: torch.nn.Module) -> None:
        detach_hooks(transformer, _HOOK)
