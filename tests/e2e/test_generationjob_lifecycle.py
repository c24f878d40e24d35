"""The operator against the real control plane: gangs, restarts, deadlines, suspension, TTL, restarts of
the operator itself, and deletion through the real garbage collector.

Worker pods here run a small Python script instead of chitu-worker (spec.worker.command, the testing
hook): the node agent runs it as a local process, so a test steers a gang through files on this
machine (a gate file the pods wait for) and reads what they saw (their environment, written to files).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from chitu_api.exitcodes import EXIT_PEER_LOST
from chitu_api.names import GROUP, PLURAL, VERSION, rendezvous_port
from chitu_devcluster.paths import VENV_BIN
from chitu_devcluster.podrunner import SIMULATE_WAITING_ANNOTATION
from chitu_devcluster.waiting import wait_for
from chitu_operator.rootcause import PEER_LOSS_GRACE_SECONDS

TIMEOUT = 60

# Each pod writes what it saw to $OUT/<rank>-<attempt>.json, then waits for the file $GATE (if given).
WAIT_FOR_GATE = """
    import json, os, pathlib, time
    env = {k: v for k, v in os.environ.items() if k.startswith(("CHITU_", "MASTER_", "N", "WORLD_", "POD_"))}
    out = pathlib.Path(os.environ["OUT"])
    (out / f"{env['NODE_RANK']}-{env['CHITU_RESTART_ATTEMPT']}.json").write_text(json.dumps(env))
    while os.environ.get("GATE") and not os.path.exists(os.environ["GATE"]):
        time.sleep(0.1)
"""
FAIL = """
    import os, sys
    open(os.environ["CHITU_TERMINATION_LOG"], "w").write("CUDA out of memory on rank " + os.environ["NODE_RANK"])
    sys.exit(3)
"""
# Attempt 0: rank 1 fails at once while rank 0 hangs; later attempts succeed.
FAIL_RANK_1_ONCE = """
    import os, sys, time
    if os.environ["CHITU_RESTART_ATTEMPT"] == "0":
        if os.environ["NODE_RANK"] == "1":
            open(os.environ["CHITU_TERMINATION_LOG"], "w").write("NCCL timeout on rank 1")
            sys.exit(3)
        time.sleep(600)
"""

# Attempt 0: rank 0 fails as a rank whose collective lost its peer does (EXIT_PEER_LOST); rank 1, the cause, fails 2 s
# after rank 0's exit, so its pod finishes later. Later attempts succeed.
PEER_LOST_BEFORE_ITS_CAUSE = f"""
    import os, pathlib, sys, time
    if os.environ["CHITU_RESTART_ATTEMPT"] == "0":
        lost = pathlib.Path(os.environ["OUT"]) / "peer-lost"
        if os.environ["NODE_RANK"] == "0":
            open(os.environ["CHITU_TERMINATION_LOG"], "w").write("rank 0: RuntimeError: Connection closed by peer")
            lost.touch()
            sys.exit({EXIT_PEER_LOST})
        while not lost.exists():
            time.sleep(0.1)
        time.sleep(2)
        open(os.environ["CHITU_TERMINATION_LOG"], "w").write("CUDA out of memory on rank 1")
        sys.exit(3)
"""
# Attempt 0: rank 0 loses its peer and writes when it exits; rank 1 runs on, so no pod changes after that. Later
# attempts succeed.
PEER_LOST_ALONE = f"""
    import os, pathlib, sys, time
    if os.environ["CHITU_RESTART_ATTEMPT"] == "0":
        if os.environ["NODE_RANK"] == "0":
            open(os.environ["CHITU_TERMINATION_LOG"], "w").write("rank 0: RuntimeError: Connection closed by peer")
            (pathlib.Path(os.environ["OUT"]) / "peer-lost").write_text(str(time.time()))
            sys.exit({EXIT_PEER_LOST})
        time.sleep(600)
