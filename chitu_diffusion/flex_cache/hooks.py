"""Small helpers every strategy uses to attach diffusers hooks and read the denoising-loop context."""

from __future__ import annotations

import inspect

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager


def attach_hook(module: torch.nn.Module, hook: ModelHook, name: str) -> None:
    registry = HookRegistry.check_if_exists_or_initialize(module)
    registry.register_hook(hook, name)


def detach_hooks(root: torch.nn.Module, name: str) -> None:
    """Remove hook `name` from `root` and all its submodules, and leave a module that has no hook left as it was
    before any: diffusers puts the original bound `forward` back into the instance, which dynamo guards on, so a
    compiled block would otherwise compile again (a new variant per strategy ever attached, up to its limit)."""
    registry = HookRegistry.check_if_exists_or_initialize(root)
    registry.remove_hook(name, recurse=True)
    registry.invalidate_child_registries_cache()
    for module in root.modules():
        hooks = getattr(module, "_diffusers_hook", None)
        if hooks is None or hooks.hooks:
            continue
        del module._diffusers_hook
        if getattr(module.__dict__.get("forward"), "__func__", None) is type(module).forward:
            del module.forward  # the class's own forward again


def refresh_registries(root: torch.nn.Module) -> None:
    """Call after attaching hooks to submodules so `cache_context` reaches them."""
    HookRegistry.check_if_exists_or_initialize(root).invalidate_child_registries_cache()


class ContextState(BaseState):
    """A stateless placeholder for hooks that only need the loop context (step, branch)."""

    def reset(self) -> None:
        pass


class StatefulHook(ModelHook):
    """A hook whose per-branch state lives in `state_manager`, so `cache_context` reaches it and diffusers'
    `reset_stateful_hooks` clears it."""

    _is_stateful = True

    def __init__(self, state_manager: StateManager) -> None:
        super().__init__()
        self.state_manager = state_manager

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state_manager.reset()
        return module


def context_manager() -> StateManager:
    return StateManager(ContextState)


def current_step(context: CacheContext) -> int:
    if context.step_index is None or context.num_inference_steps is None:
        raise ValueError("FlexCache hooks need cache_context(name, step_index=..., num_inference_steps=...)")
    return int(context.step_index)


def parameter_index(module: torch.nn.Module, name: str) -> int:
    """Position of `name` among `module.forward`'s arguments; resolve it when attaching a hook, not in the
    forward: `inspect` breaks a dynamo graph."""
    params = list(inspect.signature(type(module).forward).parameters)[1:]  # drop `self`
    if name not in params:
        raise ValueError(f"{type(module).__name__}.forward has no parameter {name!r} (has {', '.join(params)})")
    return params.index(name)


def tensor_bytes(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else tensor.numel() * tensor.element_size()


class CacheMeter:
    """Bytes of cached tensors a strategy holds now, and the peak since the last reset (reported in metrics)."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0

    def replace(self, old: torch.Tensor | None, new: torch.Tensor | None) -> None:
        """Account for a cache slot whose tensor `old` is being replaced by `new` (either may be None)."""
        self.current += tensor_bytes(new) - tensor_bytes(old)
        self.peak = max(self.peak, self.current)

    def reset(self) -> None:
        self.current = 0
        self.peak = 0
