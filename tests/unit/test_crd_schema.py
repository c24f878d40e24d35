"""The CRD against the contract (docs/generationjob.md) and the operator's typed spec, without a cluster."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from chitu_operator import names
from chitu_operator import status as st
from chitu_api.generationjob import Engine, FlexCache, GenerationJobSpec, Parallelism, RunPolicy, WorkerTemplate, parse_spec
from chitu_worker.manifest import unknown_field

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "generationjob.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]

SPEC_FIELDS = """
model.uri model.volume model.mountPath prompt prompts negativePrompt
generation.steps generation.guidanceScale generation.height generation.width generation.frames generation.fps
generation.seed flexCache.strategy flexCache.cacheRatio flexCache.warmup flexCache.cooldown
parallelism.cfg parallelism.cpSize parallelism.upLimit parallelism.gpusPerPod engine.dtype engine.compile
worker.image worker.imagePullPolicy worker.resources worker.env worker.serviceAccountName
worker.podAnnotations worker.command
output.uri output.endpoint output.region output.credentialsSecretRef.name output.credentialsSecretRef.accessKeyIdKey
output.credentialsSecretRef.secretAccessKeyKey
runPolicy.backoffLimit runPolicy.activeDeadlineSeconds runPolicy.preRunningDeadlineSeconds
runPolicy.ttlSecondsAfterFinished runPolicy.cleanPodPolicy runPolicy.suspend
scheduling.nodeSelector scheduling.tolerations scheduling.priorityClassName scheduling.queueName
""".split()
STATUS_FIELDS = """
phase conditions.type conditions.status conditions.reason conditions.message conditions.lastTransitionTime
conditions.observedGeneration progress.currentStep progress.totalSteps progress.percent progress.promptsDone
progress.promptsTotal progress.lastUpdateTime progress.summary outputs.index outputs.prompt outputs.video
outputs.metrics outputs.policy outputs.completedTime startTime completionTime restarts observedGeneration message
worldSize
""".split()


def node(path: str, root: dict = SCHEMA) -> dict:
    """The schema node of a dotted path (array items are stepped through)."""
    current = root
    for part in path.split("."):
        while current.get("type") == "array":
            current = current["items"]
        current = current["properties"][part]
    return current


def all_rules(schema: dict = SCHEMA, path: str = ""):
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for key, child in schema.get("properties", {}).items():
        yield from all_rules(child, f"{path}.{key}")
    if "items" in schema:
        yield from all_rules(schema["items"], f"{path}[]")


def test_names_and_subresources_match_the_contract():
    assert CRD["metadata"]["name"] == f"{names.PLURAL}.{names.GROUP}"
    assert CRD["spec"]["group"] == names.GROUP and CRD["spec"]["scope"] == "Namespaced"
    assert CRD["spec"]["names"] | {"categories": None} == {
        "kind": names.KIND, "listKind": "GenerationJobList", "plural": names.PLURAL, "singular": "generationjob",
        "shortNames": ["gj"], "categories": None}
    assert [v["name"] for v in CRD["spec"]["versions"]] == [names.VERSION]
    assert VERSION["served"] and VERSION["storage"] and VERSION["subresources"] == {"status": {}}


@pytest.mark.parametrize("field", SPEC_FIELDS)
def test_every_contract_spec_field_is_in_the_schema(field):
    assert node(f"spec.{field}")


@pytest.mark.parametrize("field", STATUS_FIELDS)
def test_every_contract_status_field_is_in_the_schema(field):
    assert node(f"status.{field}")


def test_status_phase_enum_is_the_operators():
    assert set(node("status.phase")["enum"]) == st.ACTIVE_PHASES | st.FINISHED_PHASES


def test_printer_columns_point_at_fields_that_exist():
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert list(columns) == ["Status", "Progress%", "Prompts", "Restarts", "Age", "Strategy", "World", "Model",
                             "Output"]
    assert [c for c, v in columns.items() if v.get("priority") == 1] == ["Strategy", "World", "Model", "Output"]
    for column in columns.values():
        path = column["jsonPath"].lstrip(".")
        if path == "metadata.creationTimestamp":
            continue
        assert path.split(".")[0] in ("spec", "status")
        field = node(path)
        assert {"integer": "integer", "string": "string"}[field["type"]] == column["type"], column["name"]


def test_every_validation_rule_has_a_message_and_cross_field_rules_a_field_path():
    rules = list(all_rules())
    assert len(rules) > 20
    for path, rule in rules:
        assert rule.get("message"), (path, rule)
        if path == ".spec" and "oldSelf" not in rule["rule"].replace("oldSelf.runPolicy", ""):
            assert rule.get("fieldPath"), (path, rule)


def test_spec_subtrees_are_immutable_except_run_policy_and_scheduling():
    immutable = {path for path, rule in all_rules() if rule["rule"] == "self == oldSelf"}
    assert immutable == {".spec.model", ".spec.prompt", ".spec.prompts", ".spec.negativePrompt", ".spec.generation",
                         ".spec.flexCache", ".spec.parallelism", ".spec.engine", ".spec.worker", ".spec.output"}
    assert not [rule for path, rule in all_rules() if path.startswith(".spec.runPolicy")]


def _defaults(schema: dict, path: tuple[str, ...] = ()):
    for key, child in schema.get("properties", {}).items():
        if "default" in child and child.get("type") != "object":
            yield (*path, key), child["default"]
        yield from _defaults(child, (*path, key))


def _every_property(schema: dict) -> dict:
    """A document holding every property of `schema`, objects nested (the leaves' values do not matter)."""
    return {key: _every_property(child) if "properties" in child else None
            for key, child in schema.get("properties", {}).items()}


def test_every_crd_spec_field_is_known_to_the_spec_model():
    """The worker rejects fields the model lacks (a local manifest has no apiserver pruning typos): none of the
    fields the CRD accepts may be among them, so a manifest that `kubectl apply` takes also runs locally."""
    document = _every_property(node("spec"))
    assert len(document) > 10 and unknown_field(GenerationJobSpec, document) is None
    assert unknown_field(GenerationJobSpec, {**document, "generation": {"setps": 3}}) == ("generation", "setps")


def test_crd_defaults_equal_the_operators_defaults():
    output = {"uri": "s3://b/p", "credentialsSecretRef": {"name": "s"}}
    parsed = parse_spec({"model": {"uri": "/m"}, "prompt": "a", "worker": {"image": "w"},
                         "output": output}).model_dump(by_alias=True)
    defaults = list(_defaults(node("spec")))
    assert len(defaults) > 20
    for path, default in defaults:
        value = parsed
        for part in path:
            value = value[part]
        assert value == default, path
    assert node("spec.parallelism")["default"] == parsed["parallelism"]


@pytest.mark.parametrize("field, model, name", [
    ("spec.flexCache.strategy", FlexCache, "strategy"),
    ("spec.runPolicy.cleanPodPolicy", RunPolicy, "clean_pod_policy"),
    ("spec.engine.dtype", Engine, "dtype"), ("spec.worker.imagePullPolicy", WorkerTemplate, "image_pull_policy"),
    ("spec.parallelism.cfg", Parallelism, "cfg")])
def test_enums_equal_the_operators(field, model, name):
    assert set(node(field)["enum"]) == set(typing.get_args(model.model_fields[name].annotation))
