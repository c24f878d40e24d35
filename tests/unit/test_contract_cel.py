"""The CRD's rules (evaluated with cel-python, as the apiserver would) agree with the Python validators.

A small apiserver stand-in applies the generated schema to a spec: its defaults, its OpenAPI bounds and every
CEL rule on the nodes present. Over a grid of specs, it rejects exactly those that parse_spec rejects, at the
same field (the apiserver may name the section where Python names the field inside it). Each create-time rule
must reject some spec of the grid, so a rule nobody exercises fails the test; transition rules are checked on
(old, new) pairs.
"""

from __future__ import annotations

import copy
import itertools
from functools import cache
from pathlib import Path

import celpy
import pytest
import yaml
from celpy import celtypes

from chitu_api import kubernetes_rules
from chitu_api.generationjob import InvalidSpec, parse_spec
from chitu_diffusion.flex_cache.registry import strategy_names

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "generationjob.yaml").read_text())
SPEC_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
VALIDATIONS = "x-kubernetes-validations"


def _is_quantity(text) -> celtypes.BoolType:
    try:
        kubernetes_rules.parse_quantity(str(text))
    except ValueError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


# Kubernetes' CEL extensions that cel-python lacks: strings (trim, lowerAscii) and quantities, the latter through
# kubernetes_rules.parse_quantity (tests/e2e/test_kubernetes_rules_apiserver.py checks it against the apiserver's
# parser). A method call reaches its function with the receiver first.
K8S_FUNCTIONS = {
    "trim": lambda text: celtypes.StringType(str(text).strip()),
    "lowerAscii": lambda text: celtypes.StringType(str(text).lower()),
    "isQuantity": _is_quantity,
    "quantity": lambda text: kubernetes_rules.parse_quantity(str(text)),
    "compareTo": lambda left, right: celtypes.IntType((left > right) - (left < right)),
    "isInteger": lambda amount: celtypes.BoolType(amount == amount.to_integral_value()),
}
BASE = {
    "model": {"uri": "/models/wan"},
    "prompt": "a cat",
    "worker": {"image": "w"},
    "output": {"uri": "s3://videos/runs"},
}


@cache
def program(rule: str):
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=K8S_FUNCTIONS)


def holds(rule: str, value, old=None) -> bool:
    activation = {"self": celpy.json_to_cel(value)}
    if old is not None:
        activation["oldSelf"] = celpy.json_to_cel(old)
    return bool(program(rule).evaluate(activation))


def defaulted(schema: dict, value):
    """`value` with the schema's defaults filled in, as the apiserver stores it."""
    if isinstance(value, dict) and "properties" in schema:
        value = {
            **{
                key: copy.deepcopy(child["default"])
                for key, child in schema["properties"].items()
                if "default" in child and key not in value
            },
            **value,
        }
        return {
            key: defaulted(schema["properties"][key], item) if key in schema["properties"] else item
            for key, item in value.items()
        }
    if isinstance(value, list) and "items" in schema:
        return [defaulted(schema["items"], item) for item in value]
    return value


def openapi_problem(schema: dict, value) -> str | None:
    """The first OpenAPI bound `value` breaks (the checks the apiserver runs before CEL), else None."""
    checks = [
        ("enum", lambda bound: value in bound),
        ("minimum", lambda bound: value >= bound),
        ("maximum", lambda bound: value <= bound),
        ("maxLength", lambda bound: len(value) <= bound),
        ("minItems", lambda bound: len(value) >= bound),
        ("maxItems", lambda bound: len(value) <= bound),
        ("maxProperties", lambda bound: len(value) <= bound),
        ("required", lambda bound: all(key in value for key in bound)),
    ]
    return next((key for key, check in checks if key in schema and not check(schema[key])), None)


