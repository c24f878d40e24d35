"""Kubernetes' rules of chitu_api.kubernetes_rules rendered as CEL, so the apiserver refuses at `kubectl apply`.

One rule, two renderings: the regexes and bounds are kubernetes_rules' constants, written here as CEL expressions
over a subject (``self``, ``k``, ``self[k]``) for the CRD's ``x-kubernetes-validations``; the Python functions
there give the operator's second line (an object stored under an older CRD, a local manifest) and the per-value
messages. tests/unit/test_contract_cel.py evaluates these rules with cel-python against the Python checks on a
grid, and tests/e2e/test_generationjob_validation.py applies such cases to the real apiserver.

Quantities use Kubernetes' CEL quantity library (``isQuantity``, ``quantity(...).compareTo``), which parses as
the pod's validation does. Map keys carry no length bound in a CRD schema, so every map these rules iterate has
maxProperties, and regex matches come after cheap size checks where that bounds the cost estimate.
"""

from __future__ import annotations

import re

from chitu_api import kubernetes_rules as k8s
from chitu_api.podpolicy import GPU_RESOURCE, OWNED_LABEL_PREFIXES
from chitu_api.schema import cel

DNS1123_SUBDOMAIN_TEXT = (
    f"a DNS-1123 subdomain: at most {k8s.DNS1123_SUBDOMAIN_MAX} lower-case letters, digits, '-' and '.', starting "
    "and ending with a letter or digit (e.g. 'example.com')"
)
QUALIFIED_NAME_TEXT = (
    f"a qualified name: at most {k8s.QUALIFIED_NAME_MAX} letters, digits, '-', '_' or '.', starting and ending with "
    "a letter or digit, with an optional DNS-subdomain prefix and '/' (e.g. 'example.com/my-key')"
)
LABEL_VALUE_TEXT = (
    f"empty, or at most {k8s.LABEL_VALUE_MAX} letters, digits, '-', '_' or '.', starting and ending with a letter "
    "or digit"
)
ENV_VAR_NAME_TEXT = "letters, digits, '_', '-' or '.', not starting with a digit, not '.' or '..' (e.g. 'MY_VAR')"
CONFIG_KEY_TEXT = f"at most {k8s.DNS1123_SUBDOMAIN_MAX} letters, digits, '-', '_' or '.' (not '.' or '..')"
QUANTITY_TEXT = "a quantity >= 0 such as '500m', '2' or '1Gi' (a number with an optional suffix)"


def literal(text: re.Pattern[str] | str) -> str:
    """A regex or a text as a CEL string literal (backslashes and quotes escaped)."""
    text = text.pattern if isinstance(text, re.Pattern) else text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def every_key(check: str, what: str, requirement: str) -> dict[str, str]:
    """On a map: `check` (CEL over the key `k` and its value `self[k]`) holds for every key; the message names the
    first key it fails for ('worker.podLabels[a=b]: must be a label key, ...')."""
    culprit = f"self.filter(k, !({check}))[0]"
    return cel(
        f"self.all(k, {check})",
        f"{what}: every key {requirement}",
        message_expression=f"{literal(what + '[')} + {culprit} + {literal(']: ' + requirement)}",
    )


def dns1123_subdomain(subject: str) -> str:
    return f"{subject}.size() <= {k8s.DNS1123_SUBDOMAIN_MAX} && {subject}.matches({literal(k8s.DNS1123_SUBDOMAIN_RE)})"


def qualified_name(subject: str) -> str:
    return (
        f"{subject}.matches({literal(k8s.QUALIFIED_KEY_LENGTHS_RE)}) && "
        f"{subject}.matches({literal(k8s.QUALIFIED_KEY_RE)})"
    )


def label_value(subject: str) -> str:
    return f"{subject}.size() <= {k8s.LABEL_VALUE_MAX} && {subject}.matches({literal(k8s.LABEL_VALUE_RE)})"


def env_var_name(subject: str) -> str:
    return f"{subject}.matches({literal(k8s.ENV_VAR_NAME_RE)}) && {subject} != '.' && !{subject}.startsWith('..')"


def config_key(subject: str) -> str:
    return (
        f"{subject}.size() <= {k8s.DNS1123_SUBDOMAIN_MAX} && {subject}.matches({literal(k8s.CONFIG_KEY_RE)}) && "
        f"{subject} != '.' && !{subject}.startsWith('..')"
    )


def is_extended_resource(subject: str) -> str:
    """kubernetes_rules.is_extended_resource."""
    return f"({subject}.contains('/') && !{subject}.contains('kubernetes.io/'))"


def quantity(subject: str) -> str:
    """An int-or-string amount as a Quantity (an integer is its decimal text)."""
    return f"quantity(string({subject}))"


def is_quantity(subject: str) -> str:
    return f"isQuantity(string({subject}))"


# --- whole rules (x-kubernetes-validations entries), each on the node its comment names ---------------------------


def dns1123_subdomain_rule(what: str, optional: bool = False) -> dict[str, str]:
    """On a name field (a Secret, ServiceAccount or PriorityClass name); `optional`: "" means unset."""
    rule = dns1123_subdomain("self")
    return cel(f"self == '' || ({rule})" if optional else rule, f"{what} must be {DNS1123_SUBDOMAIN_TEXT}")


