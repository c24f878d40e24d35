"""The GenerationJob status as typed values: the schema of what the operator and the worker write.

Written through the status subresource only. The operator owns phase, conditions, message, times, restarts,
worldSize and observedGeneration; the worker's rank 0 owns progress and outputs (the operator fills in
progress.summary when it lags the counts). Every write is a merge patch of the writer's own keys. The CRD's
status schema is generated from these models (chitu_api.crd), so a key a writer adds must be added here first,
or the apiserver prunes it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from chitu_api.schema import ContractModel, rules

#: status.phase; each but Pending is also the type of the condition set True on entering it.
Phase = Literal["Pending", "Running", "Restarting", "Succeeded", "Failed", "Suspended"]
PHASES: tuple[str, ...] = Phase.__args__


class Condition(ContractModel):
    """One condition: the latest observation of one aspect of the job (Kubernetes' condition convention)."""

    type: str = Field(
        description="Created, Running, Restarting, Succeeded, Failed, Suspended, Queued (waiting "
        "for Kueue's admission) or PodsPending (a pod waits for something to fix: a missing Secret "
        "or PVC, an image pull error, unschedulable)."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the condition holds.")
    reason: str | None = Field(
        None,
        description="CamelCase cause, e.g. PodsRunning, RankFailed, InvalidSpec, "
        "BackoffLimitExceeded, or a pod's waiting reason such as ImagePullBackOff.",
    )
    message: str | None = Field(None, description="Human-readable detail.")
    last_transition_time: datetime | None = Field(None, description="When status last changed.")
    observed_generation: int | None = Field(
        None, description="The metadata.generation the condition was set for.", json_schema_extra=rules(format="int64")
    )


class Progress(ContractModel):
    """How far the worker's rank 0 is, written as it denoises."""

    current_step: int | None = Field(None, description="Denoising step of the current prompt.")
    total_steps: int | None = Field(None, description="Denoising steps per prompt.")
    percent: int | None = Field(
        None, ge=0, le=100, description="Overall progress over all prompts (the Progress% column)."
    )
    prompts_done: int | None = Field(None, description="Prompts whose outputs are uploaded.")
    prompts_total: int | None = Field(None, description="Prompts in the job.")
    last_update_time: datetime | None = Field(None, description="When rank 0 last reported.")
    summary: str | None = Field(
        None,
        description="promptsDone/promptsTotal (the Prompts column; written with the "
        "counts by the worker, filled in by the operator when behind).",
    )


class PromptOutput(ContractModel):
    """The objects of one finished prompt (docs/generationjob.md: object keys)."""

    index: int = Field(description="The prompt's index in spec.prompts (0 for spec.prompt).")
    prompt: str | None = Field(None, description="The prompt's text.")
    video: str | None = Field(None, description="s3:// URI of video.mp4.")
    metrics: str | None = Field(None, description="s3:// URI of metrics.json (uploaded last).")
    policy: str | None = Field(None, description="Optional strategy output, e.g. DiTango's policy picture.")
    completed_time: datetime | None = Field(None, description="When the prompt's objects were all uploaded.")


class GenerationJobStatus(ContractModel):
    """Observed state of the job, written by the operator and the worker's rank 0."""

    phase: Phase | None = Field(None, description=f"{', '.join(PHASES)} (the Status column).")
    conditions: tuple[Condition, ...] = Field(
        (),
        description="One condition per type.",
        json_schema_extra=rules(**{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}),
    )
    progress: Progress | None = Field(None, description="The worker's progress over the whole job.")
    outputs: tuple[PromptOutput, ...] = Field((), description="One entry per finished prompt, in index order.")
    start_time: datetime | None = Field(None, description="When the gang first ran (deadlines count from here).")
    completion_time: datetime | None = Field(None, description="When the job succeeded or failed.")
    restarts: int | None = Field(None, description="Gang restarts so far (the Restarts column).")
    ignored_restarts: int | None = Field(
        None,
        description="Restarts a podFailurePolicy Ignore rule or a queue's "
        "preemption caused: they do not count against backoffLimit.",
    )
    first_failure: str | None = Field(
        None,
        description="Why the first attempt failed: the root cause, quoted in "
        "the final message when later attempts fail for other reasons.",
    )
    world_size: int | None = Field(None, description="Processes in the gang: parallelism.cfg x parallelism.cpSize.")
    observed_generation: int | None = Field(
        None, description="The metadata.generation the operator last acted on.", json_schema_extra=rules(format="int64")
    )
    message: str | None = Field(None, description="The latest transition's message.")
