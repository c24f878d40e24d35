"""The parallel degrees of one launch, validated once: world = cfg x cp, cp = ulysses x ring.

- cfg (1 or 2): classifier-free-guidance parallelism puts the cond and uncond branches on different ranks.
  It is whatever the world size leaves after context parallelism: cfg = world_size / cp_size.
- ulysses: the largest divisor of cp_size that is <= `up_limit` and divides the head count. Ulysses moves
  heads with all-to-alls (cheap, but bounded by the head count and best inside one NVLink island), so it takes
  as much of cp_size as it may.
- ring = cp_size / ulysses: ring attention over the rest, passing K/V between ranks.

Rank order (innermost varies fastest): rank = cfg_index * cp + ring_index * ulysses + ulysses_index. Ulysses is
innermost because its all-to-alls move the most bytes per layer, so its peers should be the nearest ranks;
CFG is outermost because it talks once per step. Token chunk `cp_rank` of the sequence lives on CP rank
`cp_rank`, so after Ulysses' all-to-all a ring rank holds one contiguous 1/ring of the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

from chitu_diffusion.errors import ConfigError

#: CFG has two branches (cond, uncond): more than two CFG ranks would have nothing to do.
MAX_CFG_DEGREE = 2


class LayoutError(ConfigError):
    """A parallel layout that cannot run on this world size / model / request (one line per problem)."""


def ulysses_degree(cp_size: int, up_limit: int, num_heads: int | None) -> int:
    """The largest divisor of `cp_size` that is <= `up_limit` and divides `num_heads` (1 always qualifies).

    `num_heads=None` (the model is not known yet, as at admission) puts no head constraint: the largest Ulysses
    degree any model could get, so the smallest ring degree.
    """
    return max(
        u
        for u in range(1, cp_size + 1)
        if cp_size % u == 0 and u <= up_limit and (num_heads is None or num_heads % u == 0)
    )


#: The CEL twin of `ring_attention_problem(cp_size, up_limit, None) is None`, for the CRD (chitu_api writes it into
#: the schema; a unit test checks the two agree on a grid). With no head constraint Ulysses takes all of cp_size
#: when up_limit >= cp_size, so ring >= 2 exactly when cp_size >= 2 and up_limit < cp_size.
RING_ATTENTION_CEL = "self.cpSize >= 2 && self.upLimit < self.cpSize"


def ring_attention_problem(cp_size: int, up_limit: int, num_heads: int | None) -> str | None:
    """Why a strategy that works on ring attention (DiTango) cannot run with these settings, or None.

    The one check of "DiTango needs ring >= 2": the engine calls it with the model's head count, the contract
    (and through RING_ATTENTION_CEL the apiserver) with None, the worst case, so a request admitted runs.
    """
    ring = cp_size // ulysses_degree(cp_size, up_limit, num_heads) if cp_size >= 1 and up_limit >= 1 else 0
    if ring >= 2:
        return None
    return (
        f"needs ring attention over at least 2 ranks, but cp_size {cp_size} with up_limit {up_limit} gives "
        f"ulysses {cp_size // max(ring, 1)} x ring {ring}: use cp_size >= 2 and up_limit < cp_size "
        "(up_limit 1 puts all of cp_size on the ring)"
    )


@dataclass(frozen=True)
class ParallelLayout:
    """Degrees of each parallel dimension; `validate` before building process groups from it."""

    cfg: int = 1
    ulysses: int = 1
    ring: int = 1

    @property
    def cp(self) -> int:
        return self.ulysses * self.ring

    @property
    def world_size(self) -> int:
        return self.cfg * self.cp

    @classmethod
    def resolve(cls, world_size: int, cp_size: int, up_limit: int, num_heads: int) -> ParallelLayout:
        """The layout for `world_size` ranks and the `infer.diffusion.cp_size` / `up_limit` settings."""
        errors = []
        if cp_size < 1 or up_limit < 1:
            errors.append(f"infer.diffusion.cp_size ({cp_size}) and up_limit ({up_limit}) must be >= 1")
        elif world_size % cp_size:
            errors.append(
                f"world size {world_size} is not a multiple of infer.diffusion.cp_size={cp_size} "
                f"(world size = cfg degree (1 or 2) x cp_size)"
            )
        elif world_size // cp_size > MAX_CFG_DEGREE:
            errors.append(
                f"world size {world_size} = cp_size {cp_size} x {world_size // cp_size}, but CFG parallelism uses at "
                f"most {MAX_CFG_DEGREE} ranks (cond, uncond): launch {cp_size} or {2 * cp_size} processes, or raise "
                "infer.diffusion.cp_size"
            )
        if errors:
            raise LayoutError(errors)
        ulysses = ulysses_degree(cp_size, up_limit, num_heads)
        layout = cls(cfg=world_size // cp_size, ulysses=ulysses, ring=cp_size // ulysses)
        layout.validate(world_size, num_heads)
        return layout

    def validate(self, world_size: int, num_heads: int) -> None:
        """Raise `LayoutError` listing every way this layout does not fit `world_size` ranks and the model."""
        errors = []
        if min(self.cfg, self.ulysses, self.ring) < 1:
            errors.append(f"every degree must be >= 1, got {self}")
        if self.cfg > MAX_CFG_DEGREE:
            errors.append(f"cfg degree {self.cfg} > {MAX_CFG_DEGREE}: CFG has only a cond and an uncond branch")
        if self.world_size != world_size:
            errors.append(
                f"world size {world_size} != cfg {self.cfg} x cp {self.cp} (ulysses {self.ulysses} x ring {self.ring})"
            )
        if self.ulysses > 0 and num_heads % self.ulysses:
            errors.append(
                f"the model's {num_heads} attention heads are not divisible by the Ulysses degree {self.ulysses}: "
                "lower infer.diffusion.up_limit so ring attention takes the rest"
            )
        if errors:
            raise LayoutError(errors)

    def check_tokens(self, num_tokens: int) -> None:
        """Every CP rank holds an equal share of the sequence: `num_tokens` must divide by cp."""
        if num_tokens % self.cp:
            raise LayoutError(
                f"the video's {num_tokens} transformer tokens are not divisible by cp_size={self.cp}: choose "
                "frames / height / width so that latent frames x (height/16) x (width/16) divides by cp_size"
            )

    def check_guidance(self, uses_cfg: bool) -> None:
        """A CFG-parallel gang needs both branches: reject a request without guidance."""
        if self.cfg > 1 and not uses_cfg:
            raise LayoutError(
                f"this gang runs CFG parallelism over {self.cfg} ranks, but the request has guidance_scale <= 1 (one "
                "branch): use guidance_scale > 1, or launch world size = infer.diffusion.cp_size"
            )

    def coordinates(self, rank: int) -> tuple[int, int, int]:
        """(cfg_index, ring_index, ulysses_index) of global `rank`."""
        cfg_index, cp_rank = divmod(rank, self.cp)
        ring_index, ulysses_index = divmod(cp_rank, self.ulysses)
        return cfg_index, ring_index, ulysses_index

    def describe(self) -> dict:
        degrees = {"cfg": self.cfg, "cp": self.cp, "ulysses": self.ulysses, "ring": self.ring}
        return {"world_size": self.world_size, **degrees}
