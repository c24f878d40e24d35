"""What one generation cost: stage and per-step timings, peak memory, and the metrics.json that reports them.

GPU work is asynchronous, so every timed region synchronises the device at both ends; otherwise the time of a
stage would land in whichever later stage first waits for the GPU.
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import torch

METRICS_FILE = "metrics.json"


class StageTimer:
    """Wall time per named stage and per denoising step, with a device sync around each measurement."""

    def __init__(self, device: torch.device):
        self._sync: Callable[[], None] = (
            (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        )
        self.stages: dict[str, float] = {}
        self.steps: list[float] = []  # DiT time of each denoising step (all CFG branches of that step)

    def _start(self) -> float:
        self._sync()
        return time.perf_counter()

    def _elapsed(self, start: float) -> float:
        self._sync()
        return time.perf_counter() - start

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = self._start()
        yield
        self.stages[name] = self.stages.get(name, 0.0) + self._elapsed(start)

    @contextmanager
    def step(self) -> Iterator[None]:
        start = self._start()
        yield
        self.steps.append(self._elapsed(start))


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    """CUDA: peak bytes allocated by tensors since `reset_peak_memory`. CPU: the process's lifetime peak RSS
    (the kernel offers no reset), which includes the loaded model and every earlier request."""
    if device.type == "cuda":
        return {"kind": "cuda_max_memory_allocated", "bytes": torch.cuda.max_memory_allocated(device)}
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"kind": "process_peak_rss", "bytes": kib * 1024}


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("chitu", "torch", "diffusers", "transformers"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    if torch.cuda.is_available():
        found["cuda"] = str(torch.version.cuda)
        found["gpu"] = torch.cuda.get_device_name()
    return found


def write_metrics(output_dir: Path, metrics: dict) -> Path:
    """Write `metrics.json` atomically (temporary name, then rename), like the video."""
    path = output_dir / METRICS_FILE
    partial = output_dir / f".{METRICS_FILE}.partial"
    partial.write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    partial.replace(path)
    return path
