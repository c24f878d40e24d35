"""RBAC the dev cluster installs, as plain manifests. The ClusterRoles come from `chitu_operator.rbac`, the one
source the Helm chart renders too, so the dev cluster cannot drift from a real install.

- ClusterRole ``chitu-worker``: for a ServiceAccount a user names in spec.worker.serviceAccountName and
  binds themselves (the operator gives each job's workers their own identity, reaching only that job).
- ClusterRoles ``chitu-generationjobs-view`` / ``-edit``: aggregated into Kubernetes' view, edit and admin,
  so users bound to those may read / write GenerationJobs, never their status.
- ServiceAccount ``chitu-operator`` in ``chitu-system`` with ClusterRole ``chitu-operator``: the dev
  cluster runs the operator as a local process with a token kubeconfig of this account, so a
  missing permission fails here exactly as it would in a real cluster.
"""

from __future__ import annotations

from chitu_operator.rbac import build_operator_cluster_role, build_user_cluster_roles, build_worker_cluster_role

OPERATOR_NAMESPACE = "chitu-system"
OPERATOR_SERVICE_ACCOUNT = "chitu-operator"


def build_dev_rbac() -> list[dict]:
    """Everything to apply, in dependency order."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": OPERATOR_SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE},
        },
        build_worker_cluster_role(),
        *build_user_cluster_roles(),
        build_operator_cluster_role(),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": OPERATOR_SERVICE_ACCOUNT},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": build_operator_cluster_role()["metadata"]["name"],
            },
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE}],
        },
    ]
