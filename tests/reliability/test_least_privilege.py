"""Least privilege, as the real apiserver sees it (`kubectl auth can-i --list`, impersonating each identity).

- The operator's ServiceAccount holds exactly chitu_operator.rbac.OPERATOR_RULES: nothing on Secrets, nodes or
  ClusterRoles.
- A worker's ServiceAccount can read only its own GenerationJob and patch only its own job's status (defect
  (e): a worker token could forge the status of every job in its namespace).
- Users bound to the aggregated chitu edit / view roles cannot write generationjobs/status (a forged
  status.outputs pointing at another bucket was taken as is).
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from jobspecs import job_manifest

from chitu_api.names import GROUP, PLURAL, VERSION
from chitu_devcluster.identities import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT
from chitu_devcluster.paths import VENV_BIN
from chitu_operator.rbac import OPERATOR_RULES

ROW = re.compile(r"^(?P<resource>\S*)\s+\[(?P<urls>[^\]]*)\]\s+\[(?P<names>[^\]]*)\]\s+\[(?P<verbs>[^\]]*)\]\s*$")
#: Granted to every authenticated identity by Kubernetes' own bootstrap roles (discovery, self reviews).
EVERYONE = (
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
    "selfsubjectreviews.authentication.k8s.io",
    "clustertrustbundles.certificates.k8s.io",
)


def kubectl(cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [str(VENV_BIN / "kubectl"), "--kubeconfig", str(cluster.state.kubeconfig), *args]
    return subprocess.run(command, capture_output=True, text=True, check=check)


def rules_of(cluster, user: str, namespace: str) -> set[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(resource.group[/sub], resource names, verbs) the identity holds in ``namespace``, bootstrap rules left out."""
    table = kubectl(cluster, "auth", "can-i", "--list", f"--as={user}", "-n", namespace).stdout.splitlines()[1:]
    rules = set()
    for line in table:
        match = ROW.match(line)
        if match and match["resource"] and match["resource"] not in EVERYONE:
            rules.add((match["resource"], tuple(sorted(match["names"].split())), tuple(sorted(match["verbs"].split()))))
    return rules


def can(cluster, user: str, namespace: str, *query: str) -> bool:
    return kubectl(cluster, "auth", "can-i", *query, f"--as={user}", "-n", namespace, check=False).returncode == 0


def expected_operator_rules() -> set[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    expected = set()
    for rule in OPERATOR_RULES:
        for group in rule.api_groups:
            for resource in rule.resources:
                base, _, sub = resource.partition("/")
                name = f"{base}.{group}" if group else base
                expected.add(
                    (f"{name}/{sub}" if sub else name, tuple(sorted(rule.resource_names)), tuple(sorted(rule.verbs)))
                )
    return expected


def test_the_operator_holds_exactly_its_declared_rules(cluster, namespace):
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
    assert rules_of(cluster, user, namespace) == expected_operator_rules()
    for forbidden in (
        ("get", "secrets"),
        ("list", "secrets"),
        ("create", "clusterroles"),
        ("patch", "nodes"),
        ("create", "pods", "--subresource=exec"),
    ):
        assert not can(cluster, user, namespace, *forbidden), forbidden


def test_a_worker_reaches_only_its_own_job(cluster, k8s, operator_process, namespace):
    spec = {
        "model": {"uri": "/models/unused"},
        "prompt": "a cat",
        "output": {"uri": "s3://videos/x"},
        "parallelism": {"gpusPerPod": 0},
        "worker": {"image": "unused", "command": ["python", "-c", "import time; time.sleep(600)"]},
    }
    for name in ("mine", "theirs"):
        k8s.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job_manifest(name, spec))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pod = next(iter(k8s.core.list_namespaced_pod(namespace, label_selector="chitu.dev/job-name=mine").items), None)
        if pod is not None:
            break
        time.sleep(0.3)
    assert pod is not None, "no worker pod for job mine"
    user = f"system:serviceaccount:{namespace}:{pod.spec.service_account_name}"
    resource = f"{PLURAL}.{GROUP}"
    assert rules_of(cluster, user, namespace) == {
        (resource, ("mine",), ("get",)),
        (f"{resource}/status", ("mine",), ("get", "patch")),
    }
    assert can(cluster, user, namespace, "patch", f"{resource}/mine", "--subresource=status")
    assert not can(cluster, user, namespace, "patch", f"{resource}/theirs", "--subresource=status")
    assert not can(cluster, user, namespace, "get", f"{resource}/theirs")
    assert not can(cluster, user, namespace, "list", resource)
    assert not can(cluster, user, namespace, "get", "secrets")


@pytest.mark.parametrize("role", ["edit", "view"])
def test_users_never_write_job_status(cluster, k8s, namespace, role):
    user = f"alice-{role}"
    k8s.rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )
    resource = f"{PLURAL}.{GROUP}"
    deadline = time.monotonic() + 10  # the aggregation controller fills edit/view with our rules
    while time.monotonic() < deadline and not can(cluster, user, namespace, "get", resource):
        time.sleep(0.3)
    assert can(cluster, user, namespace, "get", resource) and can(cluster, user, namespace, "list", resource)
    assert can(cluster, user, namespace, "create", resource) is (role == "edit")
    assert can(cluster, user, namespace, "delete", resource) is (role == "edit")
    assert not can(cluster, user, namespace, "patch", f"{resource}/x", "--subresource=status")
    assert not can(cluster, user, namespace, "update", f"{resource}/x", "--subresource=status")
