"""Compiled code kept across processes (torch's caching_precompile, compile_cache.py) stays correct.

With caching_precompile on, dynamo keeps only the guards that survive a process: none on an object's identity.
The engine swaps what a compiled block calls in one process (the FP8 precision check puts the bf16 attention
kernel and linears back for its reference run), so every swapped part must differ by a guarded value or type:
a block compiled around one kernel must never run for another. These tests compile with dynamo's `eager` backend
(the guards are dynamo's whatever the backend; no code generation), except the one that starts fresh processes.
"""

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch._dynamo
from flexcache_loop import tiny_transformer
from test_pipeline import request
from torch._inductor.virtualized import V

from chitu_diffusion.attention.kernels import NamedKernel, get_kernel, register_kernel
from chitu_diffusion.attention.processor import set_cross_attention, set_self_attention
from chitu_diffusion.compile_cache import (
    CHOICES_FOLDER,
    INDUCTOR_CACHE_ENV,
    MODEL_CACHE_NAME,
    compile_cache_dir,
    keeping_traced_code,
    use_compile_cache,
)
from chitu_diffusion.config import EngineConfig
from chitu_diffusion.engines.single import Engine
from chitu_diffusion.models.random_init import build_random_pipeline
from chitu_diffusion.precision.fp8_attention import fp8_attention_kernel


@pytest.fixture
def fresh_dynamo(monkeypatch, tmp_path):
    """Nothing compiled before or left after; what an engine sets for its process (cache folder, inductor
    choices) is put back. Until an engine sets the cache folder, anything compiled goes under tmp_path (a bare
    relative name left an empty folder in the checkout)."""
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, str(tmp_path / "inductor-cache-before-the-engine"))
    choices = V.choices
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
    V.set_choices_handler(choices)


def forward(transformer: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 3, 8, 8, generator=generator)
    text = torch.randn(1, 8, 32, generator=generator)
    with torch.no_grad():
        return transformer(latents, torch.tensor([500.0]), text, return_dict=False)[0]


def test_each_attention_kernel_keeps_its_own_compiled_graph(fresh_dynamo):
    kernels = {"exact": get_kernel("math"), "fp8": fp8_attention_kernel(torch.device("cpu"))}
    eager = {}
    for name, kernel in kernels.items():
        transformer = tiny_transformer()
        set_cross_attention(transformer, "blocks", "attn2", get_kernel("math"))
        set_self_attention(transformer, "blocks", "attn1", kernel)
        eager[name] = forward(transformer)
    assert not torch.allclose(eager["exact"], eager["fp8"], rtol=1e-3, atol=1e-4)  # the swap must be visible

    transformer = tiny_transformer()
    set_cross_attention(transformer, "blocks", "attn2", get_kernel("math"))
    with keeping_traced_code():  # as the engine compiles and traces: identity guards dropped
        transformer.compile_repeated_blocks(fullgraph=True, backend="eager")
        for name in ("exact", "fp8", "exact", "fp8"):  # each swap back must find its own graph, not the last one
            set_self_attention(transformer, "blocks", "attn1", kernels[name])
            assert torch.equal(forward(transformer), eager[name]), name


def test_kernels_are_values_with_one_function_per_name():
    assert get_kernel("math") == NamedKernel("math") and get_kernel("math") != get_kernel("sdpa")
    with pytest.raises(ValueError, match="attention kernel must be one of sdpa, fa3, cudnn, flash, math, got 'x'"):
        get_kernel("x")
    with pytest.raises(ValueError, match="'math' is already registered"):
        register_kernel("math", lambda q, k, v: q)


def eager_backend_compile(monkeypatch):
    """The engine's own compile calls, with dynamo's `eager` backend added."""
    compile_module = torch.nn.Module.compile

    def compile_eagerly(self, **options):
        return compile_module(self, backend="eager", **options)

    monkeypatch.setattr(torch.nn.Module, "compile", compile_eagerly)


def test_fp8_precision_check_compiled_compares_with_bf16(fresh_dynamo, monkeypatch, tmp_path):
    """The check's bf16 rerun puts the bf16 linears and kernel back inside compiled blocks, then the next video
    swaps FP8 in again: a graph reused across the swap would report a distance of 0 or drift from the uncompiled
    check."""
    eager_backend_compile(monkeypatch)
    settings = ["infer.diffusion.precision=fp8", "infer.diffusion.precision_check=true"]
    checks = {}
    for compiled in ("false", "true"):
        cache = f"infer.diffusion.compile_cache_dir={tmp_path / 'cache'}"
        config = EngineConfig.from_overrides([*settings, f"infer.diffusion.compile={compiled}", cache])
        engine = Engine(build_random_pipeline(), config)
        assert engine.compile is (compiled == "true")
        runs = [engine.generate(request(), tmp_path / compiled / str(i)).metrics for i in range(2)]
        checks[compiled] = [run["precision_check"]["rel_l2_latents"] for run in runs]
    assert checks["false"][0] > 1e-3
    for uncompiled, compiled in zip(checks["false"], checks["true"], strict=True):
        assert compiled == pytest.approx(uncompiled, rel=1e-3)


