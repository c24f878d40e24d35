"""chitu_api.podpolicy: every pod value the apiserver or the platform would refuse, at the spec field to change."""

from __future__ import annotations

import copy

import pytest

from chitu_api.generationjob import GenerationJobSpec
from chitu_api.podpolicy import PodPolicy, pod_value_problems

BASE = {
    "model": {"uri": "/models/wan"},
    "prompts": ["a cat"],
    "output": {"uri": "s3://videos/runs"},
    "worker": {"image": "chitu/worker:1"},
}


def problems(policy: PodPolicy | None = None, **sections) -> list[tuple[str, str]]:
    spec = copy.deepcopy(BASE)
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(spec.get(section), dict):
            spec[section].update(values)
        else:
            spec[section] = values
    return pod_value_problems(GenerationJobSpec.model_validate(spec), policy)


def fields(policy: PodPolicy | None = None, **sections) -> list[str]:
    return [field for field, _ in problems(policy, **sections)]


def test_a_plain_spec_has_no_problems():
    assert problems() == []
    assert (
        problems(
            worker={
                "env": [
                    {"name": "LOG_LEVEL", "value": "debug"},
                    {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
                ],
                "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "32Gi"}},
                "podLabels": {"team": "video"},
                "podAnnotations": {"example.com/note": "any text"},
            },
            scheduling={
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                "nodeSelector": {"gpu": "h200"},
                "priorityClassName": "batch",
            },
            model={"volume": {"persistentVolumeClaim": {"claimName": "models"}}},
        )
        == []
    )


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"worker": {"podLabels": {"a=b": "x"}}}, "spec.worker.podLabels[a=b]"),
        ({"worker": {"podLabels": {"team": "has space"}}}, "spec.worker.podLabels[team]"),
        ({"worker": {"podLabels": {"chitu.dev/rank": "7"}}}, "spec.worker.podLabels[chitu.dev/rank]"),
        ({"worker": {"podAnnotations": {"bad key": "x"}}}, "spec.worker.podAnnotations[bad key]"),
        ({"worker": {"env": [{"name": "A=B", "value": "x"}]}}, "spec.worker.env[0].name"),
        ({"worker": {"resources": {"requests": {"cpu": "abc"}}}}, "spec.worker.resources.requests[cpu]"),
        (
            {"worker": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}},
            "spec.worker.resources.requests[cpu]",
        ),
        ({"worker": {"serviceAccountName": "Bad_Name"}}, "spec.worker.serviceAccountName"),
        ({"worker": {"image": " chitu"}}, "spec.worker.image"),
        (
            {"scheduling": {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]}},
            "spec.scheduling.tolerations[0].value",
        ),
        ({"scheduling": {"nodeSelector": {"a=b": "x"}}}, "spec.scheduling.nodeSelector[a=b]"),
        ({"scheduling": {"priorityClassName": "Bad_Name"}}, "spec.scheduling.priorityClassName"),
        ({"output": {"credentialsSecretRef": {"name": "Bad_Name"}}}, "spec.output.credentialsSecretRef.name"),
        ({"output": {"endpoint": "https://key:secret@s3.example.com"}}, "spec.output.endpoint"),
        ({"model": {"volume": {"hostPath": {"path": "/"}}}}, "spec.model.volume"),
        ({"model": {"volume": {"emptyDir": {}, "persistentVolumeClaim": {"claimName": "m"}}}}, "spec.model.volume"),
        ({"prompts": ["a cat", "bell\x07"]}, "spec.prompts[1]"),
    ],
)
def test_each_refused_value_is_named_by_its_field(sections, field):
    assert fields(**sections) == [field]


def test_credentials_come_only_from_secrets():
    ((field, message),) = problems(worker={"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "hunter2"}]})
    assert field == "spec.worker.env[0].value" and "secretKeyRef" in message
    assert "hunter2" not in message  # the refusal never echoes the credential


def test_prompts_keep_tabs_and_newlines_and_name_the_character():
    assert problems(prompts=["line one\n\tline two"]) == []
    ((field, message),) = problems(prompts=["esc\x1b[31m"])
    assert field == "spec.prompts[0]" and "U+001B at position 3" in message


def test_the_platform_decides_volumes_and_secrets():
    host_path = {"model": {"volume": {"hostPath": {"path": "/models"}}}}
    assert fields(**host_path) == ["spec.model.volume"]
    assert fields(PodPolicy(allow_host_path=True), **host_path) == []
    allow_list = PodPolicy(secret_names=("s3-creds",))
    assert fields(allow_list, output={"credentialsSecretRef": {"name": "s3-creds"}}) == []
    refused = problems(
        allow_list, worker={"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "admin", "key": "t"}}}]}
    )
    assert refused == [
        (
            "spec.worker.env[0].valueFrom.secretKeyRef.name",
            "Secret 'admin' is not one the platform lets jobs use (allowed: s3-creds)",
        )
    ]