"""


def job_manifest(
    name: str, script: str, tmp_path: Path, *, gated: bool = False, run_policy: dict | None = None, **worker
) -> dict:
    """A two-pod gang (cfg 2 x one GPU per pod) whose pods run ``script``."""
    env = [{"name": "OUT", "value": str(tmp_path)}]
    if gated:
        env.append({"name": "GATE", "value": str(tmp_path / "gate")})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GenerationJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "/models/unused"},
            "prompts": ["a cat", "a dog"],
            "parallelism": {"cfg": 2, "gpusPerPod": 1},
            "output": {"uri": "s3://videos/e2e"},
            "worker": {"image": "unused", "command": ["python", "-c", textwrap.dedent(script)], "env": env, **worker},
            "runPolicy": run_policy or {},
        },
    }


class Jobs:
    """GenerationJobs of one namespace, and the waiting that tests do on them."""

    def __init__(self, k8s, cluster, namespace: str):
        self.k8s, self.cluster, self.namespace = k8s, cluster, namespace

    def create(self, manifest: dict) -> dict:
        return self.k8s.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest)

    def get(self, name: str) -> dict:
        return self.k8s.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def patch_spec(self, name: str, spec: dict) -> None:
        self.k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec})

    def wait_phase(self, name: str, phase: str, timeout: float = TIMEOUT) -> dict:
        last = {}

        def reached():
            last["job"] = job = self.get(name)
            return job if job.get("status", {}).get("phase") == phase else None

        return wait_for(
            reached,
            f"{self.namespace}/{name} to be {phase}",
            timeout,
            interval=0.2,
            detail=lambda: (
                f"status: {json.dumps(last.get('job', {}).get('status'))}\noperator log:\n"
                f"{self.cluster.procs.log_tail('operator')}"
            ),
        )

    def pods(self, name: str) -> list:
        return self.k8s.core.list_namespaced_pod(self.namespace, label_selector=f"chitu.dev/job-name={name}").items

    def wait_pods_gone(self, name: str, timeout: float = TIMEOUT) -> None:
        wait_for(lambda: not self.pods(name), f"the pods of {name} to be deleted", timeout, interval=0.2)

    def events(self, name: str, *reasons: str) -> dict[str, str]:
        """reason -> message of the job's events, once there is one of each of ``reasons`` (posted asynchronously)."""

        def posted():
            items = self.k8s.core.list_namespaced_event(
                self.namespace, field_selector=f"involvedObject.name={name}"
            ).items
            found = {event.reason: event.message for event in items}
            return found if set(reasons) <= set(found) else None

        return wait_for(posted, f"events {reasons} of {name}", TIMEOUT, interval=0.2)


@pytest.fixture
def jobs(k8s, operator_process, namespace) -> Jobs:
    return Jobs(k8s, operator_process, namespace)


def conditions(job: dict) -> dict[str, dict]:
    return {c["type"]: c for c in job["status"]["conditions"]}


def service_exists(k8s, namespace: str, name: str) -> bool:
    try:
        k8s.core.read_namespaced_service(name, namespace)
        return True
    except ApiException as err:
        if err.status == 404:
            return False
        raise


