"""DiTango's policy picture: one pixel per (step, layer, group) decision, as a binary PPM and an enlarged PNG.

Columns are denoising steps (left to right), rows are (layer, group) pairs, row = layer * groups + group (layer 0
on top). The PPM (P6, 8-bit RGB) is the exact table, one pixel per decision, readable without any library; the
PNG is the same picture scaled up with Pillow so people can see it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: decision code -> (label, RGB); the codes are what `DiTangoPlanner.history` stores
LEGEND = (
    ("warmup/cooldown", (128, 128, 128)),  # grey: forced full compute
    ("anchor", (66, 133, 244)),  # blue: full compute, ASE measured
    ("compute", (251, 140, 0)),  # orange: the plan computed this group
    ("reuse", (52, 168, 83)),  # green: the plan reused this group's cached state
)
PALETTE = np.array([rgb for _, rgb in LEGEND], dtype=np.uint8)  # (codes, 3)
PNG_CELL = 8  # pixels per decision in the PNG


def policy_pixels(codes: np.ndarray) -> np.ndarray:
    """codes (steps, rows) -> RGB image (rows, steps, 3)."""
    return PALETTE[codes.T]


def write_ppm(path: Path, codes: np.ndarray) -> Path:
    pixels = policy_pixels(codes)  # (rows, steps, 3)
    height, width, _ = pixels.shape
    path.write_bytes(b"P6\n%d %d\n255\n" % (width, height) + pixels.tobytes())
    return path


def write_png(path: Path, codes: np.ndarray) -> Path:
    from PIL import Image

    pixels = policy_pixels(codes).repeat(PNG_CELL, axis=0).repeat(PNG_CELL, axis=1)  # (rows*8, steps*8, 3)
    Image.fromarray(pixels).save(path)
    return path


def read_ppm(path: Path) -> np.ndarray:
    """The RGB pixels (rows, steps, 3) of a P6 file written by `write_ppm` (for tests and tools)."""
    data = Path(path).read_bytes()
    magic, size, maxval, body = data.split(b"\n", 3)
    if magic != b"P6" or maxval != b"255":
        raise ValueError(f"{path} is not an 8-bit binary PPM (P6)")
    width, height = map(int, size.split())
    return np.frombuffer(body, dtype=np.uint8).reshape(height, width, 3)
