"""RBAC the dev cluster installs, as plain manifests (the chart installs the same roles).

- ClusterRole ``chitu-worker``: what a worker pod's service account may do (read its GenerationJob,
  patch its status). The operator binds it per namespace with a RoleBinding (docs/generationjob.md).
- ServiceAccount ``chitu-operator`` in ``chitu-system`` with ClusterRole ``chitu-operator``: the dev
  cluster runs the operator as a local process with a token kubeconfig of this account, so a
  missing permission fails here exactly as it would in a real cluster.
"""

from __future__ import annotations

OPERATOR_NAMESPACE = "chitu-system"
OPERATOR_SERVICE_ACCOUNT = "chitu-operator"
WORKER_CLUSTER_ROLE = "chitu-worker"
GROUP = "chitu.dev"


def _rule(groups: list[str], resources: list[str], verbs: list[str], names: list[str] | None = None) -> dict:
    rule = {"apiGroups": groups, "resources": resources, "verbs": verbs}
    if names:
        rule["resourceNames"] = names
    return rule


def build_worker_cluster_role() -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": WORKER_CLUSTER_ROLE},
        "rules": [
            _rule([GROUP], ["generationjobs"], ["get", "list", "watch"]),
            _rule([GROUP], ["generationjobs/status"], ["get", "patch"]),
        ],
    }


def build_operator_cluster_role() -> dict:
    rules = [
        # The custom resource and its subresources, driven by kopf.
        _rule([GROUP], ["generationjobs"], ["get", "list", "watch", "patch", "update"]),
        _rule([GROUP], ["generationjobs/status"], ["get", "patch", "update"]),
        _rule([GROUP], ["generationjobs/finalizers"], ["update"]),
        # kopf: discover CRDs, watch namespaces in cluster-wide mode, post events.
        _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["get", "list", "watch"]),
        _rule([""], ["namespaces"], ["get", "list", "watch"]),
        _rule(["", "events.k8s.io"], ["events"], ["create", "patch"]),
        # The gang: worker pods and their headless Service.
        _rule([""], ["pods"], ["get", "list", "watch", "create", "delete", "deletecollection", "patch"]),
        _rule([""], ["services"], ["get", "list", "watch", "create", "delete"]),
        # The per-namespace worker identity: a ServiceAccount and a RoleBinding to chitu-worker,
        # which the operator may grant without holding those permissions itself (bind).
        _rule([""], ["serviceaccounts"], ["get", "list", "watch", "create"]),
        _rule(["rbac.authorization.k8s.io"], ["rolebindings"], ["get", "list", "watch", "create"]),
        _rule(["rbac.authorization.k8s.io"], ["clusterroles"], ["bind"], [WORKER_CLUSTER_ROLE]),
    ]
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": OPERATOR_SERVICE_ACCOUNT}, "rules": rules}


def build_dev_rbac() -> list[dict]:
    """Everything to apply, in dependency order."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": OPERATOR_SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE}},
        build_worker_cluster_role(),
        build_operator_cluster_role(),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": OPERATOR_SERVICE_ACCOUNT},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": OPERATOR_SERVICE_ACCOUNT},
         "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT,
                       "namespace": OPERATOR_NAMESPACE}]},
    ]
