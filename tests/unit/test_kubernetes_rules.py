"""Kubernetes' validation rules as chitu_api.kubernetes_rules writes them, against the regexes Kubernetes
publishes (k8s.io/apimachinery/pkg/util/validation, v1.37) and the cases the apiserver's own tests use.
tests/e2e/test_kubernetes_rules_apiserver.py asks the real apiserver the same questions."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chitu_api import kubernetes_rules as rules

# As published in k8s.io/apimachinery/pkg/util/validation/validation.go (with their length limits).
PUBLISHED = {
    "dns1123_label": (r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", 63),
    "dns1123_subdomain": (r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", 253),
    "label_value": (r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", 63),
    "env_var_name": (r"[-._a-zA-Z][-._a-zA-Z0-9]*", None),
}
NAME_ALPHABET = st.sampled_from("abcz09AZ-._/=: ")


def published_verdict(kind: str, value: str) -> bool:
    pattern, limit = PUBLISHED[kind]
    fits = limit is None or len(value) <= limit
    chdir_ok = kind != "env_var_name" or not (value in (".", "..") or value.startswith(".."))
    return bool(re.fullmatch(pattern, value)) and fits and chdir_ok


@pytest.mark.parametrize("kind", sorted(PUBLISHED))
@given(value=st.text(NAME_ALPHABET, max_size=70))
def test_rules_agree_with_the_published_regexes(kind, value):
    assert (getattr(rules, kind)(value) is None) == published_verdict(kind, value)


@pytest.mark.parametrize("kind", ["dns1123_label", "dns1123_subdomain"])
def test_length_limits(kind):
    limit = PUBLISHED[kind][1]
    assert getattr(rules, kind)("a" * limit) is None
    assert f"longer than {limit}" in getattr(rules, kind)("a" * (limit + 1))


@pytest.mark.parametrize(
    "key, valid",
    [
        ("app", True),
        ("app.kubernetes.io/name", True),
        ("example.com/My_Key.1", True),
        ("a", True),
        ("", False),
        ("/name", False),
        ("Example.com/name", False),
        ("a/b/c", False),
        ("-app", False),
        ("app-", False),
        ("x" * 63, True),
        ("x" * 64, False),
        ("a=b", False),
        ("has space", False),
        ("prefix/", False),
    ],
)
def test_qualified_names(key, valid):
    assert (rules.qualified_name(key) is None) == valid


def test_messages_quote_the_value():
    assert "'A=B'" in rules.env_var_name("A=B")
    assert "'Bad_Name'" in rules.dns1123_subdomain("Bad_Name")
    assert "'cpu: abc'" not in (rules.parse_quantity.__doc__ or "")
    with pytest.raises(ValueError, match="'abc' is not a quantity"):
        rules.parse_quantity("abc")


@pytest.mark.parametrize(
    "text, amount",
    [
        ("1", Decimal(1)),
        ("Gi", Decimal(0)),  # the apiserver's parser takes missing digits as 0
        ("-", Decimal(0)),
        (2, Decimal(2)),
        (0.5, Decimal("0.5")),
        ("500m", Decimal("0.5")),
        ("1Gi", Decimal(2**30)),
        ("1.5Ki", Decimal(1536)),
        ("1e3", Decimal(1000)),
        ("2E-1", Decimal("0.2")),
        ("1E", Decimal(10**18)),
        ("+3k", Decimal(3000)),
        (".5", Decimal("0.5")),
        ("5.", Decimal(5)),
        ("-1", Decimal(-1)),
        ("100u", Decimal("1e-4")),
    ],
)
def test_quantities_parse_like_resource_quantity(text, amount):
    assert rules.parse_quantity(text) == amount


@pytest.mark.parametrize("text", ["abc", "", "1 Gi", "1gi", "1KB", "1.2.3", "--1", "1e", "0x10", True, None])
def test_malformed_quantities_are_refused(text):
    with pytest.raises(ValueError, match="is not a quantity"):
        rules.parse_quantity(text)


@pytest.mark.parametrize(
    "resources, problem",
    [
        ({"requests": {"cpu": "500m"}, "limits": {"cpu": "1"}}, None),
        ({"limits": {"nvidia.com/gpu": 1}}, None),
        ({"requests": {"cpu": "abc"}}, ("requests[cpu]", "'abc' is not a quantity")),
        ({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}, ("requests[cpu]", "requests must be <= limits")),
        ({"requests": {"memory": "1Gi"}, "limits": {"memory": "1000Mi"}}, ("requests[memory]", "<= limits")),
        ({"limits": {"cpu": "-1"}}, ("limits[cpu]", "negative")),
        ({"limits": {"gpu": "1"}}, ("limits[gpu]", "not a container resource")),
        ({"limits": {"example.com/dongle": "500m"}}, ("limits[example.com/dongle]", "whole number")),
        ({"requests": {"example.com/dongle": "1"}}, ("requests[example.com/dongle]", "must equal the limit")),
        ({"claims": [{"name": "x"}]}, ("", "only requests and limits")),
    ],
)
def test_resource_requirements(resources, problem):
    problems = rules.resource_requirements(resources)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0][0] == problem[0] and problem[1] in problems[0][1]


@pytest.mark.parametrize(
    "toleration, field",
    [
        ({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}, None),
        ({"operator": "Exists"}, None),
        ({"key": "gpu", "value": "a100"}, None),
        ({"key": "gpu", "operator": "Exists", "value": "x"}, "value"),
        ({"value": "x"}, "operator"),
        ({"key": "bad key"}, "key"),
        ({"key": "gpu", "operator": "Maybe"}, "operator"),
        ({"key": "gpu", "effect": "Sometimes"}, "effect"),
        ({"key": "gpu", "tolerationSeconds": 30, "effect": "NoSchedule"}, "effect"),
        ({"key": "gpu", "value": "not a label value"}, "value"),
    ],
)
def test_tolerations(toleration, field):
    assert [f for f, _ in rules.toleration(toleration)] == ([field] if field else [])


@pytest.mark.parametrize(
    "var, fields",
    [
        ({"name": "MY_VAR", "value": "x"}, []),
        ({"name": "A=B", "value": "x"}, ["name"]),
        ({"name": "1X"}, ["name"]),
        ({"name": ""}, ["name"]),
        ({"name": "S", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}, []),
        (
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "Bad_Secret", "key": "a/b"}}},
            ["valueFrom.secretKeyRef.name", "valueFrom.secretKeyRef.key"],
        ),
        ({"name": "S", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}, ["valueFrom"]),
        ({"name": "S", "valueFrom": {}}, ["valueFrom"]),
        ({"name": "S", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}}, ["valueFrom.fieldRef.fieldPath"]),
    ],
)
def test_env_vars(var, fields):
    assert [f for f, _ in rules.env_var(var)] == fields


def test_labels_and_annotations():
    assert rules.labels({"team": "video", "example.com/x": ""}) == []
    assert [f for f, _ in rules.labels({"bad key": "x", "ok": "has space"})] == ["[bad key]", "[ok]"]
    assert rules.annotations({"Example.com/Note": "any text\nat all"}) == []  # keys are checked lower-cased
    ((field, message),) = rules.annotations({"a": "x" * rules.ANNOTATIONS_MAX_BYTES})
    assert field == "" and "more than the 262144 allowed" in message


@pytest.mark.parametrize(
    "name, valid",
    [
        ("http", True),
        ("rendezvous", True),
        ("a-1", True),
        ("1", False),
        ("a--b", False),
        ("-a", False),
        ("Http", False),
        ("x" * 16, False),
    ],
)
def test_port_names(name, valid):
    assert (rules.port_name(name) is None) == valid


def test_port_numbers_and_images():
    assert rules.port_number(29500) is None
    assert rules.port_number(0) and rules.port_number(65536) and rules.port_number(True)
    assert rules.container_image("busybox:1.36") is None
    assert rules.container_image(" busybox") and rules.container_image("")
