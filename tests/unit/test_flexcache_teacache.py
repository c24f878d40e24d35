"""TeaCache on a tiny Wan2.1 transformer driven by a fake CFG denoising loop."""

import dataclasses

import pytest
import torch
from diffusers.hooks import ModelHook
from flexcache_loop import STEPS, decisions, denoise, make_strategy, run

from chitu_diffusion.flex_cache.hooks import attach_hook, detach_hooks
from chitu_diffusion.flex_cache.strategy.teacache.teacache import FALLBACK_COEFFICIENTS, TeaCacheConfig
from chitu_diffusion.models.adapter import WAN21


def test_ratio_zero_is_bit_identical_to_no_cache(transformer, reference):
    latents, summary, _ = run(transformer, "teacache", 0.0, STEPS)
    assert torch.equal(latents, reference)
    assert summary["units_reused"] == 0
    assert summary["units_computed"] == 2 * STEPS  # one block-stack unit per (step, branch)


def test_reset_clears_state_and_a_rerun_repeats_the_request(transformer):
    strategy = make_strategy("teacache", 0.5, warmup=0, transformer=transformer)
    strategy.apply(transformer)
    try:
        first = denoise(transformer, STEPS)
        first_log = strategy.log.summary()["decisions"]
        strategy.reset()
        assert strategy.log.records == []
        assert strategy.state_manager._state_cache == {}  # no per-branch residual or accumulator survives
        assert strategy.meter.current == 0 and strategy.extra_memory_bytes() == 0
        assert torch.equal(denoise(transformer, STEPS), first)
        assert strategy.log.summary()["decisions"] == first_log
    finally:
        strategy.remove(transformer)


def test_reuse_never_decreases_with_an_absolute_threshold(transformer):
    """The published / calibrated path: fixed coefficients, threshold = ratio x max_threshold (here 1.2)."""
    adapter = dataclasses.replace(
        WAN21,
        teacache_coefficients={"wan2.1-custom": (0.0, 0.0, 1.0, 0.5, 0.0)},
        teacache_fast_thresholds={"wan2.1-custom": 0.6},
    )
    ratios = [i / 10 for i in range(11)]
    fractions = [run(transformer, "teacache", r, STEPS, adapter=adapter)[1]["reuse_fraction"] for r in ratios]
    assert fractions == sorted(fractions), dict(zip(ratios, fractions, strict=True))
    assert fractions[5] > 0


def test_warmup_and_cooldown_steps_always_compute(transformer):
    _, summary, _ = run(transformer, "teacache", 1.0, STEPS, warmup=3, cooldown=2)
    by_step = {d["step"]: set() for d in summary["decisions"]}
    for d in summary["decisions"]:
        by_step[d["step"]].add(d["decision"])
    assert all(by_step[s] == {"warmup"} for s in range(3))
    assert all(by_step[s] == {"cooldown"} for s in range(STEPS - 2, STEPS))
    assert summary["units_reused"] > 0


class _InputRecorder(ModelHook):
    """Records a module's first argument as the hooks attached after this one leave it."""

    def __init__(self, seen: list):
        super().__init__()
        self.seen = seen

    def pre_forward(self, module, *args, **kwargs):
        self.seen.append(args[0])
        return args, kwargs


def test_each_branch_reuses_its_own_residual(transformer):
    stack_in, stack_out = [], []  # block-stack input and output of every transformer call, in call order
    handle = transformer.blocks[0].register_forward_pre_hook(lambda module, args: stack_in.append(args[0]))
    # attached before TeaCache, so it runs inside TeaCache's hook on norm_out and sees the residual applied
    attach_hook(transformer.norm_out, _InputRecorder(stack_out), "test_stack_output")
    strategy = make_strategy("teacache", 1.0, transformer=transformer)
    strategy.apply(transformer)
    try:
        denoise(transformer, STEPS)
        log = strategy.log.summary()["decisions"]
    finally:
        strategy.remove(transformer)
        detach_hooks(transformer, "test_stack_output")
        handle.remove()
    assert len(log) == len(stack_in) == len(stack_out) == 2 * STEPS
    residual, reused = {}, 0
    for record, x, y in zip(log, stack_in, stack_out, strict=False):
        branch, other = record["branch"], "uncond" if record["branch"] == "cond" else "cond"
        if record["decision"] == "reuse":
            assert torch.equal(y, x + residual[branch])
            assert not torch.allclose(y, x + residual[other])
            reused += 1
        else:
            residual[branch] = y - x
    assert reused >= 2 and {d["branch"] for d in log if d["decision"] == "reuse"} == {"cond", "uncond"}


def test_reports_the_residual_memory_it_holds(transformer):
    _, summary, memory = run(transformer, "teacache", 0.5, STEPS)
    assert summary["units_reused"] > 0
    tokens, channels = 48, 64
    assert memory >= 2 * tokens * channels * 4  # one fp32 (1, 48, 64) residual per branch


def config(ratio, variant):
    return TeaCacheConfig.from_ratio(ratio, variant, WAN21.teacache_coefficients, WAN21.teacache_fast_thresholds)


def test_published_wan_thresholds_map_slow_to_quarter_and_fast_to_half():
    assert config(0.25, "wan2.1-1.3b").threshold == pytest.approx(0.05)  # published "slow"
    assert config(0.5, "wan2.1-1.3b").threshold == pytest.approx(0.10)  # published "fast"
    assert config(0.5, "wan2.1-14b").threshold == pytest.approx(0.20)
    assert config(0.5, "wan2.1-1.3b").coefficients[0] == pytest.approx(-5.21862437e04)  # use_ret_steps=True fit
    fallback = config(0.5, "wan2.1-custom")
    assert fallback.relative and fallback.coefficients == FALLBACK_COEFFICIENTS
    assert config(0.0, "wan2.1-1.3b").threshold == 0.0


def test_rescale_is_clamped_at_zero():
    published = config(0.5, "wan2.1-1.3b")
    assert published.rescale(0.0) == 0.0  # the raw polynomial is -0.05 there
    assert published.rescale(0.02) > 0


def test_decisions_are_logged_per_step_and_branch(transformer):
    _, summary, _ = run(transformer, "teacache", 0.5, STEPS)
    for branch in ("cond", "uncond"):
        assert [d["step"] for d in decisions(summary, branch)] == list(range(STEPS))
