"""RBAC the dev cluster installs, as plain manifests. The ClusterRoles come from `chitu_operator.rbac`, the one
source the Helm chart renders too, so the dev cluster cannot drift from a real install.

- ClusterRole ``chitu-worker``: what a worker pod's service account may do (read its GenerationJob,
  patch its status). The operator binds it per namespace with a RoleBinding (docs/generationjob.md).
- ServiceAccount ``chitu-operator`` in ``chitu-system`` with ClusterRole ``chitu-operator``: the dev
  cluster runs the operator as a local process with a token kubeconfig of this account, so a
  missing permission fails here exactly as it would in a real cluster.
"""

from __future__ import annotations

from chitu_operator.rbac import build_operator_cluster_role, build_worker_cluster_role

OPERATOR_NAMESPACE = "chitu-system"
OPERATOR_SERVICE_ACCOUNT = "chitu-operator"


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
                     "name": build_operator_cluster_role()["metadata"]["name"]},
         "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT,
                       "namespace": OPERATOR_NAMESPACE}]},
    ]
