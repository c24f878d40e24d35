"""Kubernetes' own validation rules for the values a GenerationJob copies into its worker pods.

The operator builds pods from the job's spec (labels, annotations, env, resources, tolerations, names of
Secrets and ServiceAccounts). A value the apiserver refuses there is refused only when the operator creates
the pod, long after `kubectl apply` succeeded; checked here first, the job is refused at once, naming the
field. Each rule is the apiserver's (k8s.io/apimachinery/pkg/util/validation and
k8s.io/kubernetes/pkg/apis/core/validation, v1.37), written as its published regex or arithmetic; each
check returns None when the value is valid, else a message that quotes the value and says what is allowed.
The compound checks (a toleration, an env var, a resources block) return ``(subfield, message)`` pairs,
the subfield relative to the checked object (``limits[cpu]``), so the caller prefixes its own path.

The patterns keep the apiserver's ``^...$`` and are applied with ``fullmatch``: Python's ``$`` also matches before
a trailing newline, Go's does not (a name followed by a newline is no name).

One deliberate difference: environment variable names follow the portable rule
(``[-._a-zA-Z][-._a-zA-Z0-9]*``, every apiserver version), not v1.34's relaxed one (any printable ASCII but
``=``), so a job accepted here runs on any supported cluster and its names work in a shell.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63  # the name part of a label or annotation key
LABEL_VALUE_MAX = 63
ANNOTATIONS_MAX_BYTES = 256 * 1024  # keys and values together (TotalAnnotationSizeLimitB)
PORT_NAME_MAX = 15

_DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_RE = re.compile(f"^{_DNS1123_LABEL}$")
DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
_QUALIFIED_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
QUALIFIED_NAME_RE = re.compile(f"^{_QUALIFIED_NAME}$")
LABEL_VALUE_RE = re.compile(f"^({_QUALIFIED_NAME})?$")
# A whole qualified name (label or annotation key) in one expression, for renderings without code (CEL):
# its characters, and the lengths of its parts (prefix <= 253, name <= 63).
QUALIFIED_KEY_RE = re.compile(rf"^({_DNS1123_LABEL}(\.{_DNS1123_LABEL})*/)?{_QUALIFIED_NAME}$")
QUALIFIED_KEY_LENGTHS_RE = re.compile(f"^([^/]{{1,{DNS1123_SUBDOMAIN_MAX}}}/)?[^/]{{1,{QUALIFIED_NAME_MAX}}}$")
ENV_VAR_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
CONFIG_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")  # keys of Secrets and ConfigMaps
PORT_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # IANA_SVC_NAME, plus the rules below
# resource.Quantity as its parser reads it: <sign><digits>[.<digits>]<suffix>, the suffix binary (Ki..Ei), decimal
# SI (n..E) or an exponent. The parser takes missing digits as 0 ("Gi" is 0, as the apiserver stores it).
QUANTITY_RE = re.compile(
    r"^(?P<number>[+-]?[0-9]*(?:\.[0-9]*)?)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
QUANTITY_SUFFIXES = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
# Container resources without a domain; anything else is fully qualified (vendor.com/thing).
STANDARD_CONTAINER_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage"})
HUGEPAGES_PREFIX = "hugepages-"
TOLERATION_OPERATORS = ("Equal", "Exists")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
ENV_SOURCES = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")
DOWNWARD_API_FIELDS = frozenset(
    {
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "spec.nodeName",
        "spec.serviceAccountName",
        "status.hostIP",
        "status.hostIPs",
        "status.podIP",
        "status.podIPs",
    }
)

Problems = list[tuple[str, str]]  # (subfield, message)


def dns1123_label(value: str) -> str | None:
    """A DNS-1123 label (names of Services, pod hostnames, namespaces)."""
    if len(value) > DNS1123_LABEL_MAX:
        return f"{value!r} is longer than {DNS1123_LABEL_MAX} characters (a DNS-1123 label)"
    if not DNS1123_LABEL_RE.fullmatch(value):
        return (
            f"{value!r} is not a DNS-1123 label: lower-case letters, digits and '-', starting and ending "
            f"with a letter or digit (e.g. 'my-name')"
        )
    return None


def dns1123_subdomain(value: str) -> str | None:
    """A DNS-1123 subdomain: the names of Secrets, ConfigMaps, ServiceAccounts, PriorityClasses."""
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        return f"{value!r} is longer than {DNS1123_SUBDOMAIN_MAX} characters (a DNS-1123 subdomain)"
    if not DNS1123_SUBDOMAIN_RE.fullmatch(value):
        return (
            f"{value!r} is not a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and "
            f"ending with a letter or digit (e.g. 'example.com')"
        )
    return None


def qualified_name(value: str) -> str | None:
    """A label key, annotation key or resource name: an optional DNS-subdomain prefix and '/', then a name of
    at most 63 characters (letters, digits, '-', '_', '.'; starting and ending with a letter or digit)."""
    prefix, slash, name = value.rpartition("/") if "/" in value else ("", "", value)
    if slash and ("/" in prefix or not prefix):
        return f"{value!r} is not a qualified name: at most one '/', with a non-empty prefix before it"
    if slash and (problem := dns1123_subdomain(prefix)):
        return f"{value!r} has an invalid prefix: {problem}"
    if not name:
        return f"{value!r} is not a qualified name: the name part is empty"
    if len(name) > QUALIFIED_NAME_MAX:
        return f"{value!r}: the name part is longer than {QUALIFIED_NAME_MAX} characters"
    if not QUALIFIED_NAME_RE.fullmatch(name):
        return (
            f"{value!r} is not a qualified name: letters, digits, '-', '_' or '.', starting and ending with "
            f"a letter or digit, with an optional DNS-subdomain prefix and '/' (e.g. 'example.com/my-key')"
        )
    return None


def label_value(value: str) -> str | None:
    """A label value: empty, or up to 63 letters, digits, '-', '_', '.' starting and ending alphanumeric."""
    if len(value) > LABEL_VALUE_MAX:
        return f"{value!r} is longer than {LABEL_VALUE_MAX} characters (a label value)"
    if not LABEL_VALUE_RE.fullmatch(value):
        return (
            f"{value!r} is not a valid label value: empty, or letters, digits, '-', '_' or '.', starting and "
            f"ending with a letter or digit"
        )
    return None


def labels(mapping: Mapping[str, str]) -> Problems:
    """Every key and value of a label map."""
    problems = []
    for key, value in mapping.items():
        if problem := qualified_name(key):
            problems.append((f"[{key}]", f"label key {problem}"))
        elif problem := label_value(value):
            problems.append((f"[{key}]", problem))
    return problems


def annotations(mapping: Mapping[str, str]) -> Problems:
    """Annotation keys are qualified names (checked lower-cased, as the apiserver does); keys and values
    together hold at most 256 KiB."""
    problems = [
        (f"[{key}]", f"annotation key {problem}") for key in mapping if (problem := qualified_name(key.lower()))
    ]
    size = sum(len(key.encode()) + len(value.encode()) for key, value in mapping.items())
    if size > ANNOTATIONS_MAX_BYTES:
        problems.append(("", f"annotations hold {size} bytes, more than the {ANNOTATIONS_MAX_BYTES} allowed"))
    return problems


def env_var_name(name: str) -> str | None:
    """An environment variable name (the portable rule: see the module docstring)."""
    if not ENV_VAR_NAME_RE.fullmatch(name):
        return (
            f"{name!r} is not a valid environment variable name: letters, digits, '_', '-' or '.', not "
            f"starting with a digit (e.g. 'MY_VAR')"
        )
    if name in (".", "..") or name.startswith(".."):
        return f"{name!r} is not a valid environment variable name: it must not be '.' or start with '..'"
    return None


def config_key(key: str) -> str | None:
    """A key inside a Secret or ConfigMap."""
    if len(key) > DNS1123_SUBDOMAIN_MAX:
        return f"{key!r} is longer than {DNS1123_SUBDOMAIN_MAX} characters (a Secret or ConfigMap key)"
    if not CONFIG_KEY_RE.fullmatch(key) or key in (".", "..") or key.startswith(".."):
        return f"{key!r} is not a valid Secret or ConfigMap key: letters, digits, '-', '_' or '.' (not '..')"
    return None


def env_var(var: Mapping[str, Any]) -> Problems:
    """One core/v1 EnvVar: its name, and a valueFrom naming exactly one source (without a value)."""
    name = var.get("name") or ""
    problem = env_var_name(name) if name else "a name is required"
    problems = [("name", problem)] if problem else []
    source = var.get("valueFrom")
    if source is None:
        return problems
    if not isinstance(source, Mapping):
        return [*problems, ("valueFrom", f"must be an object, got {source!r}")]
    kinds = [kind for kind in source if kind in ENV_SOURCES]
    unknown = sorted(set(source) - set(ENV_SOURCES))
    if unknown or len(kinds) != 1:
        problems.append(
            ("valueFrom", f"must name exactly one of {', '.join(ENV_SOURCES)}, got {sorted(source) or 'none'}")
        )
        return problems
    if var.get("value"):
        problems.append(("valueFrom", "may not be set together with value"))
    ref, kind = source[kinds[0]], kinds[0]
    if not isinstance(ref, Mapping):
        return [*problems, (f"valueFrom.{kind}", f"must be an object, got {ref!r}")]
    if kind in ("secretKeyRef", "configMapKeyRef"):
        if problem := dns1123_subdomain(str(ref.get("name") or "")):
            problems.append((f"valueFrom.{kind}.name", problem))
        if problem := config_key(str(ref.get("key") or "")):
            problems.append((f"valueFrom.{kind}.key", problem))
    elif kind == "fieldRef" and ref.get("fieldPath") not in DOWNWARD_API_FIELDS:
        problems.append(
            (
                f"valueFrom.{kind}.fieldPath",
                f"{ref.get('fieldPath')!r} is not one of {', '.join(sorted(DOWNWARD_API_FIELDS))}",
            )
        )
    elif kind == "resourceFieldRef" and not str(ref.get("resource") or ""):
        problems.append((f"valueFrom.{kind}.resource", "a resource (e.g. limits.cpu) is required"))
    return problems


def parse_quantity(value: int | float | str) -> Decimal:
    """The exact amount a resource.Quantity denotes ('500m' -> 0.5, '1Gi' -> 1073741824); ValueError naming
    the value when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a quantity: a number or a string such as '500m', '2', '1Gi'")
    if isinstance(value, float):  # a JSON number such as 0.5 (YAML `cpu: 0.5`)
        return Decimal(repr(value))
    match = QUANTITY_RE.fullmatch(str(value))
    if not match or value == "":
        raise ValueError(
            f"{value!r} is not a quantity: a number with an optional suffix (n, u, m, k, M, G, T, "
            f"P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent such as e3), e.g. '500m', '2', '1Gi'"
        )
    digits = match["number"].lstrip("+-")
    number = Decimal(digits) if digits.strip(".") else Decimal(0)
    number, suffix = -number if match["number"].startswith("-") else number, match["suffix"] or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:  # an exponent; a lone "E" is exa
        return number.scaleb(int(suffix[1:]))
    return number * QUANTITY_SUFFIXES[suffix]