def label_value_rule(what: str) -> dict[str, str]:
    return cel(label_value("self"), f"{what} must be a label value: {LABEL_VALUE_TEXT}")


def env_var_name_rule() -> dict[str, str]:
    return cel(env_var_name("self"), f"must be a valid environment variable name: {ENV_VAR_NAME_TEXT}")


def config_key_rule() -> dict[str, str]:
    return cel(config_key("self"), f"must be a Secret key: {CONFIG_KEY_TEXT}")


def label_map_rules(what: str) -> tuple[dict[str, str], ...]:
    """On a map of labels (node selector, pod labels): every key a qualified name, every value a label value."""
    return (
        every_key(qualified_name("k"), what, f"must be a label key, {QUALIFIED_NAME_TEXT}"),
        every_key(label_value("self[k]"), what, f"must have a label value: {LABEL_VALUE_TEXT}"),
    )


def owned_labels_rule() -> dict[str, str]:
    """On pod labels: the operator's own labels (podpolicy.OWNED_LABEL_PREFIXES) cannot be overridden."""
    owned = " || ".join(f"k.startsWith('{prefix}')" for prefix in OWNED_LABEL_PREFIXES)
    return every_key(
        f"!({owned})",
        "worker.podLabels",
        f"is the operator's: labels starting with {', '.join(OWNED_LABEL_PREFIXES)} cannot be overridden",
    )


def annotation_keys_rule() -> dict[str, str]:
    """On a map of annotations: keys are qualified names, checked lower-cased (as the apiserver does)."""
    return every_key(
        qualified_name("k.lowerAscii()"), "worker.podAnnotations", f"must be an annotation key, {QUALIFIED_NAME_TEXT}"
    )


def image_rule() -> dict[str, str]:
    return cel("self == self.trim()", "must be an image reference without leading or trailing whitespace")


def quantity_map_rules(what: str) -> tuple[dict[str, str], ...]:
    """On requests or limits (`what`): resource names, amounts that parse as non-negative quantities, whole
    extended ones."""
    standard = sorted(k8s.STANDARD_CONTAINER_RESOURCES)
    return (
        every_key(
            f"k in {standard} || k.startsWith('{k8s.HUGEPAGES_PREFIX}') || "
            f"(k.contains('/') && !k.startsWith('requests.') && {qualified_name('k')})",
            what,
            f"must be a resource name: one of {', '.join(standard)}, {k8s.HUGEPAGES_PREFIX}<size>, or a fully "
            "qualified name such as 'nvidia.com/gpu'",
        ),
        every_key(
            f"{is_quantity('self[k]')} && {quantity('self[k]')}.compareTo(quantity('0')) >= 0",
            what,
            f"must be {QUANTITY_TEXT}",
        ),
        every_key(
            f"!{is_extended_resource('k')} || !{is_quantity('self[k]')} || {quantity('self[k]')}.isInteger()",
            what,
            "must be a whole number: an extended resource (vendor.com/thing)",
        ),
    )


def _compare(comparison: str) -> str:
    """requests[k] <comparison> limits[k] (0 when either does not parse: the per-map rule reports that)."""
    request, limit = "self.requests[k]", "self.limits[k]"
    return (
        f"(!{is_quantity(request)} || !{is_quantity(limit)} || "
        f"{quantity(request)}.compareTo({quantity(limit)}) {comparison} 0)"
    )


def resource_requirements_rules() -> tuple[dict[str, str], ...]:
    """On a container's resources: requests <= limits; an extended resource's request equals its limit (the GPU's
    are set by the operator from parallelism.gpusPerPod)."""
    return (
        cel(
            "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) || "
            f"k == '{GPU_RESOURCE}' || {_compare('<=')})",
            "requests must be <= limits for every resource named in both",
            ".requests",
        ),
        cel(
            f"!has(self.requests) || self.requests.all(k, !{is_extended_resource('k')} || k == '{GPU_RESOURCE}' || "
            f"(has(self.limits) && k in self.limits && {_compare('==')}))",
            "an extended resource (vendor.com/thing) requested must have a limit equal to the request",
            ".requests",
        ),
    )


def toleration_rules() -> tuple[dict[str, str], ...]:
    """On one toleration: as kubernetes_rules.toleration (operator defaults to Equal)."""
    exists = "(has(self.operator) && self.operator == 'Exists')"
    keyed = "(has(self.key) && self.key != '')"
    valued = "(has(self.value) && self.value != '')"
    return (
        cel(f"!{keyed} || ({qualified_name('self.key')})", f"key must be {QUALIFIED_NAME_TEXT}", ".key"),
        cel(
            f"{keyed} || {exists}",
            "operator must be Exists when key is empty (that tolerates every taint)",
            ".operator",
        ),
        cel(f"!{exists} || !{valued}", "value must be empty when operator is Exists", ".value"),
        cel(f"{exists} || !{valued} || ({label_value('self.value')})", f"value must be {LABEL_VALUE_TEXT}", ".value"),
        cel(
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "effect must be NoExecute when tolerationSeconds is set",
            ".effect",
        ),
    )


def env_var_rules() -> tuple[dict[str, str], ...]:
    """On one env var: a literal value and a valueFrom are exclusive."""
    return (
        cel(
            "!has(self.valueFrom) || !has(self.value) || self.value == ''",
            "valueFrom may not be set together with value",
            ".valueFrom",
        ),
    )
