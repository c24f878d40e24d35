"""The Helm chart on the hermetic cluster, with helm built from its Go module (scripts/build-helm.sh).

lint; values refused by values.schema.json with a message naming the value; `helm template` at the apiserver's
real version applied as a server-side dry run; install -> a job Succeeded -> upgrade with changed values (the
operator restarts with the new configuration) -> uninstall leaving no chart resources and a working cluster; the
documented CRD upgrade path (`helm show crds | kubectl apply --server-side`, then `helm upgrade`); and the
namespace-scoped mode (watchNamespaces): Roles instead of a ClusterRole, checked with `kubectl auth can-i --list`,
a job in the watched namespace Succeeded and one in another namespace left alone.

Each release serves only its test's namespace (watchNamespaces, so the namespace-scoped mode) and leaves the dev
cluster's shared ClusterRole chitu-worker and user roles alone (rbac.createWorkerClusterRole,
rbac.createUserClusterRoles = false: fixed names the session's release owns), so it can share the session's cluster.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kubernetes import client

from chitu_api.names import GROUP, PLURAL, VERSION
from chitu_devcluster.paths import VENV_BIN, free_ports
from chitu_devcluster.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "chitu"
CRD_NAME = f"{PLURAL}.{GROUP}"
INSTANCE_LABEL = "app.kubernetes.io/instance"
TIMEOUT = 300


@pytest.fixture(scope="session")
def helm() -> str:
    """The helm binary, built once and cached by version (minutes cold, nothing when cached)."""
    done = subprocess.run(["bash", str(REPO / "scripts" / "build-helm.sh")], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def kube(cluster) -> SimpleNamespace:
    """Admin clients for what the chart creates (Deployments, RBAC, the CRD) besides jobs and pods."""
    api = cluster.api_client()
    return SimpleNamespace(
        core=client.CoreV1Api(api),
        apps=client.AppsV1Api(api),
        rbac=client.RbacAuthorizationV1Api(api),
        custom=client.CustomObjectsApi(api),
        extensions=client.ApiextensionsV1Api(api),
        admission=client.AdmissionregistrationV1Api(api),
    )


def run(cluster, *command: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        "KUBECONFIG": str(cluster.state.kubeconfig),
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "HOME": str(cluster.state.root),
    }  # helm keeps its cache and config under HOME
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env)
    if check:
        assert done.returncode == 0, f"{' '.join(command)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def release_values(namespace: str, bucket: str, cluster) -> list[str]:
    (port,) = free_ports(1)  # the operator pod is a local process: its liveness port must be free here
    return [
        "--namespace",
        namespace,
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--set",
        "rbac.createWorkerClusterRole=false",
        "--set",
        "rbac.createUserClusterRoles=false",
        "--set",
        f"livenessPort={port}",
        "--set",
        f"jobDefaults.output.uri=s3://{bucket}/runs",
        "--set",
        f"jobDefaults.output.endpoint={cluster.s3.endpoint}",
        "--set",
        f"jobDefaults.output.region={cluster.s3.region}",
    ]


def chart_objects(kube, namespace: str, release: str) -> list[str]:
    """Every object of the release that the chart creates (what `helm uninstall` must remove)."""
    selector = f"{INSTANCE_LABEL}={release}"
    found = [
        f"{kind} {item.metadata.name}"
        for kind, items in (
            ("Deployment", kube.apps.list_namespaced_deployment(namespace, label_selector=selector).items),
            ("Pod", kube.core.list_namespaced_pod(namespace, label_selector=selector).items),
            ("ConfigMap", kube.core.list_namespaced_config_map(namespace, label_selector=selector).items),
            ("ServiceAccount", kube.core.list_namespaced_service_account(namespace, label_selector=selector).items),
            ("ClusterRole", kube.rbac.list_cluster_role(label_selector=selector).items),
            ("ClusterRoleBinding", kube.rbac.list_cluster_role_binding(label_selector=selector).items),
            ("Role", kube.rbac.list_role_for_all_namespaces(label_selector=selector).items),
            ("RoleBinding", kube.rbac.list_role_binding_for_all_namespaces(label_selector=selector).items),
            (
                "ValidatingAdmissionPolicy",
                kube.admission.list_validating_admission_policy(label_selector=selector).items,
            ),
            (
                "ValidatingAdmissionPolicyBinding",
                kube.admission.list_validating_admission_policy_binding(label_selector=selector).items,
            ),
        )
        for item in items
    ]
    return found


def operator_pod(kube, namespace: str, release: str) -> dict | None:
    """The release's running operator pod (None while there is none)."""
    pods = kube.core.list_namespaced_pod(namespace, label_selector=f"{INSTANCE_LABEL}={release}").items
    running = [pod for pod in pods if pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None]
    return running[0] if len(running) == 1 else None


