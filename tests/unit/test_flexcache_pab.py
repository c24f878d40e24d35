"""Pyramid Attention Broadcast on a tiny Wan2.1 transformer driven by a fake CFG denoising loop."""

import torch
from flexcache_loop import STEPS, decisions, denoise, make_strategy, run, tiny_transformer

from chitu_diffusion.flex_cache.strategy.pab.pab import PABAttentionProcessor, PABConfig


def test_ratio_zero_is_bit_identical_to_no_cache_and_holds_nothing(transformer, reference):
    latents, summary, memory = run(transformer, "pab", 0.0, STEPS)
    assert torch.equal(latents, reference)
    assert summary["units_reused"] == 0
    assert summary["units_computed"] == 2 * STEPS * 2 * 4  # (self + cross) x 4 blocks per (step, branch)
    assert memory == 0


def test_reset_clears_state_and_a_rerun_repeats_the_request(transformer):
    strategy = make_strategy("pab", 0.5, transformer=transformer)
    strategy.apply(transformer)
    try:
        first = denoise(transformer, STEPS)
        first_log = strategy.log.summary()["decisions"]
        strategy.reset()
        assert strategy.log.records == []
        assert strategy.step_hook.state_manager._state_cache == {}  # no branch's outputs survive
        assert all(hook.attention.output is None for hook in strategy.hooks)
        assert strategy.meter.current == 0 and strategy.extra_memory_bytes() == 0
        assert torch.equal(denoise(transformer, STEPS), first)
        assert strategy.log.summary()["decisions"] == first_log
    finally:
        strategy.remove(transformer)


def test_ranges_follow_the_documented_table_and_form_a_pyramid():
    table = {0.0: (1, 1), 0.25: (2, 4), 0.5: (3, 6), 0.75: (4, 9), 1.0: (5, 11)}
    for ratio, ranges in table.items():
        config = PABConfig.from_ratio(ratio)
        assert (config.self_range, config.cross_range) == ranges
    assert PABConfig.from_ratio(0.5).window(STEPS) == (2, 10)
    assert PABConfig.from_ratio(0.5).window(50) == (8, 42)


def test_cross_attention_reuses_more_than_self_attention(transformer):
    _, summary, _ = run(transformer, "pab", 0.5, STEPS)
    reused = {
        attr: sum(d["decision"] == "reuse" for d in summary["decisions"] if d["unit"].endswith(attr))
        for attr in ("attn1", "attn2")
    }
    assert reused["attn2"] > reused["attn1"] > 0


def test_only_the_middle_window_reuses_and_warmup_cooldown_compute(transformer):
    _, summary, _ = run(transformer, "pab", 1.0, STEPS, warmup=3, cooldown=1)
    reused_steps = {d["step"] for d in summary["decisions"] if d["decision"] == "reuse"}
    assert reused_steps and reused_steps <= set(range(3, 10))  # the middle window of 12 steps is [2, 10)
    assert {d["decision"] for d in summary["decisions"] if d["step"] < 3} == {"warmup"}
    assert {d["decision"] for d in summary["decisions"] if d["step"] == STEPS - 1} == {"cooldown"}
    assert {d["decision"] for d in summary["decisions"] if d["step"] == STEPS - 2} == {"compute"}  # past the window


def test_each_branch_broadcasts_its_own_attention_output(transformer):
    outputs = []  # blocks.0.attn2 output of every call, in call order
    handle = transformer.blocks[0].attn2.register_forward_hook(lambda module, args, output: outputs.append(output))
    strategy = make_strategy("pab", 1.0, transformer=transformer)
    strategy.apply(transformer)
    try:
        denoise(transformer, STEPS)
        log = decisions(strategy.log.summary(), unit="blocks.0.attn2")
    finally:
        strategy.remove(transformer)
        handle.remove()
    assert len(log) == len(outputs) == 2 * STEPS
    last, reused = {}, 0
    for record, output in zip(log, outputs, strict=False):
        branch, other = record["branch"], "uncond" if record["branch"] == "cond" else "cond"
        if record["decision"] == "reuse":
            assert torch.equal(output, last[branch])
            assert not torch.allclose(output, last[other])
            reused += 1
        else:
            last[branch] = output
    assert reused >= 2


def test_reports_the_peak_memory_of_broadcast_outputs(transformer):
    _, summary, memory = run(transformer, "pab", 0.5, STEPS)
    assert summary["units_reused"] > 0
    one_output = 48 * 64 * 4  # fp32 (1, 48 tokens, 64 channels)
    assert memory == 2 * 4 * 2 * one_output  # every (attn1, attn2) of 4 blocks held for both branches at once


def test_pab_wraps_processors_and_leaves_every_module_forward_alone():
    """Inside the compiled blocks PAB changes only processors. An instance-level `forward` (what a diffusers hook
    installs) is guarded by identity in dynamo 2.11, the worker image's: one variant per block, and past 8 blocks
    the rest ran eagerly on the GPU. Removing PAB puts the very same processors back."""
    transformer = tiny_transformer()
    before = {name: module.processor for name, module in transformer.named_modules() if hasattr(module, "processor")}
    strategy = make_strategy("pab", 0.5, transformer=transformer)
    strategy.apply(transformer)
    try:
        assert [name for name, module in transformer.blocks.named_modules() if "forward" in module.__dict__] == []
        wrapped = {name: m.processor for name, m in transformer.named_modules() if name in before}
        assert all(type(p) is PABAttentionProcessor for p in wrapped.values()) and len(wrapped) == 2 * len(
            transformer.blocks
        )
        assert all(wrapped[name].inner is before[name] for name in before)
    finally:
        strategy.remove(transformer)
    assert {name: m.processor for name, m in transformer.named_modules() if name in before} == before
