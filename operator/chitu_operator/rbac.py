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
    Rule(
        "GenerationJobs: watch them; kopf patches its annotations and finalizer; ttlSecondsAfterFinished "
        "deletes finished ones",
        (GROUP,),
        (PLURAL,),
        ("get", "list", "watch", "patch", "delete"),
    ),
    Rule(
        "GenerationJob status: phase, conditions, restarts (merge patches)",
        (GROUP,),
        (f"{PLURAL}/status",),
        ("get", "patch"),
    ),
    Rule(
        "owner references with blockOwnerDeletion on the pods and Service a job owns",
        (GROUP,),
        (f"{PLURAL}/finalizers",),
        ("update",),
    ),
    Rule(
        "kopf discovers the CRD it serves",
        ("apiextensions.k8s.io",),
        ("customresourcedefinitions",),
        ("get", "list", "watch"),
    ),
    Rule("kopf lists namespaces when it serves all of them", ("",), ("namespaces",), ("get", "list", "watch")),
    Rule(
        "events on GenerationJobs for every phase transition", ("", "events.k8s.io"), ("events",), ("create", "patch")
    ),
    Rule(
        "the worker gang: one pod per node rank, deleted on restart, suspension and cleanup",
        ("",),
        ("pods",),
        ("get", "list", "watch", "create", "delete"),
    ),
    Rule("the headless Service that gives rank 0 its DNS name", ("",), ("services",), ("get", "create", "delete")),
    Rule("each job's own worker identity: ServiceAccount <job>-worker ...", ("",), ("serviceaccounts",), ("create",)),
    Rule(
        "... with a Role and RoleBinding letting it read that job and patch that job's status only (JOB_WORKER_RULES)",
        ("rbac.authorization.k8s.io",),
        ("roles", "rolebindings"),
        ("create",),
    ),
    Rule(
        "a NetworkPolicy per job: only the job's own ranks reach its worker pods",
        ("networking.k8s.io",),
        ("networkpolicies",),
        ("create",),
    ),
    Rule("Kueue: one Workload per queued job (docs/kueue.md)", ("kueue.x-k8s.io",), ("workloads",), ("get", "create")),
    Rule(
        "Kueue: mark a Workload Finished, or give an evicted one's quota back",
        ("kueue.x-k8s.io",),
        ("workloads/status",),
        ("get", "patch"),
    ),
    Rule(
        "Kueue: the node labels of an admitted flavor, the value of a job's WorkloadPriorityClass",
        ("kueue.x-k8s.io",),
        ("resourceflavors", "workloadpriorityclasses"),
        ("get",),
    ),
    Rule(
        "the value of a job's PriorityClass, for its Workload's priority",
        ("scheduling.k8s.io",),
        ("priorityclasses",),
        ("get",),
    ),
    Rule(
        "leader election between operator replicas (--leader-elect)",
        ("coordination.k8s.io",),
        ("leases",),
        ("get", "create", "update"),
    ),
)

#: The ClusterRole chitu-worker, for a ServiceAccount a user names in spec.worker.serviceAccountName and binds
#: themselves (it reaches every job of the namespace it is bound in); the operator's own per-job identity holds
#: JOB_WORKER_RULES instead.
WORKER_RULES = (
    Rule("the worker reads its GenerationJob's full spec", (GROUP,), (PLURAL,), ("get", "list", "watch")),
    Rule(
        "rank 0 reports progress and outputs (merge patches of status)",
        (GROUP,),
        (f"{PLURAL}/status",),
        ("get", "patch"),
    ),
)


#: Users: aggregated into Kubernetes' view / edit / admin roles. Neither writes generationjobs/status: only the
#: operator and the job's own workers do (a forged status.outputs would be taken as the job's result).
USER_VIEW_RULES = (Rule("read GenerationJobs, their status included", (GROUP,), (PLURAL,), ("get", "list", "watch")),)
USER_EDIT_RULES = (
    Rule(
        "create, change and delete GenerationJobs (never their status)",
        (GROUP,),
        (PLURAL,),
        ("create", "update", "patch", "delete", "deletecollection"),
    ),
)
AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
USER_ROLES = {  # ClusterRole name -> (rules, the Kubernetes roles it is aggregated into)
    "chitu-generationjobs-view": (USER_VIEW_RULES, ("view", "edit", "admin")),
    "chitu-generationjobs-edit": (USER_EDIT_RULES, ("edit", "admin")),
}


def job_worker_rules(job: str) -> tuple[Rule, ...]:
    """What one job's workers may do: read that job, report into that job's status, nothing else."""
    return (
        Rule("the worker reads its own GenerationJob", (GROUP,), (PLURAL,), ("get",), (job,)),
        Rule(
            "rank 0 reports progress and outputs of its own job",
            (GROUP,),
            (f"{PLURAL}/status",),
            ("get", "patch"),
            (job,),
        ),
    )


def build_user_cluster_roles() -> list[dict[str, Any]]:
    roles = []
    for name, (rules, aggregated_into) in USER_ROLES.items():
        role = build_cluster_role(name, rules)
        role["metadata"]["labels"] = {f"{AGGREGATE}{target}": "true" for target in aggregated_into}
        roles.append(role)
    return roles


def build_cluster_role(name: str, rules: tuple[Rule, ...]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [rule.manifest() for rule in rules],
    }


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
