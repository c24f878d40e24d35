"""The parallel primitives: CFG and context parallelism (Ulysses + ring) for a gang of ranks launched by torchrun.

degrees.py (cfg x ulysses x ring, validated once) -> groups.py (process groups, built once) -> cfg.py, ulysses.py,
ring.py, context_parallel.py, attention.py (what runs on them); reducer.py makes cache statistics gang-wide.
launch.py is the only reader of rank variables. Assembling them on a transformer, in order, is
`chitu_diffusion.engines.parallelize`'s job. See docs/parallelism.md.
"""
