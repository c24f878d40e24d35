"""Context parallelism attached to a transformer from outside: shard the tokens, distribute self-attention.

Where to shard and gather is model data. diffusers models declare it as `_cp_plan` (Wan: split RoPE's outputs and
`blocks.0`'s `hidden_states` along tokens, i.e. after patch embedding and RoPE; gather `proj_out`'s output); we
read that plan and implement it with plain torch module hooks instead of diffusers' CP hooks, for two reasons:
- torch hooks run around `module.forward`, outside diffusers' HookRegistry (which replaces `forward`), so the
  FlexCache hooks on the same modules always see this rank's shard, whatever order the two were attached in;
- the split and gather need only this rank's CP group, not diffusers' ContextParallelConfig / DeviceMesh.
Self-attention gets a `WanSelfAttnProcessor` whose core is a `ContextParallelAttention` per layer. Cross-attention
needs nothing: this rank's query tokens attend to the full (replicated) text, which is exact.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.utils.hooks import RemovableHandle

from chitu_diffusion.attention.kernels import get_kernel, get_lse_kernel, resolve_backend
from chitu_diffusion.attention.processor import WanSelfAttnProcessor
from chitu_diffusion.models.adapter import ModelAdapter
from chitu_diffusion.parallel.attention import ContextParallelAttention
from chitu_diffusion.parallel.degrees import LayoutError
from chitu_diffusion.parallel.groups import ParallelGroups
from chitu_diffusion.parallel.ring import RingAttention

logger = logging.getLogger(__name__)


@dataclass
class ContextParallelHandle:
    """What `apply_context_parallel` changed, so `remove` can restore the transformer exactly."""

    transformer: torch.nn.Module
    adapter: ModelAdapter
    hooks: list[RemovableHandle] = field(default_factory=list)
    processors: list = field(default_factory=list)  # the self-attention processors we replaced, per block

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()
        for block, processor in zip(
            self.adapter.blocks(self.transformer), self.processors, strict=False
        ):  # those replaced
            getattr(block, self.adapter.self_attention_attr).set_processor(processor)
        self.hooks.clear()
        self.processors.clear()


def _parameter_index(module: torch.nn.Module, name: str) -> int:
    """Position of `name` in `module.forward`'s arguments (resolved once, at attach time, outside any graph)."""
    return list(inspect.signature(type(module).forward).parameters).index(name) - 1  # drop `self`


class _Sharder:
    """Split / gather along tokens over this rank's CP group."""

    def __init__(self, groups: ParallelGroups):
        self.group, self.size, self.rank = groups.cp, groups.layout.cp, groups.cp_rank

    def split(self, x, spec):
        if not torch.is_tensor(x) or (spec.expected_dims is not None and x.dim() != spec.expected_dims):
            return x  # e.g. Wan2.1's 1-D timestep under Wan2.2's per-token timestep rule: nothing to split
        if x.shape[spec.split_dim] % self.size:
            raise LayoutError(
                f"cannot split {x.shape[spec.split_dim]} tokens over cp_size={self.size}: choose frames / height / "
                "width so that latent frames x (height/16) x (width/16) divides by cp_size"
            )
        return x.chunk(self.size, dim=spec.split_dim)[self.rank]

    def gather(self, x: torch.Tensor, spec) -> torch.Tensor:
        if spec.expected_dims is not None and x.dim() != spec.expected_dims:
            return x
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=spec.gather_dim)


def _input_splitter(sharder: _Sharder, specs: dict[str, tuple[object, int]]):
    """forward-pre-hook (with kwargs) splitting the named forward arguments; specs: name -> (spec, position)."""

    def hook(module, args, kwargs):
        args = list(args)
        for name, (spec, index) in specs.items():
            if name in kwargs:
                kwargs[name] = sharder.split(kwargs[name], spec)
            elif index < len(args):
                args[index] = sharder.split(args[index], spec)
        return tuple(args), kwargs

    return hook


def _output_splitter(sharder: _Sharder, specs: dict):
    """forward hook splitting output items by index (RoPE's (cos, sin))."""

    def hook(module, args, output):
        items = list(output) if isinstance(output, (tuple, list)) else [output]
        for index, spec in specs.items():
            items[index] = sharder.split(items[index], spec)
        return type(output)(items) if isinstance(output, (tuple, list)) else items[0]

    return hook


def _output_gatherer(sharder: _Sharder, spec):
    def hook(module, args, output):
        return sharder.gather(output, spec)

    return hook


def _attach_boundaries(transformer: torch.nn.Module, sharder: _Sharder, handle: ContextParallelHandle) -> None:
    plan = getattr(type(transformer), "_cp_plan", None)
    if not plan:
        name = type(transformer).__name__
        raise LayoutError(f"{name} declares no `_cp_plan`: context parallelism does not know where to split it")
    for path, entry in plan.items():
        module = transformer.get_submodule(path)
        if isinstance(entry, dict):
            named = {k: s for k, s in entry.items() if isinstance(k, str) and not s.split_output}
            inputs = {name: (spec, _parameter_index(module, name)) for name, spec in named.items()}
            outputs = {k: s for k, s in entry.items() if isinstance(k, int)}
            if inputs:
                splitter = _input_splitter(sharder, inputs)
                handle.hooks.append(module.register_forward_pre_hook(splitter, with_kwargs=True))
            if outputs:
                handle.hooks.append(module.register_forward_hook(_output_splitter(sharder, outputs)))
        else:
            handle.hooks.append(module.register_forward_hook(_output_gatherer(sharder, entry)))


def apply_context_parallel(
    transformer: torch.nn.Module, adapter: ModelAdapter, groups: ParallelGroups, backend: str | None = None
) -> ContextParallelHandle:
    """Shard tokens at the model's `_cp_plan` boundaries and distribute every block's self-attention.

    `backend`: the attention kernel (attention.kernels names; None/'auto' picks FA3 on Hopper, else SDPA); ring
    attention uses the lse-returning variant of it.
    """
    layout = groups.layout
    name = resolve_backend(backend, groups.device, transformer.dtype)
    ring = None
    if layout.ring > 1:
        ring = RingAttention(groups.ring, layout.ring, groups.ring_rank, get_lse_kernel(name, groups.device))
    handle = ContextParallelHandle(transformer, adapter)
    try:
        _attach_boundaries(transformer, _Sharder(groups), handle)
        for block in adapter.blocks(transformer):
            attention = getattr(block, adapter.self_attention_attr)
            core = ContextParallelAttention(groups.ulysses, layout.ulysses, ring or get_kernel(name))
            handle.processors.append(attention.processor)
            attention.set_processor(WanSelfAttnProcessor(core))
    except BaseException:
        handle.remove()
        raise
    logger.info("context parallel: ulysses %d x ring %d, kernel %s", layout.ulysses, layout.ring, name)
    return handle
