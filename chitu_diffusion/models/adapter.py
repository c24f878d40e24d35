"""Per-model-family facts, as data: where the blocks and attention modules are, what TeaCache watches.

Strategies and parallel plans read these fields instead of hard-coding a model, so supporting a new DiT family
means registering one more `ModelAdapter`, not editing hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import WanTransformer3DModel


@dataclass(frozen=True)
class ModelAdapter:
    family: str
    transformer_cls: type[torch.nn.Module]
    blocks_attr: str  # ModuleList of the repeated DiT blocks
    self_attention_attr: str  # per block
    cross_attention_attr: str  # per block
    #: submodule computing the blocks' timestep modulation (TeaCache's signal), called before the blocks
    modulation_module: str
    modulation_output: int  # which item of that submodule's output tuple the blocks receive as modulation
    #: first submodule called after the blocks, with the block stack's output as its first argument
    stack_output_module: str
    hidden_states_arg: str = "hidden_states"  # block forward argument carrying the tokens
    #: published TeaCache rescale polynomials (highest degree first), keyed by `variant()`
    teacache_coefficients: dict[str, tuple[float, ...]] = field(default_factory=dict)
    #: the published "fast" TeaCache threshold that goes with those polynomials, keyed by `variant()`
    teacache_fast_thresholds: dict[str, float] = field(default_factory=dict)

    def blocks(self, transformer: torch.nn.Module) -> torch.nn.ModuleList:
        return getattr(transformer, self.blocks_attr)

    def variant(self, transformer: torch.nn.Module) -> str:
        """A size tag such as 'wan2.1-1.3b', used to pick published coefficients."""
        config = transformer.config
        inner_dim = config.num_attention_heads * config.attention_head_dim
        return {1536: f"{self.family}-1.3b", 5120: f"{self.family}-14b"}.get(inner_dim, f"{self.family}-custom")


WAN21 = ModelAdapter(
    family="wan2.1",
    transformer_cls=WanTransformer3DModel,
    blocks_attr="blocks",
    self_attention_attr="attn1",
    cross_attention_attr="attn2",
    # condition_embedder returns (temb, timestep_proj, text, image); the blocks get timestep_proj as `temb`,
    # unflattened to (B, 6, C). The blocks' output goes through `norm_out(hidden_states.float())` next.
    modulation_module="condition_embedder",
    modulation_output=1,
    stack_output_module="norm_out",
    # TeaCache4Wan2.1 with use_ret_steps=True, whose signal is the per-block time projection e0 (diffusers'
    # `timestep_proj`, the blocks' `temb`); the use_ret_steps=False polynomials watch the time embedding `e`.
    teacache_coefficients={
        "wan2.1-1.3b": (-5.21862437e04, 9.23041404e03, -5.28275948e02, 1.36987616e01, -4.99875664e-02),
        "wan2.1-14b": (-3.03318725e05, 4.90537029e04, -2.65530556e03, 5.87365115e01, -3.15583525e-01),
    },
    # TeaCache4Wan2.1 README, use_ret_steps=True: t2v-1.3B slow 0.05 / fast 0.10, t2v-14B slow 0.10 / fast 0.20
    teacache_fast_thresholds={"wan2.1-1.3b": 0.10, "wan2.1-14b": 0.20},
)

_ADAPTERS = (WAN21,)


def adapter_for(transformer: torch.nn.Module) -> ModelAdapter:
    for adapter in _ADAPTERS:
        if isinstance(transformer, adapter.transformer_cls):
            return adapter
    known = ", ".join(a.transformer_cls.__name__ for a in _ADAPTERS)
    raise ValueError(f"no model adapter for {type(transformer).__name__}; supported transformers: {known}")