FRESH_PROCESS = """
import json, sys
from torch._dynamo.utils import counters
from chitu_diffusion.config import EngineConfig
from chitu_diffusion.engines.single import Engine
from chitu_diffusion.task import DiffusionUserParams

model_dir, cache_dir, *strategies = sys.argv[1:]
settings = ["infer.diffusion.device=cpu", "infer.diffusion.compile=true", "infer.diffusion.attention_backend=math",
            f"infer.diffusion.compile_cache_dir={cache_dir}"]
engine = Engine.load(model_dir, EngineConfig.from_overrides(settings))
report = {"installed": counters["dynamo_cache"]["dynamo_cache_hit"]}
for strategy in strategies:
    request = dict(prompt="a cat", num_frames=5, height=32, width=32, num_inference_steps=4, seed=3,
                   flexcache_params=dict(strategy=strategy, cache_ratio=0.5))
    traced = counters["frames"]["ok"]
    latents = engine.sample(DiffusionUserParams.model_validate(request)).latents
    report[strategy] = {"traced": counters["frames"]["ok"] - traced, "checksum": float(latents.double().sum())}
print(json.dumps(report))
"""


def fresh_process(model_dir, cache_dir, *strategies) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(model_dir), str(cache_dir), *strategies],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_fresh_process_installs_the_traced_code_instead_of_tracing(tiny_model_dir, tmp_path):
    """Three processes share one cache folder, compiling with inductor as the engine does: the first traces and
    saves; the second installs that code (traces nothing for it, same latents) and still traces a new variant
    (PAB's; torch 2.11 failed that without `compile_blocks` renumbering); the third installs both."""
    cache = tmp_path / "cache"
    first = fresh_process(tiny_model_dir, cache, "none")
    assert first["installed"] == 0 and first["none"]["traced"] >= 1
    second = fresh_process(tiny_model_dir, cache, "none", "pab")
    assert second["installed"] >= 1 and second["none"] == {**first["none"], "traced": 0}
    assert second["pab"]["traced"] >= 1
    third = fresh_process(tiny_model_dir, cache, "pab")
    assert third["installed"] >= 1 and third["pab"] == {**second["pab"], "traced": 0}


def test_identity_guards_are_dropped_only_for_the_engines_code_and_only_their_warnings_filtered(caplog):
    """caching_precompile is on inside `keeping_traced_code` only: other code the process compiles keeps its
    identity guards. Inside, dynamo's warning per dropped guard is filtered; other guard warnings pass."""
    assert not torch._dynamo.config.caching_precompile
    guards_log = logging.getLogger("torch._dynamo.guards")
    with keeping_traced_code(), caplog.at_level(logging.WARNING, logger="torch._dynamo.guards"):
        assert torch._dynamo.config.caching_precompile
        guards_log.warning("%s guard on %s is dropped with caching_precompile=True.", "ID_MATCH", "L['x']")
        guards_log.warning("some other guard problem")
    assert not torch._dynamo.config.caching_precompile
    with keeping_traced_code(enabled=False):
        assert not torch._dynamo.config.caching_precompile
    assert [record.getMessage() for record in caplog.records] == ["some other guard problem"]


def test_auto_folder_is_next_to_a_writable_model_else_the_users_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache_dir("auto", tmp_path) == tmp_path / MODEL_CACHE_NAME
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only model volume
    assert compile_cache_dir("auto", tmp_path) == tmp_path / "xdg" / "chitu" / "compile-cache"
    assert compile_cache_dir("~/elsewhere", tmp_path) == Path("~/elsewhere").expanduser()


def test_an_unusable_cache_folder_falls_back_instead_of_failing_the_load(tmp_path, monkeypatch, caplog):
    """The worker's home is on a read-only root: a folder that cannot be made must not fail the engine."""
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, str(tmp_path / "inductor-cache-before-the-engine"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "a-file").write_text("")
    with caplog.at_level(logging.WARNING):
        folder = use_compile_cache(tmp_path / "a-file" / "cache")  # under a file: mkdir fails
    assert folder == tmp_path / "tmp" / "chitu-compile-cache" / CHOICES_FOLDER and folder.is_dir()
    assert os.environ[INDUCTOR_CACHE_ENV] == str(folder)
    assert "a-file/cache/wide-rows-2048 is unusable" in caplog.text
