"""The block-stack hook pair shared by TeaCache and its calibration, and their one relative-L1 measure.

TeaCache's unit is one pass through the whole block stack for one (step, branch). Its signal is the relative L1
change of the blocks' modulation input (Wan: `temb` = `timestep_proj`, the reference's e0, shape (B, 6, C)); what
it caches is the stack's residual (last block output - first block input). Both the strategy (which decides to
compute or reuse) and the calibration (which records how the residual's change follows the modulation's) need
the same two places: the head block, where the modulation and the stack input are seen, and the tail block,
where the fresh residual exists. `attach_stack_hooks` puts one `BlockStackHook` on every block; the owner's
`decide` and `take_residual` are the only parts that differ.
"""

from __future__ import annotations

from typing import Protocol

import torch
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager

from chitu_diffusion.flex_cache.hooks import StatefulHook, attach_hook, forward_argument, refresh_registries
from chitu_diffusion.models.adapter import ModelAdapter


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """|current - previous|_1 / |previous|_1 (means over all elements), TeaCache's change measure."""
    return ((current - previous).abs().mean() / previous.abs().mean()).item()


class BlockStackState(BaseState):
    """One branch's state (diffusers' StateManager keys it by the cache_context name); owners extend it."""

    def __init__(self) -> None:
        self.previous_modulation: torch.Tensor | None = None  # (B, 6, C) fp32
        self.stack_input: torch.Tensor | None = None  # (B, L, C) first block's input while computing
        self.residual: torch.Tensor | None = None  # (B, L, C) the owner's last kept residual
        self.reuse = False  # the decision for the transformer call in flight

    def reset(self) -> None:
        self.__init__()


class BlockStackOwner(Protocol):
    """What the hooks ask of the strategy or the recorder that attached them."""

    adapter: ModelAdapter

    def decide(self, state: BlockStackState, context: CacheContext, change: float | None) -> bool:
        """Reuse `state.residual` for this call? `change`: the modulation's relative L1 change since the
        branch's previous call (None on its first)."""

    def take_residual(self, state: BlockStackState, context: CacheContext, output: torch.Tensor) -> None:
        """A computed call's stack output (B, L, C); `state.stack_input` still holds its input."""


class BlockStackHook(StatefulHook):
    """On every block: the head (block 0) measures the modulation change and asks the owner to decide; when
    reusing, it returns input + cached residual and the middle blocks pass their input through. The tail (last
    block) hands the computed output to the owner."""

    def __init__(self, owner: BlockStackOwner, state_manager: StateManager, is_head: bool, is_tail: bool) -> None:
        super().__init__(state_manager)
        self.owner = owner
        self.is_head = is_head
        self.is_tail = is_tail

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        adapter = self.owner.adapter
        state: BlockStackState = self.state_manager.get_state()
        hidden_states = forward_argument(module, adapter.hidden_states_arg, args, kwargs)  # (B, L, C)
        if self.is_head:
            modulation = forward_argument(module, adapter.modulation_arg, args, kwargs)  # (B, 6, C)
            state.reuse = self._decide(state, modulation)
            if state.reuse:
                return hidden_states + state.residual  # (B, L, C)
            state.stack_input = hidden_states
        elif state.reuse:
            return hidden_states
        output = self.fn_ref.original_forward(*args, **kwargs)  # (B, L, C)
        if self.is_tail:
            self.owner.take_residual(state, self.state_manager.context, output)
            state.stack_input = None
        return output

    @torch.compiler.disable
    def _decide(self, state: BlockStackState, modulation: torch.Tensor) -> bool:
        # The modulation is computed from the timestep alone and is replicated, not sequence-sharded, under
        # context parallelism: this statistic, and so every decision, is already global and equal on all ranks.
        modulation = modulation.float()  # (B, 6, C)
        previous, state.previous_modulation = state.previous_modulation, modulation  # negligible: not metered
        change = None if previous is None else relative_l1(modulation, previous)
        return self.owner.decide(state, self.state_manager.context, change)


def attach_stack_hooks(owner: BlockStackOwner, state_manager: StateManager, transformer: torch.nn.Module, name: str):
    """One `BlockStackHook` named `name` on every block of `transformer`, sharing `state_manager`."""
    blocks = owner.adapter.blocks(transformer)
    for index, block in enumerate(blocks):
        attach_hook(block, BlockStackHook(owner, state_manager, index == 0, index == len(blocks) - 1), name)
    refresh_registries(transformer)
