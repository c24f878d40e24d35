"""FlexCache: feature reuse across denoising steps (strategy interface, registry, strategies)."""
