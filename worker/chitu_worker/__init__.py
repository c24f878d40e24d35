"""Chitu's worker: runs one pod's share of a GenerationJob.

    chitu-worker [--job-file FILE]

main (CLI) -> plan (job + pod env -> WorkerPlan) -> launcher (in-process, or torchrun ranks) -> rank (claim work
-> generate with chitu_diffusion -> upload -> report). storage, outputs, modelcache, progress and kube hold the
I/O; docs/generationjob.md is the contract with the operator.
"""
