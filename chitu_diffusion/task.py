"""User-facing request types (the seed's API contract).

`DiffusionUserParams` is what a user asks for: one prompt and its generation settings, plus the FlexCache
choice either as the shorthand `flexcache='teacache'` or the full `flexcache_params=FlexCacheParams(...)`.
Validation happens here, once, at the edge; everything downstream trusts these values.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chitu_diffusion.flex_cache.registry import strategy_names

# Wan's VAE compresses 4x in time and 8x in space, and the DiT patchifies 2x2 on top of that.
FRAME_STRIDE = 4
SPATIAL_STRIDE = 16


def frames_problem(frames: int) -> str | None:
    """Why a video of `frames` frames cannot be generated, or None. The one frame-count rule: the GenerationJob
    contract (chitu_api) calls it too and writes its CEL twin from FRAME_STRIDE."""
    return None if frames % FRAME_STRIDE == 1 else f"must be 4k+1 (1, 5, 9, ..., 81), got {frames}"


def spatial_problem(pixels: int) -> str | None:
    """Why a height or width of `pixels` cannot be generated, or None (shared with chitu_api like frames_problem)."""
    return None if pixels % SPATIAL_STRIDE == 0 else f"must be a multiple of {SPATIAL_STRIDE}, got {pixels}"


def _normalise_strategy(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    name = str(value).strip().lower()
    allowed = strategy_names()
    if name not in allowed:
        raise ValueError(
            f"{field} must be one of {', '.join(repr(a) for a in allowed)} (case-insensitive), got {value!r}"
        )
    return name


class FlexCacheParams(BaseModel):
    """The unified FlexCache parameter group.

    `cache_ratio` is the quality-efficiency knob (0 = quality first, 1 = speed first); each strategy documents
    how it maps the ratio onto its own thresholds. The first `warmup` and last `cooldown` steps always compute.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: str = Field("none", description="none, teacache, pab or ditango (case-insensitive)")
    cache_ratio: float = Field(0.5, ge=0.0, le=1.0, description="0 = quality first, 1 = speed first")
    warmup: int = Field(1, ge=0, description="first N denoising steps always computed in full")
    cooldown: int = Field(1, ge=0, description="last N denoising steps always computed in full")

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy_known(cls, value: str) -> str:
        return _normalise_strategy(value, "strategy")

    def forced_compute(self, step: int, num_steps: int) -> str | None:
        """'warmup' / 'cooldown' when `step` must be computed in full, else None."""
        if step < self.warmup:
            return "warmup"
        if step >= num_steps - self.cooldown:
            return "cooldown"
        return None


class DiffusionUserParams(BaseModel):
    """One text-to-video request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    negative_prompt: str | None = None
    num_inference_steps: int = Field(50, gt=0)
    guidance_scale: float = Field(5.0, ge=0.0)
    height: int = Field(480, gt=0)
    width: int = Field(832, gt=0)
    num_frames: int = Field(81, gt=0)
    seed: int | None = Field(None, ge=0)
    fps: int = Field(16, gt=0)
    flexcache: str | None = Field(None, description="shorthand strategy name: 'teacache', 'PAB', 'ditango'")
    flexcache_params: FlexCacheParams | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must be a non-empty text")
        return value

    @field_validator("height", "width")
    @classmethod
    def _spatial_multiple(cls, value: int, info) -> int:
        if problem := spatial_problem(value):
            raise ValueError(f"{info.field_name} {problem}")
        return value

    @field_validator("num_frames")
    @classmethod
    def _frames_4k_plus_1(cls, value: int) -> int:
        if problem := frames_problem(value):
            raise ValueError(f"num_frames {problem}")
        return value

    @field_validator("flexcache", mode="before")
    @classmethod
    def _flexcache_known(cls, value: str | None) -> str | None:
        return _normalise_strategy(value, "flexcache")

    @model_validator(mode="after")
    def _resolve_flexcache(self) -> DiffusionUserParams:
        full = self.flexcache_params
        if self.flexcache is not None and full is not None and full.strategy != self.flexcache:
            raise ValueError(
                f"flexcache={self.flexcache!r} conflicts with flexcache_params.strategy={full.strategy!r}; "
                "give one of them, or the same strategy in both"
            )
        cache = self.cache
        if cache.strategy != "none" and cache.warmup + cache.cooldown >= self.num_inference_steps:
            raise ValueError(
                f"flexcache_params.warmup + flexcache_params.cooldown ({cache.warmup} + {cache.cooldown}) must be "
                f"less than num_inference_steps ({self.num_inference_steps}) to leave steps that may reuse"
            )
        return self

    @property
    def cache(self) -> FlexCacheParams:
        """The effective FlexCache settings (shorthand expanded, defaults filled in)."""
        if self.flexcache_params is not None:
            return self.flexcache_params
        return FlexCacheParams(strategy=self.flexcache or "none")

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1.0
