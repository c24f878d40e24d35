"""``DevCluster``: the whole hermetic cluster in one state folder.

``up`` starts, each detached in its own session, etcd + kube-apiserver + kube-controller-manager +
kube-scheduler (controlplane), SeaweedFS (s3) and the node agent (nodeagent); then it installs the Helm chart
(CRDs, RBAC, the operator's configuration with platform defaults for the dev S3: platform.py) and runs the
operator as the chart's pod or as a local process. Pid
files, logs, kubeconfigs and ``env.sh`` land in the state folder, so ``down``/``env``/``status``
work from any shell given the same folder.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

from . import identities, platform
from .certs import CertPaths
from .controlplane import ControlPlane, admin_tls, http_status
from .kubeconfig import write_kubeconfig
from .nodeagent import NODE_NAME, NOT_READY_TAINT, NodeConfig
from .paths import (
    BUILD_SCRIPT,
    CONTROL_PLANE_BINARIES,
    CRDS_DIR,
    DEFAULT_STATE_DIR,
    VENV_BIN,
    StateDir,
    control_plane_bin_dir,
    free_ports,
)
from .podrunner import PID_RECORD
from .processes import ProcessTable, kill_recorded
from .s3 import S3Credentials, start_s3
from .waiting import wait_for

log = logging.getLogger(__name__)

FIELD_MANAGER = "chitu-dev-cluster"
OPERATOR = "operator"
NODE_AGENT = "node-agent"
OPERATOR_TOKEN_SECONDS = 30 * 24 * 3600  # a dev cluster's lifetime; nothing rotates it
OPERATOR_STARTUP_CHECK_SECONDS = 2  # long enough to catch a crash on import or on login


def operator_installed() -> bool:
    """The ``chitu-operator`` console script and the module it runs are both present."""
    return (VENV_BIN / "chitu-operator").exists() and importlib.util.find_spec("chitu_operator.main") is not None


def ensure_control_plane() -> Path:
    """The cached binaries, running the build script first when any is missing (minutes, once)."""
    bin_dir = control_plane_bin_dir()
    if not all((bin_dir / name).exists() for name in CONTROL_PLANE_BINARIES):
        log.info("control-plane binaries missing in %s: running %s (about 5-9 min cold)", bin_dir, BUILD_SCRIPT)
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)
    return bin_dir


class DevCluster:
    """A dev cluster identified by its state folder (default ``.dev-cluster/`` in the repo root)."""

    def __init__(self, state_dir: Path | str | None = None):
        self.state = StateDir(Path(state_dir or DEFAULT_STATE_DIR).resolve())
        self.procs = ProcessTable(self.state.pids, self.state.logs)

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def up(
        cls,
        state_dir: Path | str | None = None,
        *,
        with_operator: bool = True,
        gpus: int = NodeConfig.gpus,
        timeout: float = 120,
        operator_pod: bool = False,
        preload_model: bool = True,
    ) -> DevCluster:
        """Start a fresh cluster and return it; on any failure stop what was started and raise.

        The chart installs the CRD, RBAC and the operator's configuration, as on a real cluster. The operator runs
        as the chart's pod (`operator_pod`, what `chitu-dev-cluster up` does) or, with `with_operator`, as a local
        process tests can stop and kill (the chart then runs no replica). `preload_model`: the tiny model at the
        examples' model.uri (needs the engine installed; skipped without it).
        """
        cluster = cls(state_dir)
        if any(cluster.procs.running().values()):
            raise RuntimeError(f"a dev cluster is already running in {cluster.state.root}: run `down` first")
        if with_operator and not operator_installed():
            raise RuntimeError(
                "chitu-operator is not installed (no chitu_operator.main in this venv); "
                "use --no-operator / with_operator=False"
            )
        cluster.procs.stop_all()  # forget the pid files of services that died on their own
        for old in (cluster.state.logs, cluster.state.pods):
            shutil.rmtree(old, ignore_errors=True)
        bin_dir = ensure_control_plane()
        started = time.monotonic()
        try:
            ControlPlane(cluster.state, cluster.procs, bin_dir).start(timeout)
            start_s3(cluster.state, cluster.procs)
            cluster._start_node_agent(gpus, timeout)
            s3 = cluster.s3
            values = platform.chart_values(s3, liveness_port=free_ports(1)[0], operator_replicas=int(operator_pod))
            platform.install_chart(cluster.state, values, round(timeout))
            cluster._wait_crds_established(timeout)
            cluster._apply([platform.credentials_secret(s3)])
            cluster._write_operator_kubeconfig()
            cluster.state.env_sh.write_text(cluster.env_script())
            if preload_model and importlib.util.find_spec("chitu_diffusion") is not None:
                platform.preload_model(s3, platform.make_tiny_model(cluster.state))
            if with_operator and not operator_pod:
                cluster.start_operator()
        except BaseException:
            cluster.down()
            raise
        log.info("dev cluster up in %.1f s (state in %s)", time.monotonic() - started, cluster.state.root)
        return cluster

    def down(self) -> None:
        """Stop every service of this state folder (newest first); files stay for debugging.

        The node agent stops its pods on the way out; any pod process still alive after it (the agent
        was killed, say) is killed from its pid record.
        """
        self.procs.stop_all()
        for record in self.state.pods.glob(f"*/*/*/{PID_RECORD}"):
            kill_recorded(record)

    def status(self) -> dict[str, bool]:
        """Each recorded service and whether it runs, plus whether the apiserver answers /readyz."""
        services = self.procs.running()
        if services.get("kube-apiserver"):
            services["apiserver /readyz"] = self.readyz() == 200
        return services

    def readyz(self) -> int | None:
        """HTTP status of the apiserver's /readyz (None when nothing answers)."""
        return http_status(f"{self.server}/readyz", admin_tls(CertPaths(self.state.certs)))

    def env(self) -> dict[str, str]:
        """What a process needs to use this cluster: kubeconfig, S3 credentials, PATH (venv bin first)."""
        if not self.procs.is_running("kube-apiserver"):
            raise RuntimeError(f"no dev cluster running in {self.state.root}")
        return {
            "KUBECONFIG": str(self.state.kubeconfig),
            **self.s3.env(),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        }

    def env_script(self) -> str:
        """The same as shell exports (the content of env.sh), for ``eval $(chitu-dev-cluster env)``."""
        lines = [f"export {k}={shlex.quote(v)}" for k, v in self.env().items() if k != "PATH"]
        lines.append(f'export PATH={shlex.quote(str(VENV_BIN))}:"$PATH"')
        return "\n".join(lines) + "\n"

    # --- accessors ---------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return yaml.safe_load(self.state.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]

    @property
    def s3(self) -> S3Credentials:
        return S3Credentials.load(self.state)

    def api_client(self) -> client.ApiClient:
        """A fresh admin ApiClient (system:masters)."""
        return config.new_client_from_config(config_file=str(self.state.kubeconfig))

    def pod_log(self, namespace: str, name: str) -> str:
        """stdout+stderr of the newest pod with this name (``kubectl logs`` has no kubelet to ask)."""
        runs = sorted((self.state.pods / namespace / name).glob("*/log"), key=lambda p: p.stat().st_mtime)
        return runs[-1].read_text(errors="replace") if runs else ""

    # --- the operator ------------------------------------------------------------------------

    def start_operator(
        self, namespace: str | None = None, *, name: str = OPERATOR, extra_args: Sequence[str] = ()
    ) -> None:
        """Run ``chitu-operator`` as a local process with the chitu-operator service account's token (``name``:
        its service name, so that two replicas can run; ``extra_args``: more flags, e.g. --leader-elect)."""
        if not operator_installed():
            raise RuntimeError("chitu-operator is not installed (no chitu_operator.main in this venv)")
        kubeconfig = str(self.state.operator_kubeconfig)
        argv = [str(VENV_BIN / "chitu-operator"), "--kubeconfig", kubeconfig]
        if namespace:
            argv += ["--namespace", namespace]
        argv += list(extra_args)
        env = {
            **os.environ,
            "KUBECONFIG": kubeconfig,
            "POD_NAMESPACE": identities.OPERATOR_NAMESPACE,
            platform.CONFIG_ENV: self.operator_config(),
        }
        self.procs.start(name, argv, env=env)
        deadline = time.monotonic() + OPERATOR_STARTUP_CHECK_SECONDS
        while time.monotonic() < deadline:
            if not self.procs.is_running(name):
                raise RuntimeError(f"chitu-operator exited at startup:\n{self.procs.log_tail(name)}")
            time.sleep(0.1)

    def operator_config(self) -> str:
        """The operator's configuration as the chart rendered it (what the chart's pod gets in its env)."""
        config_map = client.CoreV1Api(self.api_client()).read_namespaced_config_map(
            platform.CONFIG_MAP, platform.RELEASE_NAMESPACE
        )
        return config_map.data["config.yaml"]

    def stop_operator(self, grace: float = 10) -> None:
        """SIGTERM (a graceful kopf shutdown), SIGKILL after ``grace``."""
        self.procs.stop(OPERATOR, grace)

    def kill_operator(self) -> None:
        """SIGKILL at once: a crash, for tests of what survives the operator."""
        self.procs.kill(OPERATOR)

    # --- steps of `up` -----------------------------------------------------------------------

    def _start_node_agent(self, gpus: int, timeout: float) -> None:
        self.procs.start(
            NODE_AGENT,
            [
                sys.executable,
                "-m",
                "chitu_devcluster.nodeagent",
                "--kubeconfig",
                str(self.state.kubeconfig),
                "--state-dir",
                str(self.state.root),
                "--gpus",
                str(gpus),
            ],
        )
        core = client.CoreV1Api(self.api_client())

        def schedulable() -> bool:
            nodes = core.list_node(field_selector=f"metadata.name={NODE_NAME}").items
            if not nodes:
                return False
            ready = any(c.type == "Ready" and c.status == "True" for c in nodes[0].status.conditions or [])
            return ready and not any(t.key == NOT_READY_TAINT for t in nodes[0].spec.taints or [])

        wait_for(
            schedulable,
            "the node to be Ready and untainted",
            timeout,
            interval=0.2,
            alive=lambda: self.procs.is_running(NODE_AGENT),
            detail=lambda: self.procs.log_tail(NODE_AGENT),
        )

    @staticmethod
    def _crd_manifests() -> list[dict]:
        files = sorted([*CRDS_DIR.rglob("*.yaml"), *CRDS_DIR.rglob("*.yml")]) if CRDS_DIR.is_dir() else []
        return [doc for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]

    def _apply(self, manifests: list[dict]) -> None:
        """Server-side apply (idempotent)."""
        dynamic = DynamicClient(self.api_client())
        for manifest in manifests:
            resource = dynamic.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
            dynamic.server_side_apply(resource, body=manifest, field_manager=FIELD_MANAGER, force_conflicts=True)
            log.info("applied %s %s", manifest["kind"], manifest["metadata"]["name"])

    def _wait_crds_established(self, timeout: float) -> None:
        api = client.ApiextensionsV1Api(self.api_client())

        def established(name: str) -> bool:
            conditions = api.read_custom_resource_definition(name).status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        for crd in self._crd_manifests():
            if crd["kind"] == "CustomResourceDefinition":
                name = crd["metadata"]["name"]
                wait_for(functools.partial(established, name), f"CRD {name} to be established", timeout)

    def _write_operator_kubeconfig(self) -> None:
        core = client.CoreV1Api(self.api_client())
        token = core.create_namespaced_service_account_token(
            identities.OPERATOR_SERVICE_ACCOUNT,
            identities.OPERATOR_NAMESPACE,
            {"spec": {"expirationSeconds": OPERATOR_TOKEN_SECONDS}},
        ).status.token
        write_kubeconfig(
            self.state.operator_kubeconfig,
            self.server,
            CertPaths(self.state.certs).ca_cert.read_bytes(),
            user=f"system:serviceaccount:{identities.OPERATOR_NAMESPACE}:{identities.OPERATOR_SERVICE_ACCOUNT}",
            token=token,
            namespace=identities.OPERATOR_NAMESPACE,
        )
