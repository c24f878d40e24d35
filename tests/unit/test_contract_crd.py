"""The generated CRD against the models it comes from: same fields, enums, defaults; a schema the apiserver takes."""

from __future__ import annotations

import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, Field
from typing_extensions import is_typeddict

from chitu_api import names
from chitu_api.crd import KEYS, structural_schema
from chitu_api.generationjob import Generation, GenerationJobSpec, parse_spec
from chitu_api.jobstatus import PHASES, GenerationJobStatus
from chitu_api.schema import cel, rules
from chitu_diffusion.flex_cache.registry import strategy_names
from chitu_operator import status as operator_status
from chitu_worker.manifest import unknown_field

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "generationjob.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
VALIDATIONS = "x-kubernetes-validations"


def node(path: str, root: dict = SCHEMA) -> dict:
    """The schema node of a dotted path (array items are stepped through)."""
    current = root
    for part in path.split("."):
        while current.get("type") == "array":
            current = current["items"]
        current = current["properties"][part]
    return current


def all_nodes(schema: dict = SCHEMA, path: str = ""):
    yield path, schema
    for key, child in schema.get("properties", {}).items():
        yield from all_nodes(child, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from all_nodes(schema[key], f"{path}[]")


def all_rules():
    for path, schema in all_nodes():
        for rule in schema.get(VALIDATIONS, []):
            yield path, rule


def model_tree(annotation: object) -> dict | None:
    """Property name -> subtree for a model or TypedDict annotation (through Optional, Annotated, tuples)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return model_tree(args[0])
    if origin in (typing.Union, types.UnionType, tuple):
        return next((tree for arg in args if arg not in (type(None), Ellipsis) and (tree := model_tree(arg))), None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {field.alias: model_tree(field.annotation) for field in annotation.model_fields.values()}
    if is_typeddict(annotation):
        return {key: model_tree(hint) for key, hint in typing.get_type_hints(annotation, include_extras=True).items()}
    return None


def crd_tree(schema: dict) -> dict | None:
    while schema.get("type") == "array":
        schema = schema["items"]
    if "properties" not in schema:
        return None
    return {key: crd_tree(child) for key, child in schema["properties"].items()}


def test_names_and_subresources_match_the_contract():
    assert CRD["metadata"]["name"] == f"{names.PLURAL}.{names.GROUP}"
    assert CRD["spec"]["group"] == names.GROUP and CRD["spec"]["scope"] == "Namespaced"
    assert CRD["spec"]["names"] == {
        "kind": names.KIND,
        "listKind": "GenerationJobList",
        "plural": names.PLURAL,
        "singular": "generationjob",
        "shortNames": ["gj"],
        "categories": ["chitu"],
    }
    assert [v["name"] for v in CRD["spec"]["versions"]] == [names.VERSION]
    assert VERSION["served"] and VERSION["storage"] and VERSION["subresources"] == {"status": {}}


@pytest.mark.parametrize("section, model", [("spec", GenerationJobSpec), ("status", GenerationJobStatus)])
def test_every_model_field_is_a_crd_property_and_back(section, model):
    tree = model_tree(model)
    assert len(tree) >= 10 and tree == crd_tree(node(section))


def test_registry_strategies_are_the_crd_enum():
    assert node("spec.flexCache.strategy")["enum"] == list(strategy_names())


def test_status_phases_are_the_operators():
    assert node("status.phase")["enum"] == list(PHASES)
    assert set(PHASES) == operator_status.ACTIVE_PHASES | operator_status.FINISHED_PHASES


def test_schema_is_structural_and_explained():
    """Every node typed (or int-or-string, or free-form where the value is a core/v1 object), every property
    described for `kubectl explain`, and only keys the apiserver accepts."""
    free_form = set()
    for path, schema in all_nodes():
        assert set(schema) <= set(KEYS), path
        assert schema.get("type") or schema.get("x-kubernetes-int-or-string"), path
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            free_form.add(path)
        if path.count(".") > 1 and not path.endswith("[]"):
            assert schema.get("description"), path
    core_v1_objects = {
        ".spec.worker.volumes[]",
        ".spec.worker.volumeMounts[]",
        ".spec.worker.envFrom[]",
        ".spec.worker.podSecurityContext",
        ".spec.worker.securityContext",
        ".spec.scheduling.affinity",
    }
    assert free_form == {".spec.model.volume", ".spec.worker.env[].valueFrom", *core_v1_objects}


def test_printer_columns_point_at_fields_of_their_type():
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert list(columns) == [
        "Status",
        "Progress%",
        "Prompts",
        "Restarts",
        "Age",
        "Strategy",
        "World",
        "Model",
        "Output",
    ]
    assert [c for c, v in columns.items() if v.get("priority") == 1] == ["Strategy", "World", "Model", "Output"]
    for column in columns.values():
        path = column["jsonPath"].lstrip(".")
        if path == "metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        assert column["type"] == node(path)["type"], column["name"]


def test_every_rule_has_a_message_and_cross_field_rules_a_field_path():
    rules = list(all_rules())
    assert len(rules) > 20
    for path, rule in rules:
        assert rule.get("message"), (path, rule)
        if path == ".spec" and "oldSelf" not in rule["rule"].replace("oldSelf.runPolicy", ""):
            assert rule.get("fieldPath"), (path, rule)


def test_spec_subtrees_are_immutable_except_run_policy_and_scheduling():
    immutable = {path for path, rule in all_rules() if rule["rule"] == "self == oldSelf"}
    assert immutable == {
        ".spec.model",
        ".spec.prompt",
        ".spec.prompts",
        ".spec.negativePrompt",
        ".spec.generation",
        ".spec.flexCache",
        ".spec.parallelism",
        ".spec.engine",
        ".spec.worker",
        ".spec.output",
    }
    assert not [rule for path, rule in all_rules() if path.startswith(".spec.runPolicy")]


def test_the_worker_image_and_the_output_may_come_from_the_platform_defaults():
    assert node("spec")["required"] == ["model"]
    assert "required" not in node("spec.worker") and "required" not in node("spec.output")


def _defaults(schema: dict, path: tuple[str, ...] = ()):
    for key, child in schema.get("properties", {}).items():
        if "default" in child:
            yield (*path, key), child["default"]
        yield from _defaults(child, (*path, key))


def test_crd_defaults_equal_the_models():
    output = {"uri": "s3://videos/p", "credentialsSecretRef": {"name": "s"}}
    parsed = parse_spec({"model": {"uri": "/m"}, "prompt": "a", "worker": {"image": "w"}, "output": output}).model_dump(
        by_alias=True, exclude_none=True
    )
    defaults = list(_defaults(node("spec")))
    assert len(defaults) > 25
    for path, default in defaults:
        value = parsed
        for part in path:
            value = value[part]
        if isinstance(default, dict):  # an object's default holds its non-empty defaults
            value = {key: item for key, item in value.items() if item not in ([], {}, ())}
        assert value == default, path


def _every_property(schema: dict) -> dict:
    """A document holding every property of `schema`, objects nested (the leaves' values do not matter)."""
    return {
        key: _every_property(child) if "properties" in child else None
        for key, child in schema.get("properties", {}).items()
    }


def test_a_manifest_the_crd_accepts_has_no_field_the_worker_rejects():
    """The worker rejects fields the model lacks (a local manifest has no apiserver pruning typos)."""
    document = _every_property(node("spec"))
    assert len(document) > 10 and unknown_field(GenerationJobSpec, document) is None
    assert unknown_field(GenerationJobSpec, {**document, "generation": {"setps": 3}}) == ("generation", "setps")


def test_a_new_field_is_one_edit_in_the_model():
    """What `make crds` does for a field someone adds: its schema follows from the field's declaration alone."""

    class GenerationWithKnob(Generation):
        shift: int = Field(3, ge=1, le=9, description="A new knob.", json_schema_extra=rules(cel("self != 4", "not 4")))

    schema = structural_schema(GenerationWithKnob)["properties"]["shift"]
    assert schema == {
        "type": "integer",
        "description": "A new knob.",
        "default": 3,
        "minimum": 1,
        "maximum": 9,
        VALIDATIONS: [{"rule": "self != 4", "message": "not 4"}],
    }
