"""Small helpers every strategy uses to attach diffusers hooks and read the denoising-loop context."""

from __future__ import annotations

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager


def attach_hook(module: torch.nn.Module, hook: ModelHook, name: str) -> None:
    registry = HookRegistry.check_if_exists_or_initialize(module)
    registry.register_hook(hook, name)


def detach_hooks(root: torch.nn.Module, name: str) -> None:
    """Remove hook `name` from `root` and all its submodules, and drop stale child-registry caches."""
    registry = HookRegistry.check_if_exists_or_initialize(root)
    registry.remove_hook(name, recurse=True)
    registry.invalidate_child_registries_cache()


def refresh_registries(root: torch.nn.Module) -> None:
    """Call after attaching hooks to submodules so `cache_context` reaches them."""
    HookRegistry.check_if_exists_or_initialize(root).invalidate_child_registries_cache()


class ContextState(BaseState):
    """A stateless placeholder for hooks that only need the loop context (step, branch)."""

    def reset(self) -> None:
        pass


def context_manager() -> StateManager:
    return StateManager(ContextState)


def current_step(context: CacheContext) -> int:
    if context.step_index is None or context.num_inference_steps is None:
        raise ValueError("FlexCache hooks need cache_context(name, step_index=..., num_inference_steps=...)")
    return int(context.step_index)
