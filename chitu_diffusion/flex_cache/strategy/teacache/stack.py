"""The block-stack hooks shared by TeaCache and its calibration, and their one relative-L1 measure.

TeaCache's unit is one pass through the whole block stack for one (step, branch). Its signal is the relative L1
change of the blocks' modulation input (Wan: `timestep_proj`, the reference's e0, the blocks' `temb`); what it
caches is the stack's residual (stack output - stack input). Both the strategy (which decides to compute or
reuse) and the calibration (which records how the residual's change follows the modulation's) need the same
three places; `attach_stack_hooks` attaches them, and the owner's `decide` and `take_residual` are the only
parts that differ:

- `ModulationHook`, on the module that computes the modulation before the blocks (adapter.modulation_module):
  measures the change (a host read) and asks the owner to decide. Outside the compiled blocks.
- `BlockPassHook`, on every block, inside the compiled blocks: passes its input through while reusing; else
  the first block notes the stack input and every block computes. It reads only the shared `StackPlan`, so
  dynamo compiles the one code object the blocks share into three variants (reuse, first computing block,
  other computing blocks), with no graph break and no recompile per step.
- `StackOutputHook`, on the first module after the blocks (adapter.stack_output_module): while reusing it
  replaces the (passed-through) stack input by input + cached residual; while computing it hands the stack
  output to the owner. Outside the compiled blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager

from chitu_diffusion.flex_cache.hooks import StatefulHook, attach_hook, parameter_index, refresh_registries
from chitu_diffusion.models.adapter import ModelAdapter


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """|current - previous|_1 / |previous|_1 (means over all elements), TeaCache's change measure."""
    return ((current - previous).abs().mean() / previous.abs().mean()).item()


class BlockStackState(BaseState):
    """One branch's state (diffusers' StateManager keys it by the cache_context name); owners extend it."""

    def __init__(self) -> None:
        self.previous_modulation: torch.Tensor | None = None  # (B, 6 C) fp32
        self.residual: torch.Tensor | None = None  # (B, L, C) the owner's last kept residual
        self.reuse = False  # the decision for the transformer call in flight

    def reset(self) -> None:
        self.__init__()


@dataclass
class StackPlan:
    """The in-flight transformer call, as the compiled blocks see it: one object shared by every block."""

    reuse: bool = False
    stack_input: torch.Tensor | None = None  # (B, L, C) the first block's input while computing


class BlockStackOwner(Protocol):
    """What the hooks ask of the strategy or the recorder that attached them."""

    adapter: ModelAdapter

    def decide(self, state: BlockStackState, context: CacheContext, change: float | None) -> bool:
        """Reuse `state.residual` for this call? `change`: the modulation's relative L1 change since the
        branch's previous call (None on its first)."""

    def take_residual(
        self, state: BlockStackState, context: CacheContext, stack_input: torch.Tensor, stack_output: torch.Tensor
    ) -> None:
        """A computed call's stack input and output (B, L, C) (the output as the next module gets it)."""


class ModulationHook(StatefulHook):
    """After the modulation is computed: measure its change for this branch and take the call's decision."""

    def __init__(self, owner: BlockStackOwner, state_manager: StateManager, plan: StackPlan) -> None:
        super().__init__(state_manager)
        self.owner = owner
        self.plan = plan

    def post_forward(self, module: torch.nn.Module, output):
        # The modulation is computed from the timestep alone and is replicated, not sequence-sharded, under
        # context parallelism: this statistic, and so every decision, is already global and equal on all ranks.
        state: BlockStackState = self.state_manager.get_state()
        modulation = output[self.owner.adapter.modulation_output].float()  # (B, 6 C)
        previous, state.previous_modulation = state.previous_modulation, modulation  # negligible: not metered
        change = None if previous is None else relative_l1(modulation, previous)
        state.reuse = self.owner.decide(state, self.state_manager.context, change)
        self.plan.reuse, self.plan.stack_input = state.reuse, None
        return output


class BlockPassHook(ModelHook):
    """Inside every (compiled) block: pass through while reusing; note the stack input at the first block."""

    def __init__(self, plan: StackPlan, hidden_states_arg: str, hidden_states_index: int) -> None:
        super().__init__()
        self.plan = plan
        self.hidden_states_arg = hidden_states_arg
        self.hidden_states_index = hidden_states_index  # resolved when attached: `inspect` breaks dynamo graphs

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        if self.hidden_states_arg in kwargs:
            hidden_states = kwargs[self.hidden_states_arg]  # (B, L, C)
        else:
            hidden_states = args[self.hidden_states_index]
        if self.plan.reuse:
            return hidden_states
        if self.plan.stack_input is None:  # the first block of this call
            self.plan.stack_input = hidden_states
        return self.fn_ref.original_forward(*args, **kwargs)  # (B, L, C)


class StackOutputHook(StatefulHook):
    """Before the first module after the blocks: apply the cached residual, or hand the fresh output over."""

    def __init__(self, owner: BlockStackOwner, state_manager: StateManager, plan: StackPlan) -> None:
        super().__init__(state_manager)
        self.owner = owner
        self.plan = plan

    def pre_forward(self, module: torch.nn.Module, *args, **kwargs):
        state: BlockStackState = self.state_manager.get_state()
        stack_output, *rest = args  # (B, L, C); Wan casts it to fp32 for norm_out
        if state.reuse:
            # In the residual's (the stack's) dtype, as the blocks would have added it, then as the model casts.
            residual = state.residual
            stack_output = (stack_output.to(residual.dtype) + residual).to(stack_output.dtype)
        else:
            self.owner.take_residual(state, self.state_manager.context, self.plan.stack_input, stack_output)
        self.plan.reuse, self.plan.stack_input = False, None
        return (stack_output, *rest), kwargs


def attach_stack_hooks(owner: BlockStackOwner, state_manager: StateManager, transformer: torch.nn.Module, name: str):
    """The three hooks (see the module docstring), each named `name`, sharing `state_manager` and one plan."""
    adapter, plan = owner.adapter, StackPlan()
    modulation = transformer.get_submodule(adapter.modulation_module)  # before the blocks
    stack_output = transformer.get_submodule(adapter.stack_output_module)  # after them
    attach_hook(modulation, ModulationHook(owner, state_manager, plan), name)
    for block in adapter.blocks(transformer):
        index = parameter_index(block, adapter.hidden_states_arg)
        attach_hook(block, BlockPassHook(plan, adapter.hidden_states_arg, index), name)
    attach_hook(stack_output, StackOutputHook(owner, state_manager, plan), name)
    refresh_registries(transformer)