def test_gang_runs_to_success(jobs, k8s, namespace, tmp_path):
    jobs.create(job_manifest("cats", WAIT_FOR_GATE, tmp_path, gated=True))
    running = jobs.wait_phase("cats", "Running")
    assert running["status"]["worldSize"] == 2 and running["status"]["progress"]["summary"] == "0/2"
    pods = {p.metadata.name: p for p in jobs.pods("cats")}
    assert sorted(pods) == ["cats-worker-0", "cats-worker-1"]
    assert pods["cats-worker-1"].metadata.labels["chitu.dev/restart-attempt"] == "0"
    assert pods["cats-worker-1"].metadata.owner_references[0].uid == running["metadata"]["uid"]
    assert service_exists(k8s, namespace, "cats-workers")
    # the job's own worker identity: a Role that may read only this job (chitu_operator.manifests)
    assert pods["cats-worker-0"].spec.service_account_name == "cats-worker"
    assert k8s.core.read_namespaced_service_account("cats-worker", namespace)
    binding = k8s.rbac.read_namespaced_role_binding("cats-worker", namespace)
    assert (binding.role_ref.kind, binding.role_ref.name) == ("Role", "cats-worker")
    assert k8s.rbac.read_namespaced_role("cats-worker", namespace).rules[0].resource_names == ["cats"]
    seen = json.loads(
        wait_for(
            lambda: (tmp_path / "1-0.json").exists() and (tmp_path / "1-0.json").read_text(),
            "rank 1's environment",
            TIMEOUT,
        )
    )
    assert {
        k: seen[k]
        for k in (
            "CHITU_JOB_NAME",
            "CHITU_JOB_NAMESPACE",
            "CHITU_JOB_UID",
            "NODE_RANK",
            "NNODES",
            "WORLD_SIZE",
            "NPROC_PER_NODE",
            "MASTER_PORT",
            "POD_NAME",
        )
    } == {
        "CHITU_JOB_NAME": "cats",
        "CHITU_JOB_NAMESPACE": namespace,
        "CHITU_JOB_UID": running["metadata"]["uid"],
        "NODE_RANK": "1",
        "NNODES": "2",
        "WORLD_SIZE": "2",
        "NPROC_PER_NODE": "1",
        "MASTER_PORT": str(rendezvous_port(running["metadata"]["uid"])),  # per job: no fixed port to collide on
        "POD_NAME": "cats-worker-1",
    }

    (tmp_path / "gate").touch()
    done = jobs.wait_phase("cats", "Succeeded")
    assert done["status"]["completionTime"] and done["status"]["restarts"] == 0
    assert {k: c["status"] for k, c in conditions(done).items()} == {
        "Created": "True",
        "Running": "False",
        "Succeeded": "True",
    }
    assert [p.status.phase for p in jobs.pods("cats")] == ["Succeeded", "Succeeded"]  # cleanPodPolicy Running
    wait_for(lambda: not service_exists(k8s, namespace, "cats-workers"), "the Service to be deleted", TIMEOUT)
    jobs.events("cats", "JobCreated", "PodsRunning", "JobSucceeded")


