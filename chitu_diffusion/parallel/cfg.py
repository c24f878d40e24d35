"""CFG parallelism: the cond and uncond branches on different ranks, predictions exchanged every step.

Classifier-free guidance needs two transformer forwards per step that do not depend on each other. With a cfg
group of 2 ranks, cfg rank 0 runs "cond" and cfg rank 1 runs "uncond"; one all_gather per step gives every rank
both predictions, and every rank applies the same guidance formula and scheduler step, so the latents stay
identical on all ranks without further communication. The formula and its operand order are the single-device
`pipeline.guided_noise`'s, so the result is bit-identical to running both branches in one process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from chitu_diffusion.pipeline import DenoiseStep, Guide, PredictNoise

#: cfg rank -> the branch it computes (the FlexCache cache-context name)
BRANCHES = ("cond", "uncond")


def cfg_parallel_guide(
    predict_noise: PredictNoise, guidance_scale: float, group: dist.ProcessGroup, cfg_rank: int
) -> Guide:
    """A `Guide` computing this rank's branch and all-gathering the other's."""
    branch = BRANCHES[cfg_rank]

    def guide(latents: torch.Tensor, step: DenoiseStep) -> torch.Tensor:
        mine = predict_noise(branch, latents, step).contiguous()  # (B, C, F', H', W')
        cond, uncond = (torch.empty_like(mine) for _ in BRANCHES)
        dist.all_gather([cond, uncond], mine, group=group)
        return uncond + guidance_scale * (cond - uncond)

    return guide
