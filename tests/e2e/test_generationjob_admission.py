"""No confused deputy, at `kubectl apply`: the chart's ValidatingAdmissionPolicy (templates/admissionpolicy.yaml, which
the dev cluster installs) asks the apiserver's authorizer whether the REQUESTING user may use what a job names.

A user allowed to create GenerationJobs but not to read a Secret is refused a job that reads it (env, envFrom,
volumes, imagePullSecrets, output credentials), naming the field; once allowed to `get` it, the same job is accepted.
The same holds for ConfigMaps and PersistentVolumeClaims (`get`) and for a ServiceAccount the pods would run as
(`impersonate`). Users are impersonated (`kubectl --as`) from the admin kubeconfig; no operator runs. The
platform's Secret allow-list (chart value policy.secretNames) is refused at apply too, for every user.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest
import yaml

from chitu_api.names import GROUP, PLURAL, VERSION
from chitu_devcluster.paths import free_ports
from chitu_devcluster.platform import CHART, ensure_helm
from chitu_devcluster.waiting import wait_for

pytestmark = pytest.mark.e2e

USER = "alice"
SLOTS = 16  # the policy's limit on references per job (one authorizer check each)


def kubectl(cluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["kubectl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **cluster.env()},
    )


def apply_as(cluster, namespace: str, spec: dict, user: str = USER) -> subprocess.CompletedProcess:
    """`kubectl create --dry-run=server` of a job with ``spec``, as ``user``: admission runs in full, nothing is
    stored, so one name serves every case."""
    manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GenerationJob", "metadata": {"name": "probe"}}
    return kubectl(
        cluster,
        "create",
        "--dry-run=server",
        f"--as={user}",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump({**manifest, "spec": spec}),
    )


def grant(cluster, namespace: str, name: str, verb: str, resource: str, *names: str) -> None:
    """A Role allowing ``verb`` on ``resource`` (only ``names`` when given) and its binding to the user."""
    flags = [f"--resource-name={item}" for item in names]
    for command in (
        ["create", "role", name, f"--verb={verb}", f"--resource={resource}", *flags],
        ["create", "rolebinding", name, f"--role={name}", f"--user={USER}"],
    ):
        done = kubectl(cluster, "-n", namespace, *command)
        assert done.returncode == 0, done.stderr


@pytest.fixture
def user_namespace(cluster, namespace) -> str:
    """The test namespace, where the user may create GenerationJobs and nothing else."""
    grant(cluster, namespace, "create-jobs", "create", f"{PLURAL}.{GROUP}")
    return namespace


def spec_with(**worker) -> dict:
    return {"model": {"uri": "/models/wan"}, "prompt": "a cat", "worker": {"image": "w", **worker}}


def refused(done: subprocess.CompletedProcess, field: str, verb: str, resource: str, name: str) -> bool:
    expected = f"{field}: {USER} may not {verb} {resource} {name} in namespace"
    return done.returncode != 0 and "Forbidden" in done.stderr and expected in done.stderr


def test_a_job_reading_a_secret_its_creator_may_not_read_is_refused_until_allowed(cluster, user_namespace):
    spec = spec_with(env=[{"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "t"}}}])
    done = apply_as(cluster, user_namespace, spec)
    assert refused(done, "spec.worker.env[].valueFrom.secretKeyRef.name", "get", "secrets", "api-token"), done.stderr
    grant(cluster, user_namespace, "read-token", "get", "secrets", "api-token")
    done = apply_as(cluster, user_namespace, spec)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "spec, field, resource, name",
    [
        (spec_with(envFrom=[{"secretRef": {"name": "db"}}]), "spec.worker.envFrom[].secretRef.name", "secrets", "db"),
        (  # secret volumes are checked alike where the platform allows them (not in the default volume types)
            spec_with(volumes=[{"name": "settings", "configMap": {"name": "settings"}}]),
            "spec.worker.volumes[].configMap.name",
            "configmaps",
            "settings",
        ),
        (
            spec_with(imagePullSecrets=[{"name": "regcred"}]),
            "spec.worker.imagePullSecrets[].name",
            "secrets",
            "regcred",
        ),
        (
            {**spec_with(), "output": {"uri": "s3://videos/x", "credentialsSecretRef": {"name": "other-team-s3"}}},
            "spec.output.credentialsSecretRef.name",
            "secrets",
            "other-team-s3",
        ),
        (
            spec_with(envFrom=[{"configMapRef": {"name": "settings"}}]),
            "spec.worker.envFrom[].configMapRef.name",
            "configmaps",
            "settings",
        ),
        (
            {
                "model": {"uri": "/models/wan", "volume": {"persistentVolumeClaim": {"claimName": "models"}}},
                "prompt": "a",
            },
            "spec.model.volume.persistentVolumeClaim.claimName",
            "persistentvolumeclaims",
            "models",
        ),
        (spec_with(serviceAccountName="deployer"), "spec.worker.serviceAccountName", "serviceaccounts", "deployer"),
    ],
)
def test_every_kind_of_reference_is_checked(cluster, user_namespace, spec, field, resource, name):
    verb = "impersonate" if resource == "serviceaccounts" else "get"
    done = apply_as(cluster, user_namespace, spec)
    assert refused(done, field, verb, resource, name), done.stderr
    grant(cluster, user_namespace, "allowed", verb, resource, name)
    done = apply_as(cluster, user_namespace, spec)
    assert done.returncode == 0, done.stderr


def test_a_job_naming_nothing_and_the_admin_are_accepted(cluster, user_namespace):
    """What the platform fills in (the default S3 Secret) is its choice; a reference without a name names nothing
    (the operator refuses it, InvalidSpec); a cluster admin passes every check."""
    assert apply_as(cluster, user_namespace, spec_with()).returncode == 0
    nameless = spec_with(env=[{"name": "A", "valueFrom": {"secretKeyRef": {"key": "k"}}}])
    assert apply_as(cluster, user_namespace, nameless).returncode == 0
    spec = spec_with(env=[{"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "t"}}}])
    manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GenerationJob", "metadata": {"name": "p"}, "spec": spec}
    done = kubectl(
        cluster,
        "create",
        "--dry-run=server",
        "-n",
        user_namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump(manifest),
    )
    assert done.returncode == 0, done.stderr


def test_references_are_bounded_by_the_cel_budget(cluster, user_namespace):
    """Each authorizer check costs 350,000 of the apiserver's per-admission CEL budget: 16 distinct references are
    all checked, a 17th is refused with a message saying so."""
    grant(cluster, user_namespace, "read-secrets", "get", "secrets")
    env = [{"name": f"V{i}", "valueFrom": {"secretKeyRef": {"name": f"s{i}", "key": "k"}}} for i in range(SLOTS)]
    assert apply_as(cluster, user_namespace, spec_with(env=env)).returncode == 0
    env.append({"name": "EXTRA", "valueFrom": {"secretKeyRef": {"name": "s0", "key": "k"}}})
    done = apply_as(cluster, user_namespace, spec_with(env=env))
    assert done.returncode != 0 and f"may name at most {SLOTS} Secrets" in done.stderr, done.stderr


def test_the_platform_secret_allow_list_is_refused_at_apply(cluster, namespace):
    """A release serving only this namespace (no operator replica) with policy.secretNames: a job naming another
    Secret is refused for everyone, the cluster admin included, naming the field and the allowed Secrets."""
    release = f"e2e-{uuid.uuid4().hex[:6]}"
    helm = str(ensure_helm())
    values = [
        f"watchNamespaces={{{namespace}}}",
        "replicas=0",
        "rbac.createWorkerClusterRole=false",
        "rbac.createUserClusterRoles=false",
        "policy.secretNames={s3-creds}",
        f"livenessPort={free_ports(1)[0]}",
    ]
    flags = [item for value in values for item in ("--set", value)]
    env = {**os.environ, **cluster.env(), "HOME": str(cluster.state.root)}
    done = subprocess.run(
        [helm, "install", release, str(CHART), "-n", namespace, *flags], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    try:
        other = {
            "model": {"uri": "/m"},
            "prompt": "a",
            "output": {"uri": "s3://videos/x", "credentialsSecretRef": {"name": "other"}},
        }
        expected = (
            "spec.output.credentialsSecretRef.name: Secret other is not one the platform lets jobs use "
            "(allowed: s3-creds)"
        )
        manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GenerationJob", "metadata": {"name": "p"}}

        def refused() -> bool:  # the apiserver loads a new policy within a few seconds
            done = kubectl(
                cluster,
                "create",
                "--dry-run=server",
                "-n",
                namespace,
                "-f",
                "-",
                stdin=yaml.safe_dump({**manifest, "spec": other}),
            )
            return done.returncode != 0 and expected in done.stderr

        wait_for(refused, "the allow-list policy to refuse Secret other", 60, interval=1)
        allowed = {**other, "output": {"uri": "s3://videos/x", "credentialsSecretRef": {"name": "s3-creds"}}}
        done = kubectl(
            cluster,
            "create",
            "--dry-run=server",
            "-n",
            namespace,
            "-f",
            "-",
            stdin=yaml.safe_dump({**manifest, "spec": allowed}),
        )
        assert done.returncode == 0, done.stderr
    finally:
        subprocess.run([helm, "uninstall", release, "-n", namespace, "--wait"], env=env, capture_output=True)


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"model": {"uri": "/m", "volume": {"hostPath": {"path": "/"}}}, "prompt": "a"}, "spec.model.volume"),
        (
            spec_with(volumes=[{"name": "a", "emptyDir": {}}, {"name": "b", "hostPath": {"path": "/"}}]),
            "spec.worker.volumes[]",
        ),
    ],
)
def test_volume_types_the_platform_does_not_allow_are_refused_at_apply(cluster, namespace, spec, field):
    """The chart's policy (values.yaml policy.volumeTypes, allowHostPath; default: the operator's built-in list,
    files/pod-policy-defaults.yaml) refuses a hostPath volume for every user, the cluster admin included."""
    manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GenerationJob", "metadata": {"name": "p"}, "spec": spec}
    done = kubectl(cluster, "create", "--dry-run=server", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))
    assert done.returncode != 0, done.stdout
    assert f"{field}: hostPath volumes are not allowed here (allowed: configMap, csi, emptyDir" in done.stderr
    allowed = {"model": {"uri": "/m", "volume": {"persistentVolumeClaim": {"claimName": "models"}}}, "prompt": "a"}
    done = kubectl(
        cluster,
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump({**manifest, "spec": allowed}),
    )
    assert done.returncode == 0, done.stderr