def apiserver_rejection(schema: dict, value, old=None, path: str = "spec", transition: bool = False) -> str | None:
    """Where the stand-in apiserver rejects `value` (its field path), or None. Children first, as bounds are."""
    if isinstance(value, dict):
        for key, item in value.items():
            child = schema.get("properties", {}).get(key)
            old_item = old.get(key) if isinstance(old, dict) else None
            if child and (found := apiserver_rejection(child, item, old_item, f"{path}.{key}", transition)):
                return found
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            if found := apiserver_rejection(schema["items"], item, None, f"{path}[{index}]", transition):
                return found
    if not transition and openapi_problem(schema, value):
        return path
    for rule in schema.get(VALIDATIONS, []):
        is_transition = "oldSelf" in rule["rule"]
        applies = is_transition == transition and (old is not None or not is_transition)
        if applies and not holds(rule["rule"], value, old):
            return path + rule.get("fieldPath", "")
    return None


def python_rejection(spec: dict) -> str | None:
    try:  # what the apiserver can check: the worker image and output may still come from the platform defaults
        parse_spec(spec, require_worker=False)
    except InvalidSpec as err:
        return err.field
    return None


def with_changes(**changes) -> dict:
    spec = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        elif isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def grid() -> list[dict]:
    specs = [with_changes(generation={"frames": frames}) for frames in range(1, 40)]
    specs += [
        with_changes(generation={side: pixels})
        for side in ("height", "width")
        for pixels in (16, 40, 100, 480, 832, 4096, 4100)
    ]
    specs += [
        with_changes(flexCache={"strategy": strategy}, parallelism={"cpSize": cp, "upLimit": up})
        for strategy, cp, up in itertools.product(strategy_names(), range(1, 6), range(1, 7))
    ]
    specs += [
        with_changes(parallelism={"cfg": cfg, "cpSize": cp, "gpusPerPod": gpus})
        for cfg, cp, gpus in itertools.product((1, 2), range(1, 7), range(6))
    ]
    specs += [
        with_changes(generation={"steps": steps}, flexCache={"strategy": strategy, "warmup": w, "cooldown": c})
        for strategy, steps, w, c in itertools.product(("none", "pab"), range(1, 5), range(3), range(3))
    ]
    specs += [
        with_changes(prompt=prompt, prompts=prompts)
        for prompt, prompts in [
            (None, ["a", "b"]),
            ("a", ["b"]),
            (None, None),
            ("  ", None),
            ("", None),
            (None, ["a", " \t"]),
            (None, []),
            (None, [""]),
            (None, ["a"] * 1024),
            (None, ["a"] * 1025),
        ]
    ]
    specs += [with_changes(model={"uri": uri}) for uri in ("/m", "m", "s3://m", "s3:/m", "http://m")]
    specs += [with_changes(model={"mountPath": path}) for path in ("/models", "models")]
    specs += [
        with_changes(output={"uri": uri})
        for uri in (
            "s3://videos",
            "s3://abc/p",
            "s3://ab/p",
            "s3://Videos/p",
            "s3://a-b.c/x/y",
            "s3://-ab/x",
            "s3://",
            "http://v",
        )
    ]
    specs += [with_changes(output={"endpoint": url}) for url in ("http://s3:8333", "https://s3", "s3:8333", "")]
    specs += [
        with_changes(output={"credentialsSecretRef": reference})
        for reference in (
            {"name": "Bad"},
            {"name": "s3-creds"},
            {"name": "s3", "accessKeyIdKey": "a/b"},
            {"name": "s3", "secretAccessKeyKey": ".."},
        )
    ]
    specs += [
        with_changes(worker={"image": "w", "env": [{"name": "EXTRA", "value": "1"}, {"name": name}]})
        for name in ("OTHER", "WORLD_SIZE", "POD_NAME", "CHITU_MODEL_CACHE", "MASTER_PORT")
    ]
    specs += [with_changes(worker=None), with_changes(runPolicy={"backoffLimit": 101})]
    return (
        specs
        + [with_changes(worker={"image": "w", **worker}) for worker in POD_LEVEL_WORKERS]
        + [with_changes(scheduling=scheduling) for scheduling in POD_LEVEL_SCHEDULING]
    )


