"""Load a diffusers-format Wan2.1 text-to-video folder: one code path for the tiny test model and a real one.

The folder is checked first (folder.py); loading itself is diffusers' `WanPipeline.from_pretrained`, strictly
local.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from diffusers import WanPipeline

from chitu_diffusion.models.folder import check_model_folder

logger = logging.getLogger(__name__)


def load_wan_pipeline(model_dir: str | Path, dtype: torch.dtype, device: str) -> WanPipeline:
    """Every component in `dtype` on `device`; never touches the network."""
    root = check_model_folder(model_dir)
    logger.info("loading Wan2.1 T2V pipeline from %s (%s on %s)", root, dtype, device)
    pipe = WanPipeline.from_pretrained(root, dtype=dtype, local_files_only=True)
    return pipe.to(device)
