"""Fixtures of the FlexCache strategy tests: one tiny transformer per module and its no-cache result."""

import pytest
from flexcache_loop import STEPS, denoise, tiny_transformer


@pytest.fixture(scope="module")
def transformer():
    return tiny_transformer()


@pytest.fixture(scope="module")
def reference(transformer):
    """Latents of the loop without any strategy (`STEPS` steps)."""
    return denoise(transformer, STEPS)