def test_chart_lints_and_refuses_bad_values_naming_them(helm):
    done = subprocess.run([helm, "lint", str(CHART), "--strict"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for flag, message in (
        ("logFormat=xml", "at '/logFormat': value must be one of 'json', 'plain'"),
        ("livenessPort=http", "at '/livenessPort': got string, want integer"),
        ("jobDefaults.output.uri=http://x", "at '/jobDefaults/output/uri'"),
        ("jobDefalts.worker.image=x", "additional properties 'jobDefalts' not allowed"),
        ("watchNamespaces={Bad_NS}", "at '/watchNamespaces/0'"),
        ("policy.secretNames={Bad_Name}", "at '/policy/secretNames/0'"),
        ("admissionPolicy.validationActions={Block}", "at '/admissionPolicy/validationActions/0'"),
    ):
        done = subprocess.run([helm, "template", "x", str(CHART), "--set", flag], capture_output=True, text=True)
        assert done.returncode != 0 and message in done.stderr, (flag, done.stderr)


def test_template_at_the_server_version_passes_a_server_side_dry_run(cluster, helm, namespace):
    server = json.loads(run(cluster, "kubectl", "version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    rendered = run(
        cluster,
        helm,
        "template",
        "chitu",
        str(CHART),
        "--namespace",
        namespace,
        "--include-crds",
        "--kube-version",
        server,
        "--set",
        "rbac.createWorkerClusterRole=false",
        "--set",
        "rbac.createUserClusterRoles=false",
    ).stdout
    kinds = [doc["kind"] for doc in yaml.safe_load_all(rendered) if doc]
    assert {
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
    } <= set(kinds), kinds
    applied = run(
        cluster,
        "kubectl",
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=e2e",
        "--force-conflicts",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=rendered,
    ).stdout
    assert applied.count("serverside-applied (server dry run)") == len(kinds), applied


def test_install_run_upgrade_uninstall(cluster, helm, kube, namespace, s3, tiny_model_dir):
    release = f"e2e-{uuid.uuid4().hex[:6]}"
    run(
        cluster,
        helm,
        "install",
        release,
        str(CHART),
        *release_values(namespace, s3.name, cluster),
        "--wait",
        "--timeout",
        "120s",
    )
    first = wait_for(lambda: operator_pod(kube, namespace, release), "the chart's operator pod", 60)
    config = kube.core.read_namespaced_config_map(f"{release}-chitu-operator-config", namespace)
    assert yaml.safe_load(config.data["config.yaml"])["output"]["uri"] == f"s3://{s3.name}/runs"

    job = submit_tiny_job(cluster, kube, namespace, tiny_model_dir, "before-upgrade")
    assert wait_phase(kube, namespace, job) == "Succeeded"

    run(
        cluster,
        helm,
        "upgrade",
        release,
        str(CHART),
        *release_values(namespace, s3.name, cluster),
        "--set",
        f"jobDefaults.output.uri=s3://{s3.name}/upgraded",
        "--set",
        "logFormat=plain",
        "--wait",
        "--timeout",
        "120s",
    )
    second = wait_for(
        lambda: (pod := operator_pod(kube, namespace, release)) and pod.metadata.uid != first.metadata.uid and pod,
        "a new operator pod after the upgrade",
        60,
    )
    args = second.spec.containers[0].args
    assert "--log-format=plain" in args
    config = kube.core.read_namespaced_config_map(f"{release}-chitu-operator-config", namespace)
    assert yaml.safe_load(config.data["config.yaml"])["output"]["uri"] == f"s3://{s3.name}/upgraded"
    job = submit_tiny_job(cluster, kube, namespace, tiny_model_dir, "after-upgrade")
    assert wait_phase(kube, namespace, job) == "Succeeded"

    run(cluster, helm, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
    wait_for(
        lambda: not chart_objects(kube, namespace, release),
        "no chart objects left",
        60,
        detail=lambda: chart_objects(kube, namespace, release),
    )
    assert cluster.readyz() == 200
    assert kube.extensions.read_custom_resource_definition(CRD_NAME).metadata.name == CRD_NAME  # jobs survive
    assert (
        kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)["status"]["phase"]
        == "Succeeded"
    )


def test_crd_upgrade_path_of_the_notes(cluster, helm, kube, namespace, tmp_path):
    """A chart version whose CRD changed: the documented `helm show crds | kubectl apply --server-side` before
    `helm upgrade` puts the new CRD on the server (helm itself never upgrades crds/)."""
    release = f"e2e-{uuid.uuid4().hex[:6]}"
    values = [
        "--namespace",
        namespace,
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--set",
        "rbac.createWorkerClusterRole=false",
        "--set",
        "rbac.createUserClusterRoles=false",
        "--set",
        f"livenessPort={free_ports(1)[0]}",
    ]
    original = (CHART / "crds" / "generationjob.yaml").read_text()
    newer = tmp_path / "chitu"
    shutil.copytree(CHART, newer)
    crd = yaml.safe_load(original)
    column = {"name": "UpgradeCheck", "type": "string", "jsonPath": ".spec.model.uri", "priority": 1}
    crd["spec"]["versions"][0]["additionalPrinterColumns"].append(column)
    (newer / "crds" / "generationjob.yaml").write_text(yaml.safe_dump(crd, sort_keys=False))
    try:
        run(cluster, helm, "install", release, str(CHART), *values)
        crds = run(cluster, helm, "show", "crds", str(newer)).stdout
        run(cluster, "kubectl", "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=crds)
        run(cluster, helm, "upgrade", release, str(newer), *values)
        served = kube.extensions.read_custom_resource_definition(CRD_NAME).spec.versions[0]
        assert "UpgradeCheck" in [c.name for c in served.additional_printer_columns]
    finally:
        run(cluster, helm, "uninstall", release, "--namespace", namespace, check=False)
        run(cluster, "kubectl", "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=original)
    served = kube.extensions.read_custom_resource_definition(CRD_NAME).spec.versions[0]
    assert "UpgradeCheck" not in [c.name for c in served.additional_printer_columns]


def rendered(helm: str, *flags: str) -> list[dict]:
    done = subprocess.run([helm, "template", "x", str(CHART), "-n", "rel", *flags], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_rendered_scope_admission_policy_and_pod_policy(helm):
    """Cluster-scoped by default; watchNamespaces -> Roles in each (and the Lease's in the release namespace), a
    ClusterRole of cluster-scoped reads only, --namespace per namespace, the admission policy bound to them; the
    Secret allow-list and the volume types reach the operator's configuration and the policy;
    admissionPolicy.enabled=false removes it."""
    default = {(doc["kind"], doc["metadata"]["name"]) for doc in rendered(helm)}
    assert {("ClusterRole", "x-chitu-operator"), ("ValidatingAdmissionPolicy", "x-chitu-job-references")} <= default
    assert not any(kind in ("Role", "RoleBinding") for kind, _ in default)

    docs = rendered(helm, "--set", "watchNamespaces={a,b}", "--set", "policy.secretNames={s3-creds}")
    roles = {(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"]) for doc in docs}
    assert {("Role", ns, "x-chitu-operator") for ns in ("a", "b")} <= roles
    assert ("Role", "rel", "x-chitu-operator-leader") in roles
    cluster_roles = [doc for doc in docs if doc["kind"] == "ClusterRole" and "operator" in doc["metadata"]["name"]]
    assert [role["metadata"]["name"] for role in cluster_roles] == ["x-chitu-operator-cluster-reads"]
    assert all(
        rule["verbs"] == ["get", "list", "watch"] or rule["verbs"] == ["get"] for rule in cluster_roles[0]["rules"]
    )
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=a" in args and "--namespace=b" in args and "--all-namespaces" not in args
    binding = next(doc for doc in docs if doc["kind"] == "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"] == ["a", "b"]
    config = yaml.safe_load(next(doc for doc in docs if doc["kind"] == "ConfigMap")["data"]["config.yaml"])
    assert config["policy"] == {"secretNames": ["s3-creds"]}
    policy = next(doc for doc in docs if doc["kind"] == "ValidatingAdmissionPolicy")
    assert any('["s3-creds"]' in check["expression"] for check in policy["spec"]["validations"])

    host_path = rendered(helm, "--set", "policy.allowHostPath=true", "--set", "policy.volumeTypes={emptyDir}")
    policy = next(doc for doc in host_path if doc["kind"] == "ValidatingAdmissionPolicy")
    assert any('["emptyDir","hostPath"]' in check["expression"] for check in policy["spec"]["validations"])

    off = {doc["kind"] for doc in rendered(helm, "--set", "admissionPolicy.enabled=false")}
    assert not off & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def can_i_list(cluster, user: str, namespace: str) -> set[str]:
    """The resources `kubectl auth can-i --list` shows for ``user`` in ``namespace`` (any verb)."""
    done = run(cluster, "kubectl", "auth", "can-i", "--list", f"--as={user}", "-n", namespace)
    return {line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip() and not line.startswith(" ")}


#: What any authenticated identity may do (Kubernetes' bootstrap roles): discovery and self reviews.
EVERYONE = {
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
    "selfsubjectreviews.authentication.k8s.io",
    "clustertrustbundles.certificates.k8s.io",
}
CLUSTER_READS = {
    "customresourcedefinitions.apiextensions.k8s.io",
    "priorityclasses.scheduling.k8s.io",
    "resourceflavors.kueue.x-k8s.io",
    "workloadpriorityclasses.kueue.x-k8s.io",
}


def test_namespace_scoped_mode(cluster, helm, kube, namespace, s3, tiny_model_dir):
    """watchNamespaces=[namespace]: the operator holds Roles there and only cluster-scoped reads elsewhere (can-i
    --list), runs a job of its namespace to Succeeded, and never touches a job of another namespace."""
    other = f"e2e-other-{uuid.uuid4().hex[:6]}"
    kube.core.create_namespace({"metadata": {"name": other}})
    release = f"e2e-{uuid.uuid4().hex[:6]}"
    try:
        run(cluster, helm, "install", release, str(CHART), *release_values(namespace, s3.name, cluster), "--wait")
        operator = f"system:serviceaccount:{namespace}:{release}-chitu-operator"
        assert not [
            b for b in kube.rbac.list_cluster_role_binding().items if b.metadata.name == f"{release}-chitu-operator"
        ]
        elsewhere = can_i_list(cluster, operator, other) - EVERYONE
        assert elsewhere == CLUSTER_READS, elsewhere
        here = can_i_list(cluster, operator, namespace) - EVERYONE - CLUSTER_READS
        assert {"pods", "services", "serviceaccounts", "generationjobs.chitu.dev", "leases.coordination.k8s.io"} <= here
        assert "namespaces" not in here and "secrets" not in here

        submit_tiny_job(cluster, kube, other, tiny_model_dir, "elsewhere")
        job = submit_tiny_job(cluster, kube, namespace, tiny_model_dir, "watched")
        assert wait_phase(kube, namespace, job) == "Succeeded"
        ignored = kube.custom.get_namespaced_custom_object(GROUP, VERSION, other, PLURAL, "elsewhere")
        assert "status" not in ignored and not kube.core.list_namespaced_pod(other).items
    finally:
        run(cluster, helm, "uninstall", release, "--namespace", namespace, "--wait", check=False)
        kube.core.delete_namespace(other, propagation_policy="Background")


def submit_tiny_job(cluster, kube, namespace: str, model: Path, name: str) -> str:
    """A one-prompt job holding only prompt, model and size: image, output and credentials are the chart's."""
    credentials = cluster.s3
    if not any(s.metadata.name == "s3-creds" for s in kube.core.list_namespaced_secret(namespace).items):
        kube.core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "s3-creds"},
                "stringData": {
                    "AWS_ACCESS_KEY_ID": credentials.access_key_id,
                    "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key,
                },
            },
        )
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GenerationJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": str(model)},
            "prompt": "A cat walking on grass",
            "generation": {"steps": 2, "height": 32, "width": 32, "frames": 1, "fps": 8},
            "parallelism": {"gpusPerPod": 0},
        },
    }
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return name


def wait_phase(kube, namespace: str, name: str) -> str:
    def finished():
        job = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        phase = job.get("status", {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    return wait_for(finished, f"{name} to finish", TIMEOUT, interval=0.5)
