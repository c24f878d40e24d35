"""A node lost mid-job (issue 14): its node agent (the kubelet stand-in) and its pods die at once, as when a machine
loses power. Nothing tells the apiserver: the real kube-controller-manager notices the Lease no longer renewed
(after its --node-monitor-grace-period, 50 s by default), marks the node Unknown and its pods not Ready, and the
operator restarts the gang (reason NodeLost), force-deleting the pods nobody will confirm, on the node that works.
"""

from __future__ import annotations

import sys
import time
from collections import Counter

from batch import dump
from test_faults import BATCH_TIMEOUT, assert_clean

from chitu_devcluster.nodeagent import NODE_NAME, NOT_READY_TAINT
from chitu_devcluster.processes import kill_recorded
from chitu_devcluster.waiting import wait_for

SPARE_NODE = "chitu-dev-node-b"
SPARE_AGENT = "node-agent-b"
NODE_MONITOR_GRACE_SECONDS = 50  # kube-controller-manager's default, which the dev cluster keeps


def start_spare_node(cluster, core) -> None:
    """A second node agent (own node name, same state folder: pod folders are per uid), Ready and untainted."""
    cluster.procs.start(
        SPARE_AGENT,
        [
            sys.executable,
            "-m",
            "chitu_devcluster.nodeagent",
            "--kubeconfig",
            str(cluster.state.kubeconfig),
            "--state-dir",
            str(cluster.state.root),
            "--node-name",
            SPARE_NODE,
            "--gpus",
            "0",
        ],
    )

    def schedulable() -> bool:
        nodes = core.list_node(field_selector=f"metadata.name={SPARE_NODE}").items
        ready = nodes and any(c.type == "Ready" and c.status == "True" for c in nodes[0].status.conditions or [])
        return bool(ready) and not any(t.key == NOT_READY_TAINT for t in nodes[0].spec.taints or [])

    wait_for(schedulable, "the spare node to be Ready", 60, interval=0.5)


def cordon(core, node: str, unschedulable: bool) -> None:
    core.patch_node(node, {"spec": {"unschedulable": unschedulable}})


def test_a_lost_node_restarts_the_gang_on_a_node_that_works(batch, reliability_report):
    cluster, core, name = batch.cluster, batch.k8s.core, "stranded"
    start_spare_node(cluster, core)
    try:
        cordon(core, NODE_NAME, True)  # the first attempt lands on the spare node
        batch.submit(name, prompts=6, seconds_per_prompt=3.0, run_policy={"restartBackoffSeconds": 1})

        def reported(count: int) -> bool:
            job = next((j for j in batch.jobs() if j["metadata"]["name"] == name), {})
            return ((job.get("status") or {}).get("progress") or {}).get("promptsDone", 0) >= count

        wait_for(lambda: reported(1), "prompt 0 to be reported", 90, interval=0.2)
        (pod,) = batch.pods_of(name)
        assert pod.spec.node_name == SPARE_NODE
        cordon(core, NODE_NAME, False)

        # The machine dies: its agent and its pods' processes, with no word to the apiserver.
        cluster.procs.kill(SPARE_AGENT)
        kill_recorded(cluster.state.pods / batch.namespace / pod.metadata.name / pod.metadata.uid / "pid.json")
        lost_at = time.monotonic()

        def restarted() -> bool:
            job = next(j for j in batch.jobs() if j["metadata"]["name"] == name)
            return int((job.get("status") or {}).get("restarts") or 0) >= 1

        wait_for(restarted, "the gang to be restarted", NODE_MONITOR_GRACE_SECONDS + 60, interval=0.5)
        detected_after = time.monotonic() - lost_at
        jobs = batch.wait_finished(BATCH_TIMEOUT)
        pods = batch.pods_of(name)
        events = core.list_namespaced_event(batch.namespace, field_selector=f"involvedObject.name={name}").items
    finally:
        cordon(core, NODE_NAME, False)
        cluster.procs.kill(SPARE_AGENT)
        core.delete_node(SPARE_NODE)
    outcome = batch.outcome("node lost (agent and pods killed)", 1, jobs, restarted_after_s=round(detected_after, 1))
    reliability_report.append(outcome)
    assert_clean(outcome)
    assert outcome.restarts == 1, dump(jobs)
    lost = [e for e in events if e.reason == "NodeLost"]
    assert lost and f"was lost with node {SPARE_NODE}" in lost[0].message, [(e.reason, e.message) for e in events]
    assert [p.spec.node_name for p in pods] == [NODE_NAME]  # the old pod is gone, force-deleted
    assert not batch.services()
    assert pods[0].metadata.labels["chitu.dev/restart-attempt"] == "1"
    runs = batch.runs_of(jobs[0])
    assert set(runs) == set(range(6)) and max(runs.values()) == 1, runs  # finished prompts kept, none twice
    assert detected_after < NODE_MONITOR_GRACE_SECONDS + 30
    assert runs == Counter(range(6))
