"""The CRD on the real kube-apiserver (no operator): schema bounds and CEL rules reject bad specs with
messages naming the field, defaults are filled in, and the spec is immutable except runPolicy (and
scheduling while suspended)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from chitu_api.generationjob import Parallelism
from chitu_api.names import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VALID = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "GenerationJob",
    "metadata": {"name": "probe"},
    "spec": {
        "model": {"uri": "/models/wan"},
        "prompt": "a cat",
        "worker": {"image": "w"},
        "output": {"uri": "s3://videos/runs"},
    },
}


def create(k8s, namespace: str, manifest: dict, dry_run: bool = False) -> dict:
    return k8s.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest, dry_run="All" if dry_run else None
    )


def rejection(k8s, namespace: str, manifest: dict) -> str:
    with pytest.raises(ApiException) as err:
        create(k8s, namespace, manifest, dry_run=True)
    assert err.value.status == 422
    return json.loads(err.value.body)["message"]


RING_ATTENTION_REFUSAL = (
    "spec.parallelism: Invalid value: flexCache.strategy ditango needs ring attention over at "
    "least 2 ranks: set parallelism.cpSize >= 2 and parallelism.upLimit < parallelism.cpSize"
)


def with_spec(**changes) -> dict:
    manifest = copy.deepcopy(VALID)
    manifest["spec"].update(changes)
    return manifest


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"generation": {"frames": 80}}, "spec.generation.frames: Invalid value: 80: generation.frames must be 4k+1"),
        (
            {"generation": {"width": 100}},
            "spec.generation.width: Invalid value: 100: generation.width must be a multiple",
        ),
        ({"generation": {"steps": 0}}, "spec.generation.steps: Invalid value: 0"),
        ({"flexCache": {"cacheRatio": 1.5}}, "spec.flexCache.cacheRatio: Invalid value: 1.5"),
        ({"flexCache": {"strategy": "foo"}}, 'spec.flexCache.strategy: Unsupported value: "foo"'),
        (
            {"output": {"uri": "http://x"}},
            'spec.output.uri: Invalid value: "http://x": output.uri must start with s3://',
        ),
        (
            {"model": {"uri": "models/wan"}},
            'spec.model.uri: Invalid value: "models/wan": model.uri must be an absolute',
        ),
        (
            {"parallelism": {"cfg": 1, "cpSize": 3, "gpusPerPod": 2}},
            "spec.parallelism.gpusPerPod: Invalid value: world size (cfg x cpSize) must be a multiple of gpusPerPod",
        ),
        ({"parallelism": {"cfg": 3}}, "spec.parallelism.cfg: Unsupported value: 3"),
        (
            {"generation": {"steps": 4}, "flexCache": {"strategy": "teacache", "warmup": 2, "cooldown": 2}},
            "spec.flexCache: Invalid value: flexCache.warmup + flexCache.cooldown must be less than generation.steps",
        ),
        ({"prompts": ["a dog"]}, "spec.prompts: Invalid value: exactly one of spec.prompt or spec.prompts must be set"),
        ({"flexCache": {"strategy": "ditango"}}, RING_ATTENTION_REFUSAL),
        # issue 10's case: cpSize 2 with the default upLimit 8 is Ulysses 2 x ring 1, which DiTango cannot use
        ({"flexCache": {"strategy": "ditango"}, "parallelism": {"cpSize": 2}}, RING_ATTENTION_REFUSAL),
        (
            {"output": {"uri": "s3://ab/x"}},
            'spec.output.uri: Invalid value: "s3://ab/x": output.uri must start with s3://',
        ),
        (
            {"output": {"uri": "s3://videos", "endpoint": "s3.local"}},
            'spec.output.endpoint: Invalid value: "s3.local": output.endpoint must be an http(s) URL',
        ),
        (
            {"worker": {"image": "w", "env": [{"name": "WORLD_SIZE", "value": "9"}]}},
            'spec.worker.env[0].name: Invalid value: "WORLD_SIZE": is set by the operator and cannot be overridden',
        ),
        (
            {"runPolicy": {"cleanPodPolicy": "Sometimes"}},
            'spec.runPolicy.cleanPodPolicy: Unsupported value: "Sometimes"',
        ),
        ({"runPolicy": {"backoffLimit": 101}}, "spec.runPolicy.backoffLimit: Invalid value: 101"),
    ],
)
def test_invalid_specs_are_rejected_naming_the_field(k8s, namespace, changes, expected):
    assert expected in rejection(k8s, namespace, with_spec(**changes))


def worker_with(**fields) -> dict:
    return with_spec(worker={"image": "w", **fields})


# Values the worker pods carry (issue 14's hanging cases): refused at apply by Kubernetes' own rules, rendered as
# CEL from chitu_api.kubernetes_rules (chitu_api.kubernetes_cel), each naming the field.
POD_LEVEL_REFUSALS = [
    (
        worker_with(env=[{"name": "A=B", "value": "x"}]),
        'spec.worker.env[0].name: Invalid value: "A=B": must be a valid',
    ),
    (
        worker_with(resources={"requests": {"cpu": "abc"}}),
        "spec.worker.resources.requests: Invalid value: requests[cpu]: must be a quantity >= 0",
    ),
    (
        worker_with(resources={"limits": {"memory": "-1Gi"}}),
        "spec.worker.resources.limits: Invalid value: limits[memory]: must be a quantity >= 0",
    ),
    (
        worker_with(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}),
        "spec.worker.resources.requests: Invalid value: requests must be <= limits",
    ),
    (
        worker_with(resources={"requests": {"memory": "1Gi"}, "limits": {"memory": "1000Mi"}}),
        "spec.worker.resources.requests: Invalid value: requests must be <= limits",
    ),
    (
        worker_with(resources={"limits": {"bogus": 1}}),
        "spec.worker.resources.limits: Invalid value: limits[bogus]: must be a resource name",
    ),
    (
        worker_with(resources={"limits": {"example.com/dongle": "500m"}}),
        "spec.worker.resources.limits: Invalid value: limits[example.com/dongle]: must be a whole number",
    ),
    (
        worker_with(resources={"requests": {"example.com/dongle": 1}}),
        "spec.worker.resources.requests: Invalid value: an extended resource",
    ),
    (
        worker_with(serviceAccountName="Bad_Name"),
        'spec.worker.serviceAccountName: Invalid value: "Bad_Name": worker.serviceAccountName must be a DNS-1123',
    ),
    (
        worker_with(podLabels={"a=b": "x"}),
        "spec.worker.podLabels: Invalid value: worker.podLabels[a=b]: must be a label key",
    ),
    (
        worker_with(podLabels={"team": "a b"}),
        "spec.worker.podLabels: Invalid value: worker.podLabels[team]: must have a label value",
    ),
    (
        worker_with(podLabels={"chitu.dev/rank": "7"}),
        "spec.worker.podLabels: Invalid value: worker.podLabels[chitu.dev/rank]: is the operator's",
    ),
    (
        worker_with(podAnnotations={"bad key": "x"}),
        "spec.worker.podAnnotations: Invalid value: worker.podAnnotations[bad key]: must be an annotation key",
    ),
    (worker_with(image="w "), 'spec.worker.image: Invalid value: "w ": must be an image reference'),
    (worker_with(imagePullSecrets=[{"name": "Reg_Cred"}]), "spec.worker.imagePullSecrets[0].name: Invalid value"),
    (
        worker_with(env=[{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
        "spec.worker.env[0].valueFrom: Invalid value: valueFrom may not be set together with value",
    ),
    (
        with_spec(output={"uri": "s3://videos/x", "credentialsSecretRef": {"name": "Bad_Name"}}),
        'spec.output.credentialsSecretRef.name: Invalid value: "Bad_Name"',
    ),
    (
        with_spec(scheduling={"tolerations": [{"key": "a b", "operator": "Exists"}]}),
        "spec.scheduling.tolerations[0].key: Invalid value: key must be a qualified name",
    ),
    (
        with_spec(scheduling={"tolerations": [{"value": "x"}]}),
        "spec.scheduling.tolerations[0].operator: Invalid value: operator must be Exists when key is empty",
    ),
    (
        with_spec(scheduling={"tolerations": [{"key": "a", "tolerationSeconds": 5}]}),
        "spec.scheduling.tolerations[0].effect: Invalid value: effect must be NoExecute",
    ),
    (
        with_spec(scheduling={"priorityClassName": "High"}),
        'spec.scheduling.priorityClassName: Invalid value: "High": scheduling.priorityClassName must be a DNS-1123',
    ),
    (
        with_spec(scheduling={"nodeSelector": {"gpu": "h100/80g"}}),
        "spec.scheduling.nodeSelector: Invalid value: scheduling.nodeSelector[gpu]: must have a label value",
    ),
]


@pytest.mark.parametrize("manifest, expected", POD_LEVEL_REFUSALS, ids=[e.split(":")[0] for _, e in POD_LEVEL_REFUSALS])
def test_pod_level_values_are_refused_at_apply(k8s, namespace, manifest, expected):
    assert expected in rejection(k8s, namespace, manifest)


def test_valid_pod_level_values_are_accepted(k8s, namespace):
    create(
        k8s,
        namespace,
        with_spec(
            worker={
                "image": "registry.local/chitu/worker:1",
                "env": [{"name": "MY.VAR-1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {
                    "requests": {"cpu": "500m", "memory": "1Gi", "example.com/dongle": 2},
                    "limits": {"cpu": 1, "memory": "1024Mi", "example.com/dongle": "2", "nvidia.com/gpu": 1},
                },
                "podLabels": {"example.com/team": "video", "tier": ""},
                "podAnnotations": {"Example.com/Note": "any text"},
                "serviceAccountName": "runner.v2",
                "imagePullSecrets": [{"name": "regcred"}],
            },
            scheduling={
                "tolerations": [
                    {"operator": "Exists"},
                    {"key": "nvidia.com/gpu", "value": "h100", "effect": "NoExecute", "tolerationSeconds": 30},
                ],
                "priorityClassName": "high",
                "nodeSelector": {"example.com/gpu": "h100"},
                "queueName": "team-a",
            },
        ),
        dry_run=True,
    )


def test_kubectl_apply_refuses_a_pod_level_value_naming_the_field(cluster, namespace):
    """What a user sees: `kubectl apply` exits non-zero with the apiserver's message naming the field."""
    manifest = worker_with(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}})
    done = subprocess.run(
        ["kubectl", "apply", "-n", namespace, "-f", "-"],
        input=yaml.safe_dump(manifest),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **cluster.env()},
    )
    assert done.returncode != 0
    assert "spec.worker.resources.requests: Invalid value: requests must be <= limits" in done.stderr, done.stderr


