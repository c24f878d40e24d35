"""The RBAC rules of the operator and of the workers, each with the reason it exists.

Single source: the Helm chart's ClusterRoles include these rules from files that
scripts/generate-crds.py renders (a test fails on drift), and the dev cluster can apply the
ClusterRoles built here. The operator never creates ClusterRoles itself (that would need cluster-wide
``create clusterroles``); it only binds ``chitu-worker`` per namespace, which ``bind`` allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chitu_api.names import GROUP, PLURAL, WORKER_IDENTITY

OPERATOR_ROLE = "chitu-operator"


@dataclass(frozen=True)
class Rule:
    purpose: str
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    resource_names: tuple[str, ...] = ()

    def manifest(self) -> dict[str, Any]:
        rule = {"apiGroups": list(self.api_groups), "resources": list(self.resources), "verbs": list(self.verbs)}
        if self.resource_names:
            rule["resourceNames"] = list(self.resource_names)
        return rule


OPERATOR_RULES = (
    Rule("GenerationJobs: watch them; kopf patches its annotations and finalizer; ttlSecondsAfterFinished "
         "deletes finished ones", (GROUP,), (PLURAL,), ("get", "list", "watch", "patch", "delete")),
    Rule("GenerationJob status: phase, conditions, restarts (merge patches)",
         (GROUP,), (f"{PLURAL}/status",), ("get", "patch")),
    Rule("owner references with blockOwnerDeletion on the pods and Service a job owns",
         (GROUP,), (f"{PLURAL}/finalizers",), ("update",)),
    Rule("kopf discovers the CRD it serves", ("apiextensions.k8s.io",), ("customresourcedefinitions",),
         ("get", "list", "watch")),
    Rule("kopf lists namespaces when it serves all of them", ("",), ("namespaces",), ("get", "list", "watch")),
    Rule("events on GenerationJobs for every phase transition", ("", "events.k8s.io"), ("events",),
         ("create", "patch")),
    Rule("the worker gang: one pod per node rank, deleted on restart, suspension and cleanup",
         ("",), ("pods",), ("get", "list", "watch", "create", "delete")),
    Rule("the headless Service that gives rank 0 its DNS name", ("",), ("services",), ("get", "create", "delete")),
    Rule("the shared worker identity of each namespace: ServiceAccount chitu-worker",
         ("",), ("serviceaccounts",), ("get", "create")),
    Rule("... bound to ClusterRole chitu-worker by a RoleBinding in that namespace",
         ("rbac.authorization.k8s.io",), ("rolebindings",), ("get", "create")),
    Rule("binding chitu-worker without holding its permissions through another role",
         ("rbac.authorization.k8s.io",), ("clusterroles",), ("bind",), (WORKER_IDENTITY,)),
)

WORKER_RULES = (
    Rule("the worker reads its GenerationJob's full spec", (GROUP,), (PLURAL,), ("get", "list", "watch")),
    Rule("rank 0 reports progress and outputs (merge patches of status)",
         (GROUP,), (f"{PLURAL}/status",), ("get", "patch")),
)


def build_cluster_role(name: str, rules: tuple[Rule, ...]) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
            "rules": [rule.manifest() for rule in rules]}


def build_operator_cluster_role() -> dict[str, Any]:
    return build_cluster_role(OPERATOR_ROLE, OPERATOR_RULES)


def build_worker_cluster_role() -> dict[str, Any]:
    return build_cluster_role(WORKER_IDENTITY, WORKER_RULES)


def rules_yaml(rules: tuple[Rule, ...]) -> str:
    """The rules as a YAML list, each under a comment saying why (what the chart includes)."""
    lines = []
    for rule in rules:
        lines.append(f"# {rule.purpose}")
        lines.append(f"- apiGroups: [{', '.join(_quoted(g) for g in rule.api_groups)}]")
        lines.append(f"  resources: [{', '.join(rule.resources)}]")
        lines.append(f"  verbs: [{', '.join(rule.verbs)}]")
        if rule.resource_names:
            lines.append(f"  resourceNames: [{', '.join(rule.resource_names)}]")
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    return f'"{text}"'
