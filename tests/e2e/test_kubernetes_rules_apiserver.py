"""chitu_api.kubernetes_rules against the real kube-apiserver: each rule is asked the same question as a
pod create (dry run) that carries the value where the operator will put it, for hand-picked edge cases and
for strings hypothesis draws. The verdicts must agree; for env names ours is the stricter portable rule,
so there we require only that nothing we accept is refused."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException

from chitu_api import kubernetes_rules as rules

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "probe"},
    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
}
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
TRICKY = st.text(st.sampled_from("aZ09-._/= A\t\u00e9"), max_size=12)


def apiserver_accepts(k8s, namespace: str, change) -> tuple[bool, str]:
    pod = copy.deepcopy(POD)
    change(pod)
    try:
        k8s.core.create_namespaced_pod(namespace, pod, dry_run="All")
        return True, ""
    except ApiException as err:
        assert err.status in (400, 422), err.body  # 400: a value the decoder cannot read (a quantity)
        return False, json.loads(err.body)["message"]


def container(pod: dict) -> dict:
    return pod["spec"]["containers"][0]


def agree(k8s, namespace, verdict: str | list | None, change) -> None:
    accepted, message = apiserver_accepts(k8s, namespace, change)
    ours = not verdict
    assert ours == accepted, f"ours: {verdict!r}; apiserver: {message or 'accepted'}"


# A trailing newline: Python's `$` matched before it, Go's does not (the rules use fullmatch).
LABEL_KEYS = ["app", "example.com/app", "a/b/c", "Example.com/x", "x" * 63, "x" * 64, "a=b", "-x", "x_", "/x", "app\n"]
LABEL_VALUES = ["", "v", "a.b_c-d", "-x", "a" * 63, "a" * 64, "has space", "a/b", "v\n"]
QUANTITIES = [
    "1",
    "500m",
    "1Gi",
    "1.5Ki",
    "1e3",
    "2E-1",
    "1E",
    ".5",
    "5.",
    "abc",
    "1 Gi",
    "1gi",
    "1KB",
    "0x10",
    "Gi",
    "-1",
    "+3k",
    "100u",
    "1e",
    "--1",
    "+",
    "-",
    ".",
    "m",
    "1.2.3",
    "1.G",
    "1\n",
]
OBJECT_NAMES = ["creds", "a.b", "Bad_Name", "UPPER", "-x", "a..b", "x" * 253, "x" * 254, "creds\n"]
TOLERATIONS = [
    {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"operator": "Exists"},
    {"key": "gpu", "value": "a100"},
    {"key": "gpu", "operator": "Exists", "value": "x"},
    {"value": "x"},
    {"key": "bad key"},
    {"key": "gpu", "operator": "Maybe"},
    {"key": "gpu", "effect": "Sometimes"},
    {"key": "gpu", "tolerationSeconds": 30, "effect": "NoSchedule"},
    {"key": "gpu", "value": "not a label value"},
]
RESOURCES = [
    {"requests": {"cpu": "500m"}, "limits": {"cpu": "1"}},
    {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
    {"requests": {"memory": "1Gi"}, "limits": {"memory": "1000Mi"}},
    {"limits": {"gpu": "1"}},
    {"limits": {"example.com/dongle": "500m"}},
    {"requests": {"example.com/dongle": "1"}},
    {"limits": {"example.com/dongle": "2"}},
    {"requests": {"example.com/d": "1"}, "limits": {"example.com/d": "2"}},
]
PORT_NAMES = ["http", "rendezvous", "a-1", "1", "a--b", "-a", "Http", "x" * 16, "http\n"]


@pytest.mark.parametrize("key", LABEL_KEYS)
def test_label_keys(k8s, namespace, key):
    agree(k8s, namespace, rules.qualified_name(key), lambda pod: pod["metadata"].update(labels={key: "v"}))


@pytest.mark.parametrize("value", LABEL_VALUES)
def test_label_values(k8s, namespace, value):
    agree(k8s, namespace, rules.label_value(value), lambda pod: pod["metadata"].update(labels={"k": value}))


@SETTINGS
@given(text=TRICKY)
def test_drawn_label_keys_values_and_annotations(k8s, namespace, text):
    agree(k8s, namespace, rules.qualified_name(text), lambda pod: pod["metadata"].update(labels={text: "v"}))
    agree(k8s, namespace, rules.label_value(text), lambda pod: pod["metadata"].update(labels={"k": text}))
    agree(k8s, namespace, rules.annotations({text: "v"}), lambda pod: pod["metadata"].update(annotations={text: "v"}))


def test_annotation_size(k8s, namespace):
    for size in (rules.ANNOTATIONS_MAX_BYTES - 1, rules.ANNOTATIONS_MAX_BYTES + 1):
        notes = {"a": "x" * (size - 1)}
        agree(k8s, namespace, rules.annotations(notes), lambda pod, n=notes: pod["metadata"].update(annotations=n))


@pytest.mark.parametrize("text", QUANTITIES)
def test_quantities(k8s, namespace, text):
    try:
        verdict = None if rules.parse_quantity(text) >= 0 else "negative"
    except ValueError as err:
        verdict = str(err)
    agree(k8s, namespace, verdict, lambda pod: container(pod).update(resources={"limits": {"cpu": text}}))


@pytest.mark.parametrize("resources", RESOURCES, ids=[json.dumps(r) for r in RESOURCES])
def test_resource_requirements(k8s, namespace, resources):
    agree(
        k8s, namespace, rules.resource_requirements(resources), lambda pod: container(pod).update(resources=resources)
    )


@SETTINGS
@given(name=TRICKY)
def test_env_names_we_accept_are_accepted(k8s, namespace, name):
    accepted, message = apiserver_accepts(
        k8s, namespace, lambda pod: container(pod).update(env=[{"name": name, "value": "x"}])
    )
    if rules.env_var_name(name) is None:
        assert accepted, message
    elif not accepted:  # both refuse
        assert "env[0].name" in message


@pytest.mark.parametrize("name", OBJECT_NAMES)
def test_secret_and_service_account_names(k8s, namespace, name):
    verdict = rules.dns1123_subdomain(name)
    agree(
        k8s,
        namespace,
        verdict,
        lambda pod: container(pod).update(
            env=[{"name": "S", "valueFrom": {"secretKeyRef": {"name": name, "key": "k"}}}]
        ),
    )
    agree(k8s, namespace, verdict, lambda pod: pod["spec"].update(serviceAccountName=name))


@pytest.mark.parametrize("toleration", TOLERATIONS, ids=[json.dumps(t) for t in TOLERATIONS])
def test_tolerations(k8s, namespace, toleration):
    agree(k8s, namespace, rules.toleration(toleration), lambda pod: pod["spec"].update(tolerations=[toleration]))


@pytest.mark.parametrize("name", PORT_NAMES)
def test_port_names(k8s, namespace, name):
    agree(
        k8s,
        namespace,
        rules.port_name(name),
        lambda pod: container(pod).update(ports=[{"name": name, "containerPort": 29500}]),
    )
