"""Attention-state algebra behind ring attention and DiTango, on one process: merging states of K/V blocks is
exact, and the ASE of an unchanged state is zero."""

import torch

from chitu_diffusion.attention.kernels import _math_with_lse
from chitu_diffusion.flex_cache.strategy.ditango.ditango import attention_state_error_sq
from chitu_diffusion.parallel.ring import AttentionState, merge_states


def _qkv(tokens: int = 24, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, tokens, 4, 16, generator=generator) for _ in range(3)]  # (B, L, H, D) each


def test_merging_block_states_equals_full_attention():
    q, k, v = _qkv()
    full_out, full_lse = _math_with_lse(q, k, v)
    states = [
        AttentionState(*_math_with_lse(q, k[:, a:b], v[:, a:b]))
        for a, b in ((0, 4), (4, 9), (9, 15), (15, 20), (20, 24))
    ]
    merged = merge_states(states)
    torch.testing.assert_close(merged.out, full_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(merged.lse, full_lse, rtol=1e-5, atol=1e-6)


def test_ase_is_zero_for_an_unchanged_state_and_grows_with_the_change():
    q, k, v = _qkv()
    state = AttentionState(*_math_with_lse(q, k[:, :12], v[:, :12]))
    total = merge_states([state, AttentionState(*_math_with_lse(q, k[:, 12:], v[:, 12:]))])
    assert float(attention_state_error_sq(state, state, total.lse)) == 0.0
    small = AttentionState(state.out * 1.01, state.lse)
    large = AttentionState(state.out * 1.10, state.lse)
    errors = [float(attention_state_error_sq(changed, state, total.lse)) for changed in (small, large)]
    assert 0 < errors[0] < errors[1]
