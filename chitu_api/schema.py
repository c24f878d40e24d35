"""The Kubernetes schema data a contract model carries beside its fields: CEL rules and OpenAPI extras.

Everything here is plain JSON data placed in pydantic's `json_schema_extra`, so a rule sits next to the fields it
constrains and the CRD (crd.py) copies it as written:

    class Parallelism(ContractModel):
        model_config = ConfigDict(json_schema_extra=rules(cel("self.cpSize >= 1", "...", ".cpSize")))
        cp_size: int = Field(1, description="...", json_schema_extra=rules(cel(...), format="int64"))

A model-level rule sees the object as `self`; a field-level rule sees the field's value. A rule that reads
`oldSelf` is a transition rule: the apiserver runs it on updates only. tests/unit/test_contract_cel.py
evaluates every rule against the Python validators on a grid of values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

VALIDATIONS = "x-kubernetes-validations"
#: A free-form object (a core/v1 volume source, an env var's valueFrom): kept as given, not pruned.
FREE_FORM = {"x-kubernetes-preserve-unknown-fields": True}


class ContractModel(BaseModel):
    """A GenerationJob section: camelCase on the wire, snake_case in Python, frozen once parsed.

    Unknown fields are ignored for forward compatibility (the apiserver prunes them; the worker's manifest
    reader rejects them in local files that no apiserver has seen).
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


def cel(
    rule: str, message: str, field_path: str | None = None, message_expression: str | None = None
) -> dict[str, str]:
    """One `x-kubernetes-validations` entry. `field_path` (".a.b", relative to the rule's object) is where the
    apiserver reports a failure of a rule that spans fields, so the error names the field to change.
    `message_expression`: CEL computing the message (say, naming the map key at fault); `message` stays the
    fallback when it cannot be evaluated."""
    entry = {"rule": rule, "message": message}
    if message_expression is not None:
        entry["messageExpression"] = message_expression
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def immutable(field: str) -> dict[str, str]:
    """A transition rule: `field` (spec.x, named in the message) cannot change once the job exists."""
    return cel("self == oldSelf", f"{field} is immutable")


def rules(*validations: dict[str, str], **openapi: Any) -> dict[str, Any]:
    """`json_schema_extra` holding CEL `validations` and OpenAPI keys (format="int64", maxProperties=32, ...)."""
    extra: dict[str, Any] = dict(openapi)
    if validations:
        extra[VALIDATIONS] = list(validations)
    return extra


def error_message(error: Mapping[str, Any]) -> str:
    """One pydantic error as text, quoting a scalar value for its built-in checks (our validators' messages do);
    a list or mapping is not repeated back (a 1025-prompt list would fill a termination message)."""
    if error["type"] == "value_error":
        return error["msg"].removeprefix("Value error, ")
    if "input" in error and not isinstance(error["input"], (dict, list, tuple)):
        quoted = repr(error["input"])
        return f"{error['msg']} (got {quoted if len(quoted) <= 200 else quoted[:197] + '...'})"
    return error["msg"]