def test_prompt_lists_must_hold_non_blank_texts(k8s, namespace):
    manifest = with_spec(prompts=["a cat", "  "])
    del manifest["spec"]["prompt"]
    assert 'spec.prompts[1]: Invalid value: "  ": must be a non-empty text, not only whitespace' in rejection(
        k8s, namespace, manifest
    )
    manifest["spec"]["prompts"] = []
    assert "spec.prompts: Invalid value: 0: spec.prompts in body should have at least 1 items" in rejection(
        k8s, namespace, manifest
    )


def test_job_names_must_leave_room_for_pod_hostnames(k8s, namespace):
    manifest = with_spec()
    manifest["metadata"]["name"] = "x" * 53
    assert "metadata.name must be a DNS label of at most 52 characters" in rejection(k8s, namespace, manifest)


@pytest.mark.parametrize(
    "parallelism", [{"cpSize": 2, "upLimit": 1}, {"cfg": 2, "cpSize": 4, "upLimit": 2, "gpusPerPod": 4}]
)
def test_ditango_is_accepted_where_the_layout_gives_a_ring(k8s, namespace, parallelism):
    create(k8s, namespace, with_spec(flexCache={"strategy": "ditango"}, parallelism=parallelism), dry_run=True)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_are_accepted(k8s, namespace, cluster, example):
    for manifest in yaml.safe_load_all((EXAMPLES / example).read_text()):
        if manifest["kind"] == "GenerationJob":
            create(k8s, namespace, manifest, dry_run=True)


