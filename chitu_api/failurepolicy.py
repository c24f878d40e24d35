"""spec.runPolicy.podFailurePolicy: what a failed rank means for the job, as Kubernetes' Job podFailurePolicy says it.

Rules are checked in order against the failed rank an attempt quotes (its root cause: operator/chitu_operator/
rootcause.py); the first that matches decides:
``FailJob`` ends the job at once (no restart), ``Ignore`` restarts the gang without counting against
backoffLimit (a preempted node, a drained machine), ``Count`` restarts it and counts (the default when no
rule matches). The worker's own classes come first and need no rule: exit code 2 (invalid input,
chitu_api.exitcodes) always fails the job.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from chitu_api.schema import ContractModel

FAIL_JOB, IGNORE, COUNT = "FailJob", "Ignore", "Count"


class OnExitCodes(ContractModel):
    """Matches the worker container's exit code."""

    operator: Literal["In", "NotIn"] = Field(description="In: the code is one of values; NotIn: it is none of them.")
    values: tuple[int, ...] = Field(min_length=1, max_length=255, description="Exit codes (0 never matches).")


class OnPodCondition(ContractModel):
    """Matches a condition on the failed pod (e.g. DisruptionTarget: evicted, preempted, its node drained)."""

    type: str = Field(min_length=1, max_length=316, description="The pod condition's type.")
    status: Literal["True", "False", "Unknown"] = Field("True", description="The status it must have.")


class PodFailurePolicyRule(ContractModel):
    """One rule: exactly one of onExitCodes or onPodConditions (checked by the operator: runPolicy, which may change
    while the job runs, carries no CEL rule)."""

    action: Literal["FailJob", "Ignore", "Count"] = Field(description="What the match does to the job.")
    on_exit_codes: OnExitCodes | None = Field(None, description="Match on the worker's exit code.")
    on_pod_conditions: tuple[OnPodCondition, ...] | None = Field(
        None, min_length=1, max_length=20, description="Match when any of these conditions is on the pod."
    )

    @model_validator(mode="after")
    def _one_matcher(self) -> PodFailurePolicyRule:
        if (self.on_exit_codes is None) == (self.on_pod_conditions is None):
            raise ValueError("set exactly one of onExitCodes or onPodConditions")
        return self

    def matches(self, exit_code: int | None, conditions: dict[str, str]) -> bool:
        """``conditions``: the failed pod's condition types -> status."""
        if self.on_exit_codes is not None:
            if exit_code is None or exit_code == 0:
                return False
            return (exit_code in self.on_exit_codes.values) == (self.on_exit_codes.operator == "In")
        return any(conditions.get(rule.type) == rule.status for rule in self.on_pod_conditions or ())


class PodFailurePolicy(ContractModel):
    """Ordered rules; the first match decides."""

    rules: tuple[PodFailurePolicyRule, ...] = Field(min_length=1, max_length=20, description="The rules, in order.")

    def action(self, exit_code: int | None, conditions: dict[str, str]) -> str:
        """FailJob, Ignore or Count for a failed rank."""
        return next((rule.action for rule in self.rules if rule.matches(exit_code, conditions)), COUNT)