#: Values the worker pods carry (issue 14's hanging cases among them): each refused or accepted alike by the CRD's
#: rules (chitu_api.kubernetes_cel) and by parse_spec (chitu_api.kubernetes_rules, podpolicy).
POD_LEVEL_WORKERS = [
    *(
        {"resources": resources}
        for resources in (
            {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 1, "memory": "2Gi"}},
            {"requests": {"cpu": "abc"}},
            {"requests": {"cpu": "-1"}},
            {"limits": {"memory": "1 Gi"}},
            {"limits": {"memory": "1.5Gi", "ephemeral-storage": "1e3", "hugepages-2Mi": "2Mi"}},
            {"requests": {"cpu": "2"}, "limits": {"cpu": "1999m"}},
            {"requests": {"cpu": "2"}, "limits": {"cpu": "2000m"}},
            {"requests": {"memory": "1Gi"}, "limits": {"memory": "1000Mi"}},
            {"limits": {"bogus": 1}},
            {"requests": {"Bogus": 1}},
            {"requests": {"example.com/foo": "500m"}},
            {"limits": {"requests.example.com/foo": 1}},
            {"limits": {"example.com/foo": "500m"}},
            {"requests": {"example.com/foo": 1}},
            {"requests": {"example.com/foo": 1}, "limits": {"example.com/foo": 2}},
            {"requests": {"example.com/foo": 2}, "limits": {"example.com/foo": 2}},
            {"requests": {"nvidia.com/gpu": 4}, "limits": {"nvidia.com/gpu": 2}},  # the operator sets both
        )
    ),
    *({"env": [{"name": name, "value": "1"}]} for name in ("A=B", "1A", "MY_VAR", "my.var-1", ".", "..a", "A B")),
    {"env": [{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
    {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
    *({"serviceAccountName": name} for name in ("Bad_Name", "runner", "a.b-c", "a" * 254)),
    *(
        {"podLabels": labels}
        for labels in (
            {"a=b": "x"},
            {"a": "x y"},
            {"example.com/team": "video"},
            {"a": "x" * 64},
            {"a" * 64: "x"},
            {"chitu.dev/rank": "1"},
            {"app.kubernetes.io/managed-by": "me"},
            {"a/b/c": "x"},
        )
    ),
    *({"podAnnotations": annotations} for annotations in ({"A/b": "x y"}, {"a b": "x"}, {"example.com/Note": "1"})),
    *({"image": image} for image in (" w", "w ", "registry.local/w:1")),
    *({"imagePullSecrets": [{"name": name}]} for name in ("Bad", "regcred")),
]
POD_LEVEL_SCHEDULING = [
    *(
        {"tolerations": [toleration]}
        for toleration in (
            {"key": "a b", "operator": "Exists"},
            {"operator": "Equal", "value": "x"},
            {"operator": "Exists"},
            {"key": "a", "operator": "Exists", "value": "x"},
            {"key": "a", "tolerationSeconds": 3},
            {"key": "a", "value": "b", "effect": "NoExecute", "tolerationSeconds": 3},
            {"key": "a", "value": "x y"},
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        )
    ),
    *({"priorityClassName": name} for name in ("Hi", "high", "")),
    *({"nodeSelector": selector} for selector in ({"a": "x/y"}, {"a=b": "x"}, {"example.com/gpu": "h100"})),
    *({"queueName": name} for name in ("q q", "team-a")),
]


GRID = grid()


@pytest.mark.parametrize("spec", GRID, ids=[f"spec{index}" for index in range(len(GRID))])
def test_apiserver_and_python_reject_the_same_specs_at_the_same_field(spec):
    apiserver, python = apiserver_rejection(SPEC_SCHEMA, defaulted(SPEC_SCHEMA, spec)), python_rejection(spec)
    assert (apiserver is None) == (python is None), (apiserver, python)
    if python is not None:
        assert python == apiserver or python.startswith((f"{apiserver}.", f"{apiserver}[")), (apiserver, python)


def _create_rules(schema: dict, path: str = "spec"):
    for rule in schema.get(VALIDATIONS, []):
        if "oldSelf" not in rule["rule"]:
            yield path, rule["rule"]
    for key, child in schema.get("properties", {}).items():
        yield from _create_rules(child, f"{path}.{key}")
    if "items" in schema:
        yield from _create_rules(schema["items"], f"{path}[]")


def test_every_create_rule_rejects_some_spec_of_the_grid():
    """A rule that no grid spec breaks is either vacuous or untested: both fail here."""
    broken = set()
    for spec in GRID:
        value = defaulted(SPEC_SCHEMA, spec)
        for path, rule in _create_rules(SPEC_SCHEMA):
            target = _at(value, path)
            if any(item is not None and not holds(rule, item) for item in target):
                broken.add((path, rule))
    assert set(_create_rules(SPEC_SCHEMA)) == broken


def _at(value, path: str) -> list:
    """The values at a rule's path (every item for `[]`)."""
    values = [value]
    for part in path.split(".")[1:]:
        key, many = part.removesuffix("[]"), part.endswith("[]")
        values = [item.get(key) for item in values if isinstance(item, dict)]
        if many:
            values = [element for item in values if isinstance(item, list) for element in item]
    return values


@pytest.mark.parametrize(
    "old_changes, new_changes, rejected_at",
    [
        ({}, {}, None),
        ({}, {"generation": {"steps": 10}}, "spec.generation"),
        ({}, {"prompt": "a dog"}, "spec.prompt"),
        ({}, {"worker": {"image": "other"}}, "spec.worker"),
        ({}, {"prompt": None, "prompts": ["a cat"]}, "spec.prompts"),
        ({}, {"parallelism": {"cpSize": 2, "upLimit": 1}}, "spec.parallelism"),
        ({}, {"runPolicy": {"ttlSecondsAfterFinished": 60, "activeDeadlineSeconds": 600, "suspend": True}}, None),
        ({}, {"scheduling": {"queueName": "q"}}, "spec.scheduling"),
        ({"runPolicy": {"suspend": True}}, {"scheduling": {"queueName": "q", "nodeSelector": {"gpu": "h100"}}}, None),
    ],
)
def test_transition_rules(old_changes, new_changes, rejected_at):
    old = defaulted(SPEC_SCHEMA, with_changes(**old_changes))
    new = defaulted(SPEC_SCHEMA, with_changes(**{**old_changes, **new_changes}))
    assert apiserver_rejection(SPEC_SCHEMA, new, old, transition=True) == rejected_at


@pytest.mark.parametrize(
    "spec, field",
    [
        # valueFrom is a free-form core/v1 EnvVarSource in the CRD
        (
            with_changes(worker={"image": "w", "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}),
            "spec.worker.env[0].valueFrom.fieldRef.fieldPath",
        ),
        # the platform's policy (operator configuration), not the CRD's: volume types, control characters
        (with_changes(model={"uri": "/m", "volume": {"hostPath": {"path": "/"}}}), "spec.model.volume"),
        (with_changes(prompt="a\x07cat"), "spec.prompt"),
    ],
)
def test_what_the_crd_leaves_to_the_operator(spec, field):
    """Accepted at apply, refused by parse_spec (the job fails InvalidSpec at once): free-form core/v1 objects and
    the platform's configurable policy are not in the CRD's schema."""
    assert apiserver_rejection(SPEC_SCHEMA, defaulted(SPEC_SCHEMA, spec)) is None
    assert python_rejection(spec) == field


def _message_rules(schema: dict, path: str = "spec"):
    """(path, rule) of every rule computing its message (chitu_api.kubernetes_cel.every_key)."""
    for rule in schema.get(VALIDATIONS, []):
        if "messageExpression" in rule:
            yield path, rule
    for key, child in schema.get("properties", {}).items():
        yield from _message_rules(child, f"{path}.{key}")
    if "items" in schema:
        yield from _message_rules(schema["items"], f"{path}[]")


def test_message_expressions_name_the_first_key_at_fault():
    """Where a map rule fails on the grid, its computed message is '<what>[<first bad key>]: <requirement>'."""
    checked = set()
    for spec in GRID:
        value = defaulted(SPEC_SCHEMA, spec)
        for path, rule in _message_rules(SPEC_SCHEMA):
            for item in _at(value, path):
                if item is None or holds(rule["rule"], item):
                    continue
                what, requirement = rule["message"].split(": every key ", 1)
                culprit = next(key for key in item if not holds(rule["rule"], {key: item[key]}))
                message = program(rule["messageExpression"]).evaluate({"self": celpy.json_to_cel(item)})
                assert str(message) == f"{what}[{culprit}]: {requirement}"
                checked.add((path, rule["rule"]))
    assert checked == {(path, rule["rule"]) for path, rule in _message_rules(SPEC_SCHEMA)}