def test_defaults_are_filled_in(k8s, namespace):
    spec = create(k8s, namespace, with_spec())["spec"]
    assert spec["generation"] == {"steps": 50, "guidanceScale": 5, "height": 480, "width": 832, "frames": 81, "fps": 16}
    assert spec["flexCache"] == {"strategy": "none", "cacheRatio": 0.5, "warmup": 1, "cooldown": 1}
    assert spec["parallelism"] == {"cfg": 1, "cpSize": 1, "upLimit": 8, "gpusPerPod": 1}
    assert spec["runPolicy"] == {
        "backoffLimit": 3,
        "preRunningDeadlineSeconds": 600,
        "cleanPodPolicy": "Running",
        "suspend": False,
        "restartBackoffSeconds": 10,
        "stallTimeoutSeconds": 1800,
    }
    assert spec["worker"]["serviceAccountName"] == "chitu-worker" and spec["model"]["mountPath"] == "/models"


def test_spec_is_immutable_except_run_policy_and_scheduling_while_suspended(k8s, namespace):
    create(k8s, namespace, with_spec())

    def patch(spec: dict) -> str | None:
        try:
            k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "probe", {"spec": spec})
            return None
        except ApiException as err:
            return json.loads(err.body)["message"]

    assert "spec.generation: Invalid value: spec.generation is immutable" in patch({"generation": {"steps": 10}})
    assert 'spec.prompt: Invalid value: "a dog": spec.prompt is immutable' in patch({"prompt": "a dog"})
    assert "spec.worker: Invalid value: spec.worker is immutable" in patch({"worker": {"image": "other"}})
    assert "a job cannot switch between them" in patch({"prompt": None, "prompts": ["a cat"]})
    assert "spec.scheduling may change only while the job is suspended" in patch({"scheduling": {"queueName": "q"}})
    assert patch({"runPolicy": {"ttlSecondsAfterFinished": 60, "activeDeadlineSeconds": 600}}) is None
    assert patch({"runPolicy": {"suspend": True}}) is None
    assert patch({"scheduling": {"queueName": "q", "nodeSelector": {"gpu": "h100"}}}) is None


def test_status_is_a_subresource_with_a_checked_phase(k8s, namespace):
    create(k8s, namespace, with_spec())
    with pytest.raises(ApiException) as err:
        k8s.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "probe", {"status": {"phase": "Exploded"}}
        )
    assert 'status.phase: Unsupported value: "Exploded"' in json.loads(err.value.body)["message"]
    ignored = {"status": {"phase": "Running"}}  # the main resource ignores status
    k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "probe", ignored)
    assert "status" not in k8s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "probe")


def test_kubectl_explain_shows_the_models_descriptions(cluster):
    done = subprocess.run(
        ["kubectl", "explain", "generationjob.spec.parallelism.upLimit"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **cluster.env()},
    )
    assert done.returncode == 0, done.stderr
    assert " ".join(Parallelism.model_fields["up_limit"].description.split()) in " ".join(done.stdout.split())
