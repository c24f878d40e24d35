"""The dev cluster itself: real apiserver, scheduler, controller-manager, S3, and the node agent's contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import botocore.exceptions
import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from chitu_devcluster.cluster import DevCluster
from chitu_devcluster.containerenv import pod_ip
from chitu_devcluster.identities import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT
from chitu_devcluster.nodeagent import GPU_RESOURCE, NODE_NAME
from chitu_devcluster.paths import VENV_BIN
from chitu_devcluster.podrunner import SIMULATE_WAITING_ANNOTATION
from chitu_devcluster.waiting import wait_for

TIMEOUT = 30


def python_pod(name: str, script: str, *, args: list[str] | None = None, **container) -> dict:
    """A pod whose one container runs ``python -c script args...`` (the image is ignored by the node agent)."""
    spec = {
        "name": "main",
        "image": "unused",
        "command": ["python", "-c", textwrap.dedent(script)],
        "args": args or [],
        **container,
    }
    return {"metadata": {"name": name}, "spec": {"restartPolicy": "Never", "containers": [spec]}}


def wait_pod(k8s, namespace: str, name: str, predicate, what: str, timeout: float = TIMEOUT):
    """Poll the pod until ``predicate(pod)`` holds; return the pod."""
    last = {}

    def check():
        last["pod"] = pod = k8s.core.read_namespaced_pod(name, namespace)
        return pod if predicate(pod) else None

    return wait_for(
        check, f"pod {namespace}/{name} {what}", timeout, detail=lambda: str(last.get("pod") and last["pod"].status)
    )


def phase_is(*phases: str):
    return lambda pod: pod.status.phase in phases


def wait_pod_gone(k8s, namespace: str, name: str, timeout: float = TIMEOUT) -> None:
    def gone() -> bool:
        try:
            k8s.core.read_namespaced_pod(name, namespace)
            return False
        except ApiException as err:
            return err.status == 404

    wait_for(gone, f"pod {namespace}/{name} to be deleted", timeout)


def process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_control_plane_and_node_are_ready(cluster: DevCluster, k8s):
    assert cluster.readyz() == 200
    node = k8s.core.read_node(NODE_NAME)
    assert node.status.allocatable[GPU_RESOURCE] == "8"
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    assert not node.spec.taints
    lease = client.CoordinationV1Api(k8s.core.api_client).read_namespaced_lease(NODE_NAME, "kube-node-lease")
    assert lease.spec.holder_identity == NODE_NAME


@pytest.mark.parametrize(
    "run",
    [[str(VENV_BIN / "chitu-dev-cluster")], [sys.executable, "-m", "chitu_devcluster"]],
    ids=["console-script", "python-m"],
)
def test_cli_env_and_status(cluster: DevCluster, run: list[str]):
    env = subprocess.run(
        [*run, "env", "--state-dir", str(cluster.state.root)], capture_output=True, text=True, check=True
    ).stdout
    assert f"export KUBECONFIG={cluster.state.kubeconfig}" in env
    assert f"export CHITU_S3_ENDPOINT={cluster.s3.endpoint}" in env
    status = subprocess.run([*run, "status", "--state-dir", str(cluster.state.root)], capture_output=True, text=True)
    assert status.returncode == 0, status.stdout + status.stderr


def test_pod_runs_and_succeeds(cluster, k8s, namespace, tmp_path):
    marker = tmp_path / "marker"
    k8s.core.create_namespaced_pod(
        namespace,
        python_pod(
            "ok",
            """
        import os, sys
        open(sys.argv[1], "w").write(os.getcwd())
    """,
            args=[str(marker)],
        ),
    )
    pod = wait_pod(k8s, namespace, "ok", phase_is("Succeeded"), "to succeed")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert pod.spec.node_name == NODE_NAME  # bound by the real scheduler
    assert pod.status.pod_ip == pod_ip() and pod.status.start_time  # an address Endpoints accept
    assert Path(marker.read_text()).parts[-4:-1] == (namespace, "ok", pod.metadata.uid)  # per-pod work dir


def test_failing_pod_reports_exit_code_and_termination_message(k8s, namespace):
    k8s.core.create_namespaced_pod(
        namespace,
        python_pod(
            "fails",
            """
        import os, sys
        open(os.environ["CHITU_TERMINATION_LOG"], "w").write("model not found")
        sys.exit(3)
    """,
        ),
    )
    k8s.core.create_namespaced_pod(
        namespace,
        python_pod(
            "fails-logs",
            """
        import sys
        print("Traceback: boom", file=sys.stderr)
        sys.exit(2)
    """,
            terminationMessagePolicy="FallbackToLogsOnError",
        ),
    )
    for name, code, message in (("fails", 3, "model not found"), ("fails-logs", 2, "Traceback: boom")):
        pod = wait_pod(k8s, namespace, name, phase_is("Failed"), "to fail")
        terminated = pod.status.container_statuses[0].state.terminated
        assert (terminated.exit_code, terminated.reason) == (code, "Error")
        assert message in terminated.message


def test_env_from_secret_config_map_and_field_refs(cluster, k8s, namespace):
    k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"key": "s3cr3t"}})
    k8s.core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}, "data": {"a": "1", "b": "two"}})
    pod = python_pod(
        "env",
        """
        import json, os, sys
        print(json.dumps({"env": dict(os.environ), "argv": sys.argv[1:]}))
    """,
        args=["$(POD_NAME)", "$$(POD_NAME)"],
        env=[
            {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "b"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "ROLE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['role']"}}},
            {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "GREETING", "value": "hello $(POD_NAME) from $(CM_a)"},
            {"name": "MASTER_ADDR", "value": "job-worker-0.job-workers.ns.svc"},
            {"name": "DB_URL", "value": "postgres://db.data.svc.cluster.local:5432/x"},
            {"name": "EXTERNAL", "value": "http://seaweedfs.storage:8333"},
            {"name": "MISSING_OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        ],
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CM_"}],
    )
    pod["metadata"].update(labels={"role": "worker"}, annotations={"note": "hi"})
    created = k8s.core.create_namespaced_pod(namespace, pod)
    wait_pod(k8s, namespace, "env", phase_is("Succeeded"), "to succeed")
    report = json.loads(cluster.pod_log(namespace, "env"))
    env = report["env"]
    assert report["argv"] == ["env", "$(POD_NAME)"]
    assert {
        k: env[k]
        for k in (
            "SECRET",
            "B",
            "CM_a",
            "CM_b",
            "POD_NAME",
            "POD_NAMESPACE",
            "ROLE",
            "NOTE",
            "NODE",
            "POD_IP",
            "GREETING",
        )
    } == {
        "SECRET": "s3cr3t",
        "B": "two",
        "CM_a": "1",
        "CM_b": "two",
        "POD_NAME": "env",
        "POD_NAMESPACE": namespace,
        "ROLE": "worker",
        "NOTE": "hi",
        "NODE": NODE_NAME,
        "POD_IP": pod_ip(),
        "GREETING": "hello env from 1",
    }
    assert env["POD_UID"] == created.metadata.uid
    assert env["MASTER_ADDR"] == "127.0.0.1"  # the DNS stand-in
    assert env["DB_URL"] == "postgres://127.0.0.1:5432/x"
    assert env["EXTERNAL"] == "http://seaweedfs.storage:8333"  # not a cluster name: untouched
    assert "MISSING_OPTIONAL" not in env
    assert env["GLOO_SOCKET_IFNAME"] == "lo"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert "AWS_SECRET_ACCESS_KEY" not in env  # the developer's credentials never leak into pods


def test_deleting_a_running_pod_kills_its_process(k8s, namespace, tmp_path):
    pid_file = tmp_path / "pid"
    k8s.core.create_namespaced_pod(
        namespace,
        python_pod(
            "sleeper",
            """
        import os, signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # forces the SIGKILL after the grace period
        open(sys.argv[1], "w").write(str(os.getpid()))
        time.sleep(600)
    """,
            args=[str(pid_file)],
        ),
    )
    wait_pod(k8s, namespace, "sleeper", phase_is("Running"), "to run")
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), "the pid file", TIMEOUT))
    assert process_alive(pid)
    k8s.core.delete_namespaced_pod("sleeper", namespace, grace_period_seconds=1)
    wait_pod_gone(k8s, namespace, "sleeper")
    assert not process_alive(pid)


def test_simulated_image_pull_backoff_stays_waiting(cluster, k8s, namespace):
    pod = python_pod("never", "raise SystemExit('must not run')")
    pod["metadata"]["annotations"] = {SIMULATE_WAITING_ANNOTATION: "ImagePullBackOff"}
    k8s.core.create_namespaced_pod(namespace, pod)

    def waiting(pod) -> bool:
        statuses = pod.status.container_statuses or []
        return bool(statuses and statuses[0].state.waiting and statuses[0].state.waiting.reason == "ImagePullBackOff")

    pod = wait_pod(k8s, namespace, "never", waiting, "to wait in ImagePullBackOff")
    assert pod.status.phase == "Pending"
    assert "unused" in pod.status.container_statuses[0].state.waiting.message
    assert cluster.pod_log(namespace, "never") == ""


def test_scheduler_filters_on_gpu_capacity(k8s, namespace):
    def gpu_pod(name: str, gpus: int) -> dict:
        return python_pod(name, "pass", resources={"limits": {GPU_RESOURCE: str(gpus)}})

    k8s.core.create_namespaced_pod(namespace, gpu_pod("too-many", 9))
    k8s.core.create_namespaced_pod(namespace, gpu_pod("fits", 1))
    wait_pod(k8s, namespace, "fits", phase_is("Succeeded"), "to succeed")

    def unschedulable(pod) -> bool:
        return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in pod.status.conditions or [])

    pod = wait_pod(k8s, namespace, "too-many", unschedulable, "to be unschedulable")
    assert f"Insufficient {GPU_RESOURCE}" in next(c.message for c in pod.status.conditions if c.type == "PodScheduled")
    assert pod.spec.node_name is None


def test_s3_enforces_credentials(cluster, s3):
    s3.client.put_object(Bucket=s3.name, Key="a.txt", Body=b"data")
    assert s3.client.get_object(Bucket=s3.name, Key="a.txt")["Body"].read() == b"data"
    intruder = cluster.s3.client(secret_access_key="wrong-secret")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        intruder.get_object(Bucket=s3.name, Key="a.txt")
    assert err.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_garbage_collector_deletes_owned_pods(k8s, namespace):
    owner = k8s.core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    pod = python_pod("owned", "import time; time.sleep(600)")
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    ]
    k8s.core.create_namespaced_pod(namespace, pod)
    wait_pod(k8s, namespace, "owned", phase_is("Running"), "to run")
    k8s.core.delete_namespaced_config_map("owner", namespace)
    wait_pod_gone(k8s, namespace, "owned", timeout=60)


def test_pod_kubeconfig_authenticates_as_its_service_account(cluster, k8s, namespace):
    k8s.core.create_namespaced_service_account(namespace, {"metadata": {"name": "probe"}})
    k8s.rbac.create_namespaced_role(
        namespace,
        {"metadata": {"name": "read-pods"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
    )
    k8s.rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "probe-reads-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-pods"},
            "subjects": [{"kind": "ServiceAccount", "name": "probe", "namespace": namespace}],
        },
    )
    pod = python_pod(
        "whoami",
        """
        import json, os
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
        api = config.new_client_from_config(os.environ["KUBECONFIG"])
        review = client.AuthenticationV1Api(api).create_self_subject_review({"spec": {}})
        core = client.CoreV1Api(api)
        try:
            core.list_namespaced_secret(os.environ["NS"])
            secrets = 200
        except ApiException as err:
            secrets = err.status
        own = core.read_namespaced_pod("whoami", os.environ["NS"]).metadata.name
        print(json.dumps({"user": review.status.user_info.username, "secrets": secrets, "own": own}))
    """,
        env=[{"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
    )
    pod["spec"]["serviceAccountName"] = "probe"
    k8s.core.create_namespaced_pod(namespace, pod)
    done = wait_pod(k8s, namespace, "whoami", phase_is("Succeeded", "Failed"), "to finish")
    log = cluster.pod_log(namespace, "whoami")
    assert done.status.phase == "Succeeded", log
    assert json.loads(log.splitlines()[-1]) == {
        "user": f"system:serviceaccount:{namespace}:probe",
        "secrets": 403,
        "own": "whoami",
    }


def test_operator_kubeconfig_has_the_operator_role(cluster):
    api = config.new_client_from_config(str(cluster.state.operator_kubeconfig))
    review = client.AuthenticationV1Api(api).create_self_subject_review({"spec": {}})
    assert review.status.user_info.username == f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
    client.CoreV1Api(api).list_pod_for_all_namespaces()
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(api).list_secret_for_all_namespaces()
    assert err.value.status == 403
