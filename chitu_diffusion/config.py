"""The engine configuration: one typed schema, overridable with the seed's dotted `key=value` strings.

`infer.diffusion.cp_size=2 infer.diffusion.up_limit=81` on a command line, `engine: {dtype: auto}` in a
GenerationJob: both become `EngineConfig.from_overrides(...)`. Values are parsed by the field types (pydantic's
lax mode turns "2" into 2 and "true" into True); an unknown key is an error that lists the valid ones. The valid
keys are derived from the models below, so adding a setting means adding one field and touching nothing else.

This module imports neither torch nor diffusers: the operator can validate engine overrides without them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chitu_diffusion.errors import ConfigError

__all__ = ["ConfigError", "DiffusionConfig", "EngineConfig", "InferConfig"]

# The settings a GenerationJob's `spec.engine` exposes too: type, default and description written once, here,
# and used by DiffusionConfig below and by chitu_api.generationjob.Engine (so the CRD says what the engine does).
ModelDtype = Annotated[
    Literal["auto", "float32", "bfloat16", "float16"],
    Field("auto", description="Model dtype; auto = bfloat16 on CUDA, float32 on CPU."),
]
CompileBlocks = Annotated[
    bool | None,
    Field(
        None,
        description="Regional torch.compile of the repeated DiT blocks; unset = on for CUDA, off for CPU (no "
        "compiler toolchain needed there). Compiled kernels are kept next to the model when its folder is "
        "writable, so later processes and pods skip the compile.",
    ),
]
Precision = Annotated[
    Literal["bf16", "fp8"],
    Field(
        "bf16",
        description="bf16 = exact (the model's dtype); fp8 = FP8 attention and FP8 linear layers in the DiT "
        "blocks: faster, approximate, opt-in.",
    ),
]
PrecisionCheck = Annotated[
    bool,
    Field(
        False,
        description="With precision fp8, also make each video in bf16 with the same seed and report rel-L2 and "
        "PSNR against it in metrics.json (twice the time).",
    ),
]
ParallelDecode = Annotated[
    bool,
    Field(
        False,
        description="In a gang (world size > 1), split the VAE decode across the ranks: each decodes a slice of "
        "every frame and trades slice edges with its neighbours, so the video equals a whole decode. A single "
        "process decodes whole either way.",
    ),
]


class DiffusionConfig(BaseModel):
    """`infer.diffusion.*`: how the diffusion engine runs (never what it generates: that is the request)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cp_size: int = Field(1, ge=1, description="context-parallel degree (ulysses x ring); >1 needs torchrun")
    up_limit: int = Field(8, ge=1, description="largest Ulysses degree; the rest of cp_size goes to ring attention")
    dtype: ModelDtype
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu")
    compile: CompileBlocks
    attention_backend: Literal["auto", "sdpa", "fa3", "cudnn", "flash", "math"] = Field(
        "auto",
        description="self-attention kernel (chitu_diffusion.attention.kernels): auto = FlashAttention-3 on a Hopper "
        "GPU in bf16/fp16 when fa3-fwd is installed, else torch SDPA (what stock diffusers runs)",
    )

    compile_cache_dir: str = Field(
        "auto",
        description="where torch.compile's artifacts are kept across processes (chitu_diffusion.compile_cache): "
        "auto = <model folder>/.chitu-compile-cache when writable, else ~/.cache/chitu/compile-cache",
    )
    precision: Precision
    precision_check: PrecisionCheck
    parallel_decode: ParallelDecode

    def resolved_device(self, cuda_available: bool) -> str:
        if self.device == "auto":
            return "cuda" if cuda_available else "cpu"
        if self.device == "cuda" and not cuda_available:
            raise ConfigError("infer.diffusion.device=cuda but no CUDA device is available")
        return self.device

    def resolved_compile(self, device: str) -> bool:
        """Compile when asked; unset = on CUDA (inductor needs a GPU toolchain to pay off), off on CPU."""
        return device == "cuda" if self.compile is None else self.compile

    def resolved_dtype(self, device: str) -> str:
        """A torch dtype name. bf16 halves memory and uses tensor cores on GPU; CPUs are fastest and exact in fp32."""
        if self.dtype == "auto":
            return "bfloat16" if device == "cuda" else "float32"
        return self.dtype


class InferConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)


class EngineConfig(BaseModel):
    """The root of the dotted key space (`infer.diffusion.cp_size`, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    infer: InferConfig = Field(default_factory=InferConfig)

    @property
    def diffusion(self) -> DiffusionConfig:
        return self.infer.diffusion

    @classmethod
    def valid_keys(cls) -> list[str]:
        """Every dotted key a user may set, e.g. 'infer.diffusion.cp_size'."""
        return _leaf_keys(cls)

    @classmethod
    def from_overrides(cls, overrides: Iterable[str] | Mapping[str, Any] = ()) -> EngineConfig:
        return cls().with_overrides(overrides)

    def with_overrides(self, overrides: Iterable[str] | Mapping[str, Any]) -> EngineConfig:
        """A copy with `overrides` applied: 'key=value' strings or a {dotted key: value} mapping; last one wins."""
        pairs = overrides.items() if isinstance(overrides, Mapping) else map(_split_override, overrides)
        valid = self.valid_keys()
        data = self.model_dump()
        unknown = []
        for key, value in pairs:
            if key not in valid:
                unknown.append(key)
                continue
            *parents, leaf = key.split(".")
            node = data
            for part in parents:
                node = node[part]
            node[leaf] = value
        if unknown:
            raise ConfigError(
                [f"unknown engine config key {k!r}" for k in unknown] + [f"valid keys: {', '.join(valid)}"]
            )
        try:
            return type(self).model_validate(data)
        except ValidationError as err:
            raise ConfigError(
                [f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e['input']!r})" for e in err.errors()]
            ) from None


def _split_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"engine override {item!r} must look like key=value, e.g. infer.diffusion.cp_size=2")
    return key.strip(), value.strip()


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _leaf_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys
