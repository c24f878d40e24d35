"""The operator as a platform runs it: two replicas with Lease leader election, Prometheus /metrics during a run,
worker pods a `restricted` namespace admits (with /dev/shm on GPU pods), and pending causes named within seconds.

Worker pods run small scripts gated by files (as in test_generationjob_lifecycle.py), so a test decides when a
gang fails or finishes.
"""

from __future__ import annotations

import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from chitu_api.names import GROUP, PLURAL, VERSION
from chitu_devcluster.paths import free_ports
from chitu_devcluster.waiting import wait_for

TIMEOUT = 60
# Rank 0 reports one more prompt done per gate file (gate-1, gate-2), as the worker's rank 0 does; attempt 0
# fails once its first gate opened, so the restart counter moves too.
PROGRESS_THEN_FAIL_ONCE = """
    import json, os, pathlib, sys, time, subprocess
    gates, attempt = pathlib.Path(os.environ["GATES"]), os.environ["CHITU_RESTART_ATTEMPT"]
    def wait(name):
        while not (gates / name).exists():
            time.sleep(0.1)
    def report(done):
        if os.environ["NODE_RANK"] == "0":
            patch = {"status": {"progress": {"promptsDone": done}}}
            subprocess.run(["kubectl", "patch", "generationjob", os.environ["CHITU_JOB_NAME"], "--subresource=status",
                            "--type=merge", "-p", json.dumps(patch)], check=True)
    wait("gate-1")
    report(1)
    if attempt == "0":
        sys.exit(3)
    wait("gate-2")
    report(2)
"""
WAIT_FOR_GATE = """
    import os, time
    while not os.path.exists(os.environ["GATE"]):
        time.sleep(0.1)
"""


def manifest(name: str, script: str, env: dict[str, str], **spec) -> dict:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GenerationJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "/models/unused"},
            "prompts": ["a cat", "a dog"],
            "parallelism": {"cfg": 2, "gpusPerPod": 1},
            "output": {"uri": "s3://videos/e2e"},
            "worker": {
                "image": "unused",
                "command": ["python", "-c", textwrap.dedent(script)],
                "env": [{"name": k, "value": v} for k, v in env.items()],
            },
        },
    }
    for section, values in spec.items():
        body["spec"].setdefault(section, {}).update(values)
    return body


def get(k8s, namespace: str, name: str) -> dict:
    return k8s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def phase(k8s, namespace: str, name: str) -> str | None:
    return (get(k8s, namespace, name).get("status") or {}).get("phase")


def condition(k8s, namespace: str, name: str, kind: str) -> dict:
    status = get(k8s, namespace, name).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def worker_pods(k8s, namespace: str, name: str) -> list:
    return k8s.core.list_namespaced_pod(namespace, label_selector=f"chitu.dev/job-name={name}").items


@pytest.fixture
def metrics_port(cluster) -> Iterator[int]:
    (port,) = free_ports(1)
    cluster.start_operator(extra_args=["--metrics-port", str(port)])
    try:
        yield port
    finally:
        cluster.stop_operator()


def scrape(port: int) -> dict[str, float]:
    """The samples at /metrics; empty while the operator process is still starting."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except urllib.error.URLError:
        return {}
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def test_metrics_move_during_a_run(k8s, namespace, metrics_port, tmp_path):
    k8s.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest("counted", PROGRESS_THEN_FAIL_ONCE, {"GATES": str(tmp_path)})
    )
    wait_for(lambda: phase(k8s, namespace, "counted") == "Running", "Running", TIMEOUT, interval=0.2)
    before = wait_for(lambda: scrape(metrics_port), "/metrics", TIMEOUT)
    assert before['chitu_generationjobs{phase="Running"}'] >= 1
    (tmp_path / "gate-1").touch()  # attempt 0: one prompt reported, then rank 0 fails -> gang restart
    wait_for(lambda: (get(k8s, namespace, "counted").get("status") or {}).get("restarts") == 1, "a restart", TIMEOUT)
    wait_for(lambda: phase(k8s, namespace, "counted") == "Running", "Running again", TIMEOUT, interval=0.2)
    (tmp_path / "gate-2").touch()
    wait_for(lambda: phase(k8s, namespace, "counted") == "Succeeded", "Succeeded", TIMEOUT, interval=0.2)

    def run_counted() -> dict[str, float] | None:
        """/metrics once both prompts are counted and the job counts as Succeeded. The phase gauge follows the
        operator's job watch, so it may trail the API (and the prompts counter) by an event."""
        samples = scrape(metrics_port)
        done = samples.get("chitu_prompts_completed_total", 0) >= 2
        return samples if done and samples.get('chitu_generationjobs{phase="Succeeded"}', 0) >= 1 else None

    after = wait_for(run_counted, "the prompts counter and the Succeeded gauge", 10)
    assert (
        after['chitu_gang_restarts_total{reason="RankFailed"}']
        == before.get('chitu_gang_restarts_total{reason="RankFailed"}', 0) + 1
    )
    assert after["chitu_gpu_seconds_total"] > before.get("chitu_gpu_seconds_total", 0)
    assert after["chitu_reconcile_duration_seconds_count"] > before["chitu_reconcile_duration_seconds_count"]
    assert after["chitu_operator_leader"] == 1


