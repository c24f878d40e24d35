"""One pod's life on the dev node: prepare -> run as a local process -> report; stop on deletion.

Conventions a pod sees (the stand-ins for what a container runtime would give it):

- Only the first container runs, as ``command`` + ``args`` resolved on PATH with the venv's bin
  first; the image, volumes and ``workingDir`` are ignored. The working directory is
  ``<state>/pods/<namespace>/<name>/<uid>/work`` and stdout+stderr go to ``.../log``.
- ``CHITU_TERMINATION_LOG`` names the file to write a termination message to (it plays the
  container's ``terminationMessagePath``). Its content (at most 4 KiB) becomes
  ``state.terminated.message``; with ``terminationMessagePolicy: FallbackToLogsOnError`` a failed
  container with an empty file reports the tail of its log, as the kubelet does.
- ``KUBECONFIG`` authenticates as the pod's service account with a TokenRequest token bound to the
  pod (the stand-in for the projected token mount), so RBAC applies; a pod naming no account gets
  an unbound token of ``default``. ``KUBERNETES_SERVICE_HOST``/
  ``_PORT`` point at the apiserver. ``GLOO_SOCKET_IFNAME=lo``; the pod IP is the machine's own address
  (``containerenv.pod_ip``: one the apiserver accepts in Endpoints), which reaches the pod as 127.0.0.1 does.
- The agent's own environment is inherited (caches, PATH) except credentials-like variables
  (KUBECONFIG, AWS_*, CHITU_*, KUBERNETES_*): a pod gets those only through its spec.
- Annotation ``chitu.dev/simulate-waiting-reason: <Reason>`` (test-only) keeps the container
  waiting with that reason (and ``chitu.dev/simulate-waiting-message``) and never starts it.
- ``restartPolicy`` is treated as Never.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from chitu_api.names import SIMULATED_GPUS_ENV
from chitu_api.podpolicy import GPU_RESOURCE

from .containerenv import LOOPBACK, EnvError, container_argv, container_env, pod_ip
from .kubeconfig import write_kubeconfig
from .paths import VENV_BIN
from .processes import write_record

log = logging.getLogger(__name__)

SIMULATE_WAITING_ANNOTATION = "chitu.dev/simulate-waiting-reason"
SIMULATE_MESSAGE_ANNOTATION = "chitu.dev/simulate-waiting-message"
TERMINATION_LOG_ENV = "CHITU_TERMINATION_LOG"
TOKEN_EXPIRATION_SECONDS = 24 * 3600  # no rotation here: outlive any dev job
CONFIG_RETRY_SECONDS = 1.0  # a Secret or the default ServiceAccount may appear a moment later
PID_RECORD = "pid.json"
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048
_HOST_ENV_DROPPED = ("KUBECONFIG",)
_HOST_ENV_DROPPED_PREFIXES = ("AWS_", "CHITU_", "KUBERNETES_")


@dataclass(frozen=True)
class NodeContext:
    """What every pod runner needs from the agent."""

    api: CoreV1Api
    server: str
    ca_pem: bytes
    pods_dir: Path


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    kind: str, ready: bool, reason: str | None = None, message: str | None = None, since: str | None = None
) -> dict:
    cond = {"type": kind, "status": "True" if ready else "False", "lastTransitionTime": since or now()}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _host_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k not in _HOST_ENV_DROPPED and not k.startswith(_HOST_ENV_DROPPED_PREFIXES)
    }


def _api_error(err: ApiException) -> str:
    try:
        return json.loads(err.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{err.status} {err.reason}"


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


class PodRunner:
    """Runs one pod (one uid). The watch thread creates it, ``start``s it and calls ``stop``."""

    def __init__(self, ctx: NodeContext, pod: dict):
        self.ctx = ctx
        self.pod = pod
        meta = pod["metadata"]
        self.name, self.namespace, self.uid = meta["name"], meta["namespace"], meta["uid"]
        self.container = pod["spec"]["containers"][0]
        self.dir = ctx.pods_dir / self.namespace / self.name / self.uid
        self.termination_log = self.dir / "termination-log"
        self.started_at = now()
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._spawn(self._run, "run")

    def stop(self, grace: float, *, delete: bool) -> None:
        """Kill the process (SIGTERM, SIGKILL after ``grace``), then delete the pod if asked. Idempotent."""
        with self._lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            proc = self.proc
        self._spawn(lambda: self._stop(proc, grace, delete), "stop")

    def join(self, timeout: float) -> None:
        for thread in list(self._threads):
            thread.join(timeout)

    def report_lost(self) -> None:
        """A pod Running before the agent (re)started: its process is gone, so it failed."""
        self._patch_terminated(137, "Error", "the node agent restarted; the process was lost", self.started_at)

    def _spawn(self, target: Callable[[], None], what: str) -> None:
        def guarded() -> None:
            try:
                target()
            except Exception:  # one pod's trouble never takes the agent down
                log.exception("pod %s/%s: %s failed", self.namespace, self.name, what)

        thread = threading.Thread(target=guarded, name=f"{what}-{self.namespace}/{self.name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        annotations = self.pod["metadata"].get("annotations") or {}
        reason = annotations.get(SIMULATE_WAITING_ANNOTATION)
        if reason:
            self._patch_waiting(
                reason,
                annotations.get(SIMULATE_MESSAGE_ANNOTATION)
                or f'Back-off pulling image "{self.container.get("image", "")}"',
            )
            return
        prepared = self._prepare_until_ready()
        if prepared is None:
            return
        argv, env = prepared
        with self._lock:
            if self._stopping.is_set():
                return
            try:
                with open(self.dir / "log", "ab") as out:
                    self.proc = subprocess.Popen(
                        argv,
                        cwd=self.dir / "work",
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
            except OSError as err:  # not executable, say: the runtime's StartError
                self._patch_terminated(128, "StartError", f"failed to start {argv[0]}: {err}", now())
                return
            # Lets `down` kill the pod even if this agent dies without stopping it.
            write_record(self.dir / PID_RECORD, self.proc.pid, argv)
        started = now()
        log.info("pod %s/%s running: pid %d %s", self.namespace, self.name, self.proc.pid, argv)
        self._patch_running(started)
        code = self.proc.wait()
        _kill_group(self.proc.pid)  # like a container: nothing outlives the main process
        if self._stopping.is_set():
            return
        exit_code = code if code >= 0 else 128 - code  # killed by signal N -> 128+N
        log.info("pod %s/%s exited with %d", self.namespace, self.name, exit_code)
        self._patch_terminated(
            exit_code, "Completed" if exit_code == 0 else "Error", self._termination_message(exit_code), started
        )

    def _stop(self, proc: subprocess.Popen | None, grace: float, delete: bool) -> None:
        if proc is not None and proc.poll() is None:
            log.info("pod %s/%s: SIGTERM pid %d (grace %.0f s)", self.namespace, self.name, proc.pid, grace)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.info("pod %s/%s: SIGKILL pid %d", self.namespace, self.name, proc.pid)
            except ProcessLookupError:
                pass
            _kill_group(proc.pid)
            proc.wait()
        if delete:  # the kubelet's confirmation: the pod object can go now
            try:
                self.ctx.api.delete_namespaced_pod(
                    self.name,
                    self.namespace,
                    grace_period_seconds=0,
                    body={"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
                    _preload_content=False,
                )
            except ApiException as err:
                if err.status not in (404, 409):  # gone already, or a new pod with the same name
                    raise

    # --- preparation -------------------------------------------------------------------------

    def _prepare_until_ready(self) -> tuple[list[str], dict[str, str]] | None:
        """Retry preparation every second while the pod is wanted, as the kubelet does."""
        reported = None
        while not self._stopping.is_set():
            try:
                return self._prepare()
            except (EnvError, ApiException) as err:
                message = str(err) if isinstance(err, EnvError) else _api_error(err)
                if message != reported:
                    log.info("pod %s/%s waiting: %s", self.namespace, self.name, message)
                    self._patch_waiting("CreateContainerConfigError", message)
                    reported = message
            except Exception as err:  # the apiserver unreachable for a moment, say
                log.warning("pod %s/%s: preparing failed (%s); retrying", self.namespace, self.name, err)
            self._stopping.wait(CONFIG_RETRY_SECONDS)
        return None

    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        """Folder, token kubeconfig and environment; raises EnvError/ApiException to retry later."""
        (self.dir / "work").mkdir(parents=True, exist_ok=True)
        port = str(urlparse(self.ctx.server).port)
        node_env = {
            "KUBERNETES_SERVICE_HOST": LOOPBACK,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "HOSTNAME": self.pod["spec"].get("hostname") or self.name,
            "KUBECONFIG": str(self._write_token_kubeconfig()),
            TERMINATION_LOG_ENV: str(self.termination_log),
            "GLOO_SOCKET_IFNAME": "lo",
        }
        gpus = (self.container.get("resources") or {}).get("limits", {}).get(GPU_RESOURCE)
        if gpus:  # this machine's nvidia.com/gpu capacity is simulated: say so, so GPU pods run on the CPU
            node_env[SIMULATED_GPUS_ENV] = str(gpus)
        own = container_env(self.pod, self.container, self._secret, self._config_map, node_env)
        env = {**_host_env(), **node_env, **own}
        env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", os.defpath)])
        argv = container_argv(self.container, env)
        resolved = shutil.which(argv[0], path=env["PATH"])
        if resolved is None:
            raise EnvError(f"executable {argv[0]!r} not found in $PATH")
        return [resolved, *argv[1:]], env

    def _write_token_kubeconfig(self) -> Path:
        account = self.pod["spec"].get("serviceAccountName")
        spec: dict = {"expirationSeconds": TOKEN_EXPIRATION_SECONDS}
        if account:  # bound: the token dies with the pod
            spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}
        else:
            # Without the ServiceAccount admission plugin nothing fills in "default", and the apiserver
            # binds a token only to a pod naming the account: use an unbound token of "default".
            account = "default"
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        token = self.ctx.api.create_namespaced_service_account_token(account, self.namespace, request).status.token
        return write_kubeconfig(
            self.dir / "kubeconfig",
            self.ctx.server,
            self.ctx.ca_pem,
            user=f"system:serviceaccount:{self.namespace}:{account}",
            token=token,
            namespace=self.namespace,
        )

    def _secret(self, name: str) -> dict[str, str] | None:
        try:
            data = self.ctx.api.read_namespaced_secret(name, self.namespace).data or {}
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}

    def _config_map(self, name: str) -> dict[str, str] | None:
        try:
            return self.ctx.api.read_namespaced_config_map(name, self.namespace).data or {}
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def _termination_message(self, exit_code: int) -> str:
        try:
            message = self.termination_log.read_bytes()[:MAX_TERMINATION_MESSAGE].decode(errors="replace")
        except FileNotFoundError:
            message = ""
        if not message and exit_code != 0 and self.container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = (self.dir / "log").read_bytes().splitlines()[-FALLBACK_LOG_LINES:]
            message = b"\n".join(lines)[-FALLBACK_LOG_BYTES:].decode(errors="replace")
        return message

    # --- status (pods/status, strategic merge: conditions by type, containers by name) --------

    def _container_status(self, state: dict, *, ready: bool) -> dict:
        status = {
            "name": self.container["name"],
            "image": self.container.get("image", ""),
            "imageID": "",
            "ready": ready,
            "started": ready,
            "restartCount": 0,
            "state": state,
        }
        if self.proc is not None:
            status["containerID"] = f"chitu-dev://{self.proc.pid}"
        return status

    def _patch_status(self, phase: str, conditions: list[dict], container: dict) -> None:
        body = {
            "status": {
                "phase": phase,
                "startTime": self.started_at,
                "hostIP": LOOPBACK,
                "hostIPs": [{"ip": LOOPBACK}],
                "podIP": pod_ip(),
                "podIPs": [{"ip": pod_ip()}],
                "conditions": [
                    _condition("PodReadyToStartContainers", True, since=self.started_at),
                    _condition("Initialized", True, since=self.started_at),
                    *conditions,
                ],
                "containerStatuses": [container],
            }
        }
        try:
            self.ctx.api.patch_namespaced_pod_status(
                self.name,
                self.namespace,
                body,
                _content_type="application/strategic-merge-patch+json",
                _preload_content=False,
            )
        except ApiException as err:
            if err.status != 404:
                raise
            log.info("pod %s/%s is gone; status %s not written", self.namespace, self.name, phase)

    def _patch_waiting(self, reason: str, message: str) -> None:
        unready = f"containers with unready status: [{self.container['name']}]"
        self._patch_status(
            "Pending",
            [_condition(kind, False, "ContainersNotReady", unready) for kind in ("ContainersReady", "Ready")],
            self._container_status({"waiting": {"reason": reason, "message": message}}, ready=False),
        )

    def _patch_running(self, started: str) -> None:
        self._patch_status(
            "Running",
            [_condition("ContainersReady", True), _condition("Ready", True)],
            self._container_status({"running": {"startedAt": started}, "waiting": None}, ready=True),
        )

    def _patch_terminated(self, exit_code: int, reason: str, message: str, started: str) -> None:
        terminated = {"exitCode": exit_code, "reason": reason, "startedAt": started, "finishedAt": now()}
        if message:
            terminated["message"] = message
        if self.proc is not None:
            terminated["containerID"] = f"chitu-dev://{self.proc.pid}"
        self._patch_status(
            "Succeeded" if exit_code == 0 else "Failed",
            [_condition(kind, False, "PodCompleted") for kind in ("ContainersReady", "Ready")],
            self._container_status({"terminated": terminated, "running": None, "waiting": None}, ready=False),
        )