def container_resource_name(name: str) -> str | None:
    """cpu, memory, ephemeral-storage, hugepages-<size>, or a fully qualified extended resource."""
    if "/" not in name:
        if name in STANDARD_CONTAINER_RESOURCES or name.startswith(HUGEPAGES_PREFIX):
            return None
        return (
            f"{name!r} is not a container resource: one of {', '.join(sorted(STANDARD_CONTAINER_RESOURCES))}, "
            f"hugepages-<size>, or a fully qualified name such as 'nvidia.com/gpu'"
        )
    if problem := qualified_name(name):
        return problem
    if name.startswith("requests."):
        return f"{name!r} is not an extended resource name: it must not start with 'requests.'"
    return None


def is_extended_resource(name: str) -> bool:
    """Extended resources (vendor.com/thing) are whole numbers, never overcommitted (requests == limits)."""
    return "/" in name and "kubernetes.io/" not in name


def resource_requirements(resources: Mapping[str, Any]) -> Problems:
    """A container's requests and limits: names, quantities (non-negative, whole for extended resources),
    requests <= limits, and requests == limits for extended resources."""
    problems: Problems = []
    unknown = sorted(set(resources) - {"requests", "limits"})
    if unknown:
        problems.append(("", f"only requests and limits may be set, got {unknown}"))
    amounts: dict[str, dict[str, Decimal]] = {"requests": {}, "limits": {}}
    for kind in ("limits", "requests"):
        for name, value in (resources.get(kind) or {}).items():
            where = f"{kind}[{name}]"
            if problem := container_resource_name(name):
                problems.append((where, problem))
                continue
            try:
                amount = parse_quantity(value)
            except ValueError as err:
                problems.append((where, str(err)))
                continue
            if amount < 0:
                problems.append((where, f"{value!r} is negative: quantities must be >= 0"))
            elif is_extended_resource(name) and amount != amount.to_integral_value():
                problems.append((where, f"{value!r} must be a whole number for the extended resource {name}"))
            else:
                amounts[kind][name] = amount
    for name, request in amounts["requests"].items():
        limit = amounts["limits"].get(name)
        if is_extended_resource(name) and limit != request:
            problems.append(
                (
                    f"requests[{name}]",
                    f"{resources['requests'][name]!r} must equal the limit of the "
                    f"extended resource {name} (limits[{name}] must be set to it)",
                )
            )
        elif limit is not None and request > limit:
            problems.append(
                (
                    f"requests[{name}]",
                    f"{resources['requests'][name]!r} is more than the limit "
                    f"{resources['limits'][name]!r}: requests must be <= limits",
                )
            )
    return problems


