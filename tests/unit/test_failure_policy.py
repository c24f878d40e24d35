"""spec.runPolicy.podFailurePolicy: the first matching rule decides what a failed rank does to the job."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chitu_api.failurepolicy import COUNT, FAIL_JOB, IGNORE, PodFailurePolicy, PodFailurePolicyRule

POLICY = PodFailurePolicy.model_validate(
    {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42, 43]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [1, 42, 43, 137]}},
        ]
    }
)


@pytest.mark.parametrize(
    ("exit_code", "conditions", "action"),
    [
        (42, {}, FAIL_JOB),  # first rule
        (1, {"DisruptionTarget": "True"}, IGNORE),  # evicted: not the job's fault
        (1, {"DisruptionTarget": "False"}, COUNT),  # no rule matches: counts against backoffLimit
        (7, {}, FAIL_JOB),  # NotIn
        (137, {}, COUNT),
        (None, {}, COUNT),  # no exit code (a pod deleted before it ran) never matches onExitCodes
    ],
)
def test_first_matching_rule_decides(exit_code, conditions, action):
    assert POLICY.action(exit_code, conditions) == action


def test_exit_code_zero_never_matches():
    rule = PodFailurePolicyRule.model_validate(
        {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [1]}}
    )
    assert not rule.matches(0, {})


@pytest.mark.parametrize(
    "rule",
    [
        {"action": "Count"},
        {"action": "Count", "onExitCodes": {"operator": "In", "values": [1]}, "onPodConditions": [{"type": "X"}]},
    ],
)
def test_a_rule_needs_exactly_one_matcher(rule):
    with pytest.raises(ValidationError, match="exactly one of onExitCodes or onPodConditions"):
        PodFailurePolicyRule.model_validate(rule)


def test_unknown_action_is_refused_with_the_allowed_values():
    with pytest.raises(ValidationError, match="'FailJob', 'Ignore' or 'Count'"):
        PodFailurePolicyRule.model_validate({"action": "Retry", "onExitCodes": {"operator": "In", "values": [1]}})
