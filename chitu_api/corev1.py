"""The Kubernetes core/v1 shapes a GenerationJob embeds (container resources, env vars, tolerations).

TypedDicts rather than models: the operator copies them into pod manifests as they are, under their own
(camelCase) keys. Each key carries its description and bounds for the generated schema; the worker's env names
carry the reserved-name rule (chitu_api.podenv.RESERVED_ENV) in Python and in CEL, and every shape carries
Kubernetes' own rules for it (chitu_api.kubernetes_cel), so the apiserver refuses a bad value at apply.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, Required

from pydantic import AfterValidator, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from chitu_api import kubernetes_cel
from chitu_api.podenv import RESERVED_ENV
from chitu_api.schema import FREE_FORM, cel, rules

Quantity = Annotated[int | str, Field(json_schema_extra={"x-kubernetes-int-or-string": True, "maxLength": 64})]
QuantityMap = Annotated[dict[str, Quantity], Field(max_length=32)]


class ResourceRequirements(TypedDict, total=False):
    """A container's requests and limits (core/v1 ResourceRequirements without claims)."""

    __pydantic_config__ = ConfigDict(json_schema_extra=rules(*kubernetes_cel.resource_requirements_rules()))
    requests: Annotated[
        QuantityMap,
        Field(
            description="Minimum amounts, e.g. {cpu: '4', memory: 32Gi}.",
            json_schema_extra=rules(*kubernetes_cel.quantity_map_rules("requests")),
        ),
    ]
    limits: Annotated[
        QuantityMap,
        Field(
            description="Maximum amounts; nvidia.com/gpu is set by the operator.",
            json_schema_extra=rules(*kubernetes_cel.quantity_map_rules("limits")),
        ),
    ]


def _not_reserved(name: str) -> str:
    if name in RESERVED_ENV:
        raise ValueError(f"{name} is set by the operator and cannot be overridden")
    return name


class EnvVar(TypedDict):
    """One core/v1 EnvVar of the worker container."""

    __pydantic_config__ = ConfigDict(json_schema_extra=rules(*kubernetes_cel.env_var_rules()))
    name: Required[
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=256,
                description="The variable's name; not one the operator sets on every pod.",
                json_schema_extra=rules(
                    cel(
                        f"!(self in {sorted(RESERVED_ENV)})",
                        "is set by the operator and "
                        f"cannot be overridden (reserved: {', '.join(sorted(RESERVED_ENV))})",
                    ),
                    kubernetes_cel.env_var_name_rule(),
                ),
            ),
            AfterValidator(_not_reserved),
        ]
    ]
    value: NotRequired[Annotated[str, Field(max_length=4096, description="A literal value.")]]
    valueFrom: NotRequired[
        Annotated[
            dict[str, Any],
            Field(description="A core/v1 EnvVarSource (secretKeyRef, fieldRef, ...).", json_schema_extra=FREE_FORM),
        ]
    ]


class Toleration(TypedDict, total=False):
    """One core/v1 Toleration of the worker pods."""

    __pydantic_config__ = ConfigDict(json_schema_extra=rules(*kubernetes_cel.toleration_rules()))
    key: Annotated[str, Field(max_length=317, description="The taint key (empty with operator Exists: all).")]
    operator: Annotated[Literal["Exists", "Equal"], Field(description="Exists or Equal (default Equal).")]
    value: Annotated[str, Field(max_length=256, description="The taint value (operator Equal).")]
    effect: Annotated[
        Literal["NoSchedule", "PreferNoSchedule", "NoExecute"],
        Field(description="The taint effect to tolerate (empty: all)."),
    ]
    tolerationSeconds: Annotated[
        int, Field(description="How long a NoExecute taint is tolerated.", json_schema_extra=rules(format="int64"))
    ]
