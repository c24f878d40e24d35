"""Load a diffusers-format Wan2.1 text-to-video folder: one code path for the tiny test model and a real one.

The folder layout is Wan-AI/Wan2.1-T2V-1.3B-Diffusers': model_index.json naming the components, and one
subfolder per component. We check the layout first so a wrong path fails with a message naming the missing
file instead of a Hub lookup error; loading itself is diffusers' `WanPipeline.from_pretrained`, strictly local.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import WanPipeline

logger = logging.getLogger(__name__)

REQUIRED_COMPONENTS = ("tokenizer", "text_encoder", "transformer", "vae", "scheduler")


class ModelFolderError(FileNotFoundError):
    """The model folder, its model_index.json or one of its component folders is missing."""


def check_model_folder(model_dir: str | Path) -> Path:
    """The folder as a Path, after checking model_index.json and every required component folder exist."""
    root = Path(model_dir).expanduser()
    if not root.is_dir():
        raise ModelFolderError(f"model folder {root} does not exist (expected a diffusers-format Wan2.1 T2V folder)")
    index_path = root / "model_index.json"
    if not index_path.is_file():
        raise ModelFolderError(f"{index_path} is missing: {root} is not a diffusers pipeline folder")
    index = json.loads(index_path.read_text())
    for name in REQUIRED_COMPONENTS:
        if index.get(name, [None])[0] is None:
            raise ModelFolderError(f"{index_path} names no {name!r} component")
        if not (root / name).is_dir():
            raise ModelFolderError(f"component folder {root / name} is missing")
    return root


def load_wan_pipeline(model_dir: str | Path, dtype: torch.dtype, device: str) -> WanPipeline:
    """Every component in `dtype` on `device`; never touches the network."""
    root = check_model_folder(model_dir)
    logger.info("loading Wan2.1 T2V pipeline from %s (%s on %s)", root, dtype, device)
    pipe = WanPipeline.from_pretrained(root, dtype=dtype, local_files_only=True)
    return pipe.to(device)
