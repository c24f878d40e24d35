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
    """Wall time per named stage (device synced at both ends) and per denoising step.

    Steps are timed without host syncs: on CUDA each step records a pair of events and the times are read once,
    after the loop, so measuring does not stall the GPU queue between steps.
    """

    def __init__(self, device: torch.device):
        self._cuda = device.type == "cuda"
        self._sync: Callable[[], None] = (lambda: torch.cuda.synchronize(device)) if self._cuda else (lambda: None)
        self.stages: dict[str, float] = {}
        self._step_marks: list = []  # (start, end): CUDA event pairs, or perf_counter floats on CPU

    @property
    def steps(self) -> list[float]:
        """DiT seconds of each denoising step (all CFG branches of that step)."""
        if self._cuda:
            if self._step_marks:
                self._step_marks[-1][1].synchronize()
            return [start.elapsed_time(end) / 1000 for start, end in self._step_marks]
        return [end - start for start, end in self._step_marks]

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
        if self._cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
        else:
            start = time.perf_counter()
            yield
            end = time.perf_counter()
        self._step_marks.append((start, end))


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
