"""A diffusers-format Wan2.1 text-to-video folder, checked and read without torch.

The layout is Wan-AI/Wan2.1-T2V-1.3B-Diffusers': model_index.json naming the components, and one subfolder per
component. We check it first so a wrong path fails with a message naming the missing file instead of a Hub
lookup error, and before the slow imports and the load, so the command line answers a typo at once.
"""

from __future__ import annotations

import json
from pathlib import Path

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


def num_attention_heads(model_dir: str | Path) -> int:
    """The transformer's head count (it bounds the Ulysses degree), read before any weight is loaded."""
    config_path = check_model_folder(model_dir) / "transformer" / "config.json"
    if not config_path.is_file():
        raise ModelFolderError(f"{config_path} is missing")
    return int(json.loads(config_path.read_text())["num_attention_heads"])
