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
    modulation_arg: str  # block forward argument carrying the timestep modulation (TeaCache's signal)
    hidden_states_arg: str = "hidden_states"
    #: published TeaCache rescale polynomials (highest degree first), keyed by `variant()`
    teacache_coefficients: dict[str, tuple[float, ...]] = field(default_factory=dict)

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
    modulation_arg="temb",  # WanTransformerBlock.forward(hidden_states, encoder_hidden_states, temb, rotary_emb)
    # TeaCache4Wan2.1 (use_ret_steps=True: the signal is the per-block time projection e0 = timestep_proj)
    teacache_coefficients={
        "wan2.1-1.3b": (2.39676752e03, -1.31110545e03, 2.01331979e02, -8.29855975e00, 1.37887774e-01),
        "wan2.1-14b": (-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404),
    },
)

_ADAPTERS = (WAN21,)


def adapter_for(transformer: torch.nn.Module) -> ModelAdapter:
    for adapter in _ADAPTERS:
        if isinstance(transformer, adapter.transformer_cls):
            return adapter
    known = ", ".join(a.transformer_cls.__name__ for a in _ADAPTERS)
    raise ValueError(f"no model adapter for {type(transformer).__name__}; supported transformers: {known}")
