"""How far a video made in a cheaper precision lies from the bf16 video of the same request and seed.

Reported per video when asked (`infer.diffusion.precision_check`): rel-L2 of the final latents and PSNR of the
decoded 8-bit frames, both against the bf16 run. FP8 is offered as an explicit option, never silently, and these
two numbers are how a user decides whether it is good enough for their prompts.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def rel_l2(x: torch.Tensor, reference: torch.Tensor) -> float:
    """||x - reference|| / ||reference|| in fp32."""
    return float((x.float() - reference.float()).norm() / reference.float().norm())


def psnr_db(frames: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio of uint8 frames (F, H, W, 3) against `reference`; inf when identical."""
    if frames.shape != reference.shape:
        raise ValueError(f"frames {frames.shape} and reference {reference.shape} differ in shape")
    mse = float(np.mean((frames.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def precision_report(latents, reference_latents, frames, reference_frames, reference_seconds: float) -> dict:
    return {
        "reference": "bf16, same request and seed",
        "rel_l2_latents": rel_l2(latents, reference_latents),
        "psnr_db_frames": psnr_db(frames, reference_frames),
        "reference_seconds": reference_seconds,
    }