def toleration(spec: Mapping[str, Any]) -> Problems:
    """One core/v1 Toleration: key, operator, value and effect as the apiserver checks them."""
    problems: Problems = []
    key, operator = spec.get("key") or "", spec.get("operator") or "Equal"
    value, effect = spec.get("value") or "", spec.get("effect") or ""
    if key and (problem := qualified_name(key)):
        problems.append(("key", problem))
    if operator not in TOLERATION_OPERATORS:
        problems.append(("operator", f"{operator!r} is not one of {', '.join(TOLERATION_OPERATORS)}"))
    elif not key and operator != "Exists":
        problems.append(("operator", "must be Exists when key is empty (that tolerates every taint)"))
    elif operator == "Exists" and value:
        problems.append(("value", f"{value!r} must be empty when operator is Exists"))
    elif operator == "Equal" and (problem := label_value(value)):
        problems.append(("value", problem))
    if effect and effect not in TAINT_EFFECTS:
        problems.append(("effect", f"{effect!r} is not one of {', '.join(TAINT_EFFECTS)} (or empty: every effect)"))
    if spec.get("tolerationSeconds") is not None and effect != "NoExecute":
        problems.append(("effect", f"must be NoExecute when tolerationSeconds is set, got {effect!r}"))
    return problems


def port_number(port: int) -> str | None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return f"{port!r} is not a port number: an integer from 1 to 65535"
    return None


def port_name(name: str) -> str | None:
    """An IANA service name: at most 15 lower-case letters, digits and '-', with a letter, no '--'."""
    if len(name) > PORT_NAME_MAX or not PORT_NAME_RE.fullmatch(name) or "--" in name or not re.search("[a-z]", name):
        return (
            f"{name!r} is not a port name: at most {PORT_NAME_MAX} lower-case letters, digits and '-', with "
            f"at least one letter, no '--', not starting or ending with '-'"
        )
    return None


def container_image(image: str) -> str | None:
    if not image or image != image.strip():
        return f"{image!r} is not an image reference: non-empty, without leading or trailing whitespace"
    return None