def test_printer_columns(jobs, cluster, namespace, tmp_path):
    jobs.create(job_manifest("columns", WAIT_FOR_GATE, tmp_path))
    jobs.wait_phase("columns", "Succeeded")
    table = subprocess.run(
        [
            str(VENV_BIN / "kubectl"),
            "--kubeconfig",
            str(cluster.state.kubeconfig),
            "get",
            "gj",
            "-n",
            namespace,
            "-o",
            "wide",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    header, row = (line.split() for line in table.splitlines())
    assert header == [
        "NAME",
        "STATUS",
        "PROGRESS%",
        "PROMPTS",
        "RESTARTS",
        "AGE",
        "STRATEGY",
        "WORLD",
        "MODEL",
        "OUTPUT",
    ]
    assert row[:5] == ["columns", "Succeeded", "0", "0/2", "0"]
    assert row[6:] == ["none", "2", "/models/unused", "s3://videos/e2e"]


def test_failed_rank_restarts_the_whole_gang(jobs, tmp_path):
    jobs.create(job_manifest("flaky", FAIL_RANK_1_ONCE, tmp_path))
    done = jobs.wait_phase("flaky", "Succeeded")
    assert done["status"]["restarts"] == 1
    assert conditions(done)["Restarting"]["status"] == "False"
    assert (
        "rank 1 (pod flaky-worker-1) failed with exit code 3: NCCL timeout on rank 1"
        in jobs.events("flaky", "RankFailed")["RankFailed"]
    )
    assert {p.metadata.labels["chitu.dev/restart-attempt"] for p in jobs.pods("flaky")} == {"1"}


def test_the_cause_is_quoted_when_its_pod_finishes_after_a_peer_that_lost_it(jobs, tmp_path):
    jobs.create(job_manifest("victim", PEER_LOST_BEFORE_ITS_CAUSE, tmp_path))
    done = jobs.wait_phase("victim", "Succeeded")
    assert done["status"]["restarts"] == 1
    cause = "rank 1 (pod victim-worker-1) failed with exit code 3: CUDA out of memory on rank 1"
    assert done["status"]["firstFailure"] == cause
    assert cause in jobs.events("victim", "RankFailed")["RankFailed"]


def test_a_peer_loss_alone_restarts_the_gang_once_the_grace_is_over(jobs, k8s, namespace, tmp_path):
    """Nothing changes in the cluster after rank 0 fails: the reconcile timer alone ends the wait."""
    jobs.create(job_manifest("lonely", PEER_LOST_ALONE, tmp_path))
    done = jobs.wait_phase("lonely", "Succeeded")
    assert done["status"]["restarts"] == 1
    quoted = f"rank 0 (pod lonely-worker-0) failed with exit code {EXIT_PEER_LOST}: rank 0: RuntimeError: Connection"
    (event,) = [
        e
        for e in k8s.core.list_namespaced_event(namespace, field_selector="involvedObject.name=lonely").items
        if e.reason == "RankFailed"
    ]
    assert event.message.startswith(quoted), event.message
    exited = float((tmp_path / "peer-lost").read_text())
    waited = event.metadata.creation_timestamp.timestamp() - exited
    assert PEER_LOSS_GRACE_SECONDS - 2 <= waited < PEER_LOSS_GRACE_SECONDS + 10, waited  # whole-second timestamps


def test_backoff_limit_exceeded_fails_the_job(jobs, tmp_path):
    jobs.create(job_manifest("doomed", FAIL, tmp_path, run_policy={"backoffLimit": 1}))
    failed = jobs.wait_phase("doomed", "Failed")
    assert failed["status"]["restarts"] == 1
    condition = conditions(failed)["Failed"]
    assert condition["reason"] == "BackoffLimitExceeded"
    assert "CUDA out of memory on rank" in condition["message"] and "backoffLimit 1" in condition["message"]


def test_pod_that_never_starts_fails_the_job_with_its_waiting_reason(jobs, tmp_path):
    jobs.create(
        job_manifest(
            "stuck",
            WAIT_FOR_GATE,
            tmp_path,
            run_policy={"preRunningDeadlineSeconds": 3},
            podAnnotations={SIMULATE_WAITING_ANNOTATION: "ImagePullBackOff"},
        )
    )
    failed = jobs.wait_phase("stuck", "Failed")
    condition = conditions(failed)["Failed"]
    assert condition["reason"] == "ImagePullBackOff"
    assert "did not start within preRunningDeadlineSeconds (3s)" in condition["message"]
    assert 'Back-off pulling image "unused"' in condition["message"]
    jobs.wait_pods_gone("stuck")  # Pending pods are unfinished: cleanPodPolicy Running deletes them


def test_active_deadline_fails_a_running_job_and_stops_its_pods(jobs, tmp_path):
    jobs.create(job_manifest("slow", WAIT_FOR_GATE, tmp_path, gated=True, run_policy={"activeDeadlineSeconds": 4}))
    failed = jobs.wait_phase("slow", "Failed")
    assert conditions(failed)["Failed"]["reason"] == "DeadlineExceeded"
    jobs.wait_pods_gone("slow")


def test_suspend_and_resume(jobs, tmp_path):
    jobs.create(job_manifest("paused", WAIT_FOR_GATE, tmp_path, gated=True, run_policy={"suspend": True}))
    suspended = jobs.wait_phase("paused", "Suspended")
    assert "startTime" not in suspended["status"] and not jobs.pods("paused")

    jobs.patch_spec("paused", {"runPolicy": {"suspend": False}})
    resumed = jobs.wait_phase("paused", "Running")
    assert resumed["status"]["startTime"]
    resumed_condition = conditions(resumed)["Suspended"]
    assert (resumed_condition["status"], resumed_condition["reason"]) == ("False", "JobResumed")
    assert resumed_condition["observedGeneration"] == 2

    jobs.patch_spec("paused", {"runPolicy": {"suspend": True}})
    assert "startTime" not in jobs.wait_phase("paused", "Suspended")["status"]
    jobs.wait_pods_gone("paused")
    jobs.patch_spec("paused", {"runPolicy": {"suspend": False}})
    jobs.wait_phase("paused", "Running")
    (tmp_path / "gate").touch()
    jobs.wait_phase("paused", "Succeeded")
    jobs.events("paused", "JobSuspended", "JobResumed", "JobSucceeded")


def test_ttl_deletes_a_finished_job_and_the_garbage_collector_its_pods(jobs, tmp_path):
    jobs.create(job_manifest("brief", WAIT_FOR_GATE, tmp_path, run_policy={"ttlSecondsAfterFinished": 2}))
    jobs.wait_phase("brief", "Succeeded")

    def gone() -> bool:
        try:
            jobs.get("brief")
            return False
        except ApiException as err:
            return err.status == 404

    wait_for(gone, "the job to be deleted by its TTL", TIMEOUT, interval=0.2)
    jobs.wait_pods_gone("brief")


def test_operator_restart_resumes_without_duplicating_pods(jobs, tmp_path):
    jobs.create(job_manifest("steady", WAIT_FOR_GATE, tmp_path, gated=True))
    jobs.wait_phase("steady", "Running")
    before = {p.metadata.name: p.metadata.uid for p in jobs.pods("steady")}
    jobs.cluster.kill_operator()
    jobs.cluster.start_operator()  # its reconcile timer resumes the job from the cluster's state
    (tmp_path / "gate").touch()
    jobs.wait_phase("steady", "Succeeded")
    assert {p.metadata.name: p.metadata.uid for p in jobs.pods("steady")} == before
    assert jobs.get("steady")["status"]["restarts"] == 0


def test_deleting_a_job_cascades_to_its_pods_and_service(jobs, k8s, namespace, tmp_path):
    jobs.create(job_manifest("doomed", WAIT_FOR_GATE, tmp_path, gated=True))
    jobs.wait_phase("doomed", "Running")
    k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "doomed")
    jobs.wait_pods_gone("doomed")
    wait_for(lambda: not service_exists(k8s, namespace, "doomed-workers"), "the Service to be deleted", TIMEOUT)


def _drop_rule(schema: Any, message_start: str) -> bool:
    """Remove, in place, every CEL rule whose message starts with ``message_start``; True if one was found."""
    found = False
    if isinstance(schema, dict):
        rules = schema.get("x-kubernetes-validations") or []
        kept = [rule for rule in rules if not rule.get("message", "").startswith(message_start)]
        if len(kept) < len(rules):
            found, schema["x-kubernetes-validations"] = True, kept
    children = schema.values() if isinstance(schema, dict) else schema if isinstance(schema, list) else ()
    for child in children:  # every child: each may hold a copy of the rule
        found = _drop_rule(child, message_start) or found
    return found


@contextmanager
def crd_without_rule(k8s, message_start: str) -> Iterator[None]:
    """The GenerationJob CRD served without the CEL rule whose message starts so, as an older CRD was; restored after.

    Objects stored under it are what the operator's own check (parse_spec) must still catch.
    """
    api = client.ApiextensionsV1Api(k8s.core.api_client)
    name = f"{PLURAL}.{GROUP}"

    def read() -> dict:
        return json.loads(api.read_custom_resource_definition(name, _preload_content=False).data)

    original = read()["spec"]["versions"]
    lax = read()
    assert _drop_rule(lax["spec"]["versions"], message_start), f"no CEL rule with a message {message_start!r}"
    api.replace_custom_resource_definition(name, lax)
    try:
        yield
    finally:
        restored = read()
        restored["spec"]["versions"] = original
        api.replace_custom_resource_definition(name, restored)


def create_once_admitted(jobs: Jobs, manifest: dict) -> None:
    """Create the job, retrying while the apiserver still validates with the CRD's previous schema."""

    def created() -> bool:
        try:
            jobs.create(manifest)
            return True
        except ApiException as err:
            if err.status != 422:
                raise
            return False

    wait_for(created, "the apiserver to serve the changed CRD", TIMEOUT, interval=0.2)


def test_spec_stored_under_an_older_crd_fails_with_invalid_spec(jobs, k8s, tmp_path):
    """The CRD rejects a reserved env name at admission; a job an older CRD let in is failed by the operator."""
    manifest = job_manifest("bad-env", WAIT_FOR_GATE, tmp_path)
    manifest["spec"]["worker"]["env"].append({"name": "WORLD_SIZE", "value": "9"})
    with pytest.raises(ApiException) as rejected:
        jobs.create(manifest)
    assert rejected.value.status == 422 and "spec.worker.env[1].name" in rejected.value.body
    with crd_without_rule(k8s, "is set by the operator"):
        create_once_admitted(jobs, manifest)
    failed = jobs.wait_phase("bad-env", "Failed")
    assert conditions(failed)["Failed"]["reason"] == "InvalidSpec"
    assert "spec.worker.env[1].name: WORLD_SIZE is set by the operator" in failed["status"]["message"]
    assert not jobs.pods("bad-env")
