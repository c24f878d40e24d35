"""The dev cluster's one stand-in: a node agent playing the kubelet (and cluster DNS).

It registers a Node with the requested capacity (GPUs included, so the real kube-scheduler filters
on ``nvidia.com/gpu``), reports it Ready, lifts the not-ready taint and renews its Lease in
``kube-node-lease`` like a kubelet, so the real node-lifecycle controller keeps it healthy. It
watches the pods the scheduler binds to it and runs each as a local process (see podrunner for the
conventions a pod sees). A deleted pod's process gets SIGTERM, then SIGKILL after the grace period,
then the pod is deleted with grace 0, as a kubelet confirms a deletion.

Run it with ``python -m chitu_devcluster.nodeagent --kubeconfig ... --state-dir ...``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from .certs import CertPaths
from .containerenv import LOOPBACK
from .kubeletserver import KubeletServer
from .paths import StateDir, k8s_version
from .podrunner import NodeContext, PodRunner, now

log = logging.getLogger(__name__)

NODE_NAME = "chitu-dev-node"
GPU_RESOURCE = "nvidia.com/gpu"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40  # the kubelet's default
RENEW_INTERVAL_SECONDS = 10  # a quarter of the lease, as the kubelet does
STATUS_EVERY_RENEWALS = 6  # Ready heartbeat once a minute; the Lease is what keeps the node healthy
WATCH_TIMEOUT_SECONDS = 60  # then re-list: a periodic full resync costs nothing at this scale
DEFAULT_GRACE_SECONDS = 30
SHUTDOWN_GRACE_SECONDS = 5


@dataclass(frozen=True)
class NodeConfig:
    name: str = NODE_NAME
    cpu: str = "16"
    memory: str = "128Gi"
    pods: str = "110"
    gpus: int = 8

    def capacity(self) -> dict[str, str]:
        return {"cpu": self.cpu, "memory": self.memory, "pods": self.pods, GPU_RESOURCE: str(self.gpus)}


def _micro_time() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeAgent:
    """The node's heartbeat and its pods; the watch thread owns the runners, one per pod uid."""

    def __init__(self, api_client: client.ApiClient, state: StateDir, node: NodeConfig):
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.node = node
        cfg = api_client.configuration
        self.ctx = NodeContext(
            api=self.core, server=cfg.host, ca_pem=Path(cfg.ssl_ca_cert).read_bytes(), pods_dir=state.pods
        )
        self.runners: dict[str, PodRunner] = {}  # by pod uid
        paths = CertPaths(state.certs)  # the kubelet API serves with the cluster CA, as kubectl logs expects
        self.kubelet_api = KubeletServer(
            state.pods, paths.serving_cert, paths.serving_key, paths.ca_cert, is_running=self._writing
        )
        self._runners_lock = threading.Lock()  # the watch thread adds, shutdown takes them all
        self._closed = False  # set at shutdown: no pod starts after that
        self._renewals = 0

    def run(self, stop: threading.Event) -> None:
        """Register, then heartbeat and run pods until ``stop`` is set; stop every pod on the way out."""
        self.kubelet_api.start()
        self._register()
        threads = [
            threading.Thread(target=self._heartbeat, args=(stop,), name="heartbeat", daemon=True),
            threading.Thread(target=self._watch_pods, args=(stop,), name="pods", daemon=True),
        ]
        for thread in threads:
            thread.start()
        while not stop.wait(1):  # a timed wait keeps the main thread responsive to signals
            pass
        with self._runners_lock:
            self._closed = True
            runners = list(self.runners.values())
        log.info("shutting down: stopping %d pod(s)", len(runners))
        for runner in runners:
            runner.stop(SHUTDOWN_GRACE_SECONDS, delete=False)
        for runner in runners:
            runner.join(SHUTDOWN_GRACE_SECONDS + 5)
        self.kubelet_api.close()

    def _writing(self, log_file: Path) -> bool:
        """Whether the pod run that writes `log_file` may still write to it (`kubectl logs -f` follows it)."""
        with self._runners_lock:
            runner = next((r for r in self.runners.values() if r.dir / "log" == log_file), None)
        return runner is not None and (runner.proc is None or runner.proc.poll() is None)

    # --- the node ----------------------------------------------------------------------------

    def _register(self) -> None:
        body = {
            "metadata": {
                "name": self.node.name,
                "labels": {
                    "kubernetes.io/hostname": self.node.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), ""),
                },
            },
            "status": {"capacity": self.node.capacity(), "allocatable": self.node.capacity()},
        }
        try:
            self.core.create_node(body, _preload_content=False)
            log.info("registered node %s with %s", self.node.name, self.node.capacity())
        except ApiException as err:
            if err.status != 409:
                raise
            log.info("node %s exists: taking it over", self.node.name)
        self._report_ready(transition=True)
        self._lift_not_ready_taint()
        self._renew_lease()

    def _report_ready(self, *, transition: bool) -> None:
        """Post the node status; ``transition`` also stamps lastTransitionTime (Ready was not True)."""
        stamp = now()
        conditions = [
            {"type": kind, "status": "False", "reason": f"KubeletHas{ok}"}
            for kind, ok in (
                ("MemoryPressure", "SufficientMemory"),
                ("DiskPressure", "NoDiskPressure"),
                ("PIDPressure", "SufficientPID"),
            )
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "chitu dev node agent is posting ready status",
            }
        )
        for condition in conditions:  # conditions merge by type: unstamped fields keep their value
            condition["lastHeartbeatTime"] = stamp
            if transition:
                condition["lastTransitionTime"] = stamp
        version = k8s_version()
        status = {
            "capacity": self.node.capacity(),
            "allocatable": self.node.capacity(),
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_api.port}},
            "addresses": [{"type": "InternalIP", "address": LOOPBACK}, {"type": "Hostname", "address": self.node.name}],
            "nodeInfo": {
                "kubeletVersion": version,
                "kubeProxyVersion": version,
                "operatingSystem": "linux",
                "architecture": platform.machine(),
                "containerRuntimeVersion": "chitu-dev://local",
                "kernelVersion": platform.release(),
                "osImage": platform.platform(),
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }
        self.core.patch_node_status(
            self.node.name,
            {"status": status},
            _preload_content=False,
            _content_type="application/strategic-merge-patch+json",
        )

    def _lift_not_ready_taint(self) -> None:
        """Remove the taint admission put on the new node; the resourceVersion guards concurrent edits."""
        while True:
            node = self.core.read_node(self.node.name)
            taints = [t for t in node.spec.taints or [] if t.key != NOT_READY_TAINT]
            if len(taints) == len(node.spec.taints or []):
                return
            patch = {
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": [self.core.api_client.sanitize_for_serialization(t) for t in taints]},
            }
            try:
                self.core.patch_node(
                    self.node.name, patch, _preload_content=False, _content_type="application/merge-patch+json"
                )
                log.info("lifted %s taint", NOT_READY_TAINT)
                return
            except ApiException as err:
                if err.status != 409:
                    raise

    def _renew_lease(self) -> None:
        spec = {
            "holderIdentity": self.node.name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": _micro_time(),
        }
        try:
            self.coordination.patch_namespaced_lease(
                self.node.name, LEASE_NAMESPACE, {"spec": spec}, _preload_content=False
            )
        except ApiException as err:
            if err.status != 404:
                raise
            node_uid = self.core.read_node(self.node.name).metadata.uid
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.node.name, "uid": node_uid}
            self.coordination.create_namespaced_lease(
                LEASE_NAMESPACE,
                {"metadata": {"name": self.node.name, "ownerReferences": [owner]}, "spec": spec},
                _preload_content=False,
            )

    def _heartbeat(self, stop: threading.Event) -> None:
        """Renew the Lease; post Ready again at once if the node-lifecycle controller marked it otherwise
        (after the agent was paused, say), else once a minute."""
        while not stop.wait(RENEW_INTERVAL_SECONDS):
            try:
                self._renew_lease()
                self._renewals += 1
                conditions = self.core.read_node(self.node.name).status.conditions or []
                ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
                if not ready:
                    log.info("node was marked not ready: reporting Ready")
                if not ready or self._renewals % STATUS_EVERY_RENEWALS == 0:
                    self._report_ready(transition=not ready)
            except Exception:
                log.exception("heartbeat failed; retrying in %d s", RENEW_INTERVAL_SECONDS)

    # --- pods --------------------------------------------------------------------------------

    def _watch_pods(self, stop: threading.Event) -> None:
        """List then watch this node's pods; on any error (410 Gone included) list again."""
        selector = f"spec.nodeName={self.node.name}"
        while not stop.is_set():
            try:
                listing = json.loads(
                    self.core.list_pod_for_all_namespaces(field_selector=selector, _preload_content=False).data
                )
                pods = listing["items"]
                with self._runners_lock:
                    known = set(self.runners)
                for gone in known - {p["metadata"]["uid"] for p in pods}:
                    self._on_gone(gone)
                for pod in pods:
                    self._on_pod(pod)
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=WATCH_TIMEOUT_SECONDS,
                    allow_watch_bookmarks=True,
                )
                for event in stream:
                    if stop.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._on_pod(event["raw_object"])
                    elif event["type"] == "DELETED":
                        self._on_gone(event["raw_object"]["metadata"]["uid"])
            except Exception as err:
                log.warning("pod watch interrupted (%s); listing again", err)
                stop.wait(1)

    def _on_pod(self, pod: dict) -> None:
        """First sight of a pod starts it (or reports it lost); a deletion stops it."""
        meta, phase = pod["metadata"], pod.get("status", {}).get("phase")
        try:
            with self._runners_lock:
                if self._closed:
                    return
                runner = self.runners.get(meta["uid"])
                if runner is None:
                    runner = self.runners[meta["uid"]] = PodRunner(self.ctx, pod)
                    if not meta.get("deletionTimestamp"):
                        if phase == "Pending":
                            runner.start()
                        elif phase == "Running":
                            runner.report_lost()
            if meta.get("deletionTimestamp"):
                grace = meta.get("deletionGracePeriodSeconds")
                if grace is None:
                    grace = pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
                runner.stop(grace, delete=True)
        except Exception:
            log.exception("pod %s/%s: event not handled", meta.get("namespace"), meta.get("name"))

    def _on_gone(self, uid: str) -> None:
        """The pod object is gone (deleted with grace 0, maybe by someone else): stop its process."""
        with self._runners_lock:
            runner = self.runners.pop(uid, None)
        if runner is not None:
            runner.stop(0, delete=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chitu_devcluster.nodeagent", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", required=True, help="admin kubeconfig of the dev cluster")
    parser.add_argument("--state-dir", type=Path, required=True, help="pods' folders go to <state-dir>/pods")
    parser.add_argument("--node-name", default=NODE_NAME)
    parser.add_argument("--cpu", default=NodeConfig.cpu)
    parser.add_argument("--memory", default=NodeConfig.memory)
    parser.add_argument("--pods", default=NodeConfig.pods)
    parser.add_argument("--gpus", type=int, default=NodeConfig.gpus, help=f"{GPU_RESOURCE} capacity")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    api_client = config.new_client_from_config(config_file=args.kubeconfig)
    node = NodeConfig(args.node_name, args.cpu, args.memory, args.pods, args.gpus)
    NodeAgent(api_client, StateDir(args.state_dir), node).run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