def test_leader_killed_mid_job_the_other_replica_finishes_it(cluster, k8s, namespace, tmp_path):
    ports = free_ports(2)
    for replica, port in zip(("operator", "operator-2"), ports, strict=True):
        cluster.start_operator(name=replica, extra_args=["--leader-elect", "--metrics-port", str(port)])
    try:

        def one_leader() -> dict[str, float] | None:
            seen = {
                r: scrape(p).get("chitu_operator_leader")
                for r, p in zip(("operator", "operator-2"), ports, strict=True)
            }
            return seen if None not in seen.values() and sorted(seen.values()) == [0, 1] else None

        leaders = wait_for(one_leader, "exactly one leader", TIMEOUT)
        leader = next(name for name, value in leaders.items() if value == 1)
        follower = next(name for name in leaders if name != leader)
        gate = tmp_path / "gate"
        k8s.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, manifest("ha", WAIT_FOR_GATE, {"GATE": str(gate)})
        )
        wait_for(lambda: phase(k8s, namespace, "ha") == "Running", "Running", TIMEOUT, interval=0.2)
        uids = {p.metadata.name: p.metadata.uid for p in worker_pods(k8s, namespace, "ha")}
        cluster.procs.kill(leader)  # SIGKILL: no goodbye, the Lease simply stops being renewed
        follower_port = ports[0] if follower == "operator" else ports[1]
        wait_for(lambda: scrape(follower_port).get("chitu_operator_leader") == 1, "the follower to lead", TIMEOUT)
        gate.touch()
        wait_for(lambda: phase(k8s, namespace, "ha") == "Succeeded", "Succeeded", TIMEOUT, interval=0.2)
        assert {p.metadata.name: p.metadata.uid for p in worker_pods(k8s, namespace, "ha")} == uids  # no new pods
        assert get(k8s, namespace, "ha")["status"]["restarts"] == 0
    finally:
        for replica in ("operator", "operator-2"):
            cluster.procs.stop(replica)


@pytest.fixture
def restricted_namespace(k8s, namespace) -> str:
    k8s.core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    return namespace


def test_restricted_namespace_admits_the_worker_pods_and_gpu_pods_get_dev_shm(
    k8s, operator_process, restricted_namespace, tmp_path
):
    namespace = restricted_namespace
    body = manifest("safe", WAIT_FOR_GATE, {"GATE": str(tmp_path / "gate")}, parallelism={"cfg": 2, "gpusPerPod": 2})
    k8s.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    (pod,) = wait_for(lambda: worker_pods(k8s, namespace, "safe"), "the 2-GPU pod", TIMEOUT)
    container = pod.spec.containers[0]
    assert container.resources.limits["nvidia.com/gpu"] == "2"
    mounts = {m.mount_path: m.name for m in container.volume_mounts}
    shm = next(v for v in pod.spec.volumes if v.name == mounts["/dev/shm"])
    assert shm.empty_dir.medium == "Memory"
    assert container.security_context.read_only_root_filesystem and pod.spec.security_context.run_as_non_root
    # The same pod without the defaults is what a restricted namespace refuses (the check can fail):
    bare = k8s.core.api_client.sanitize_for_serialization(pod)
    bare["metadata"] = {"name": "bare", "namespace": namespace}
    bare["spec"].pop("securityContext", None)
    bare["spec"]["containers"][0].pop("securityContext", None)
    bare["spec"].pop("nodeName", None)
    with pytest.raises(Exception, match="violates PodSecurity"):
        k8s.core.create_namespaced_pod(namespace, bare, dry_run="All")
    (tmp_path / "gate").touch()
    wait_for(lambda: phase(k8s, namespace, "safe") == "Succeeded", "Succeeded", TIMEOUT, interval=0.2)


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"output": {"credentialsSecretRef": {"name": "missing-creds"}}}, "missing-creds' not found"),
        ({"model": {"volume": {"persistentVolumeClaim": {"claimName": "missing-models"}}}}, '"missing-models"'),
    ],
)
def test_missing_secret_or_pvc_is_named_in_a_condition_within_15_s(k8s, operator_process, namespace, spec, named):
    body = manifest("stuck", WAIT_FOR_GATE, {"GATE": "/nonexistent"}, **spec)
    start = time.monotonic()
    k8s.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    pending = wait_for(
        lambda: (c := condition(k8s, namespace, "stuck", "PodsPending")).get("status") == "True" and c,
        "a PodsPending condition",
        15,
    )
    assert named in pending["message"], pending
    assert time.monotonic() - start < 15
    assert phase(k8s, namespace, "stuck") == "Pending"  # the preRunningDeadline still ends the wait, not this
