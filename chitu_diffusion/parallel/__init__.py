"""CFG and context parallelism (Ulysses + ring) for a gang of ranks launched by torchrun.

layout.py (degrees, validated once) -> groups.py (process groups, built once) -> parallelize.py (the one entry:
CFG split -> context parallelism -> FlexCache -> compile). launch.py is the only reader of rank variables.
See docs/parallelism.md.
"""
