"""Where things live: the source checkout, the venv, the binary cache and the state folder.

The dev cluster runs from a source checkout (it needs ``scripts/build-control-plane.sh`` and
``crds/``), so the repo root is found from this file. The control-plane version is read from the
build script, its single source.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-control-plane.sh"
CRDS_DIR = REPO_ROOT / "crds"
# $CHITU_DEV_CLUSTER_DIR: another default (the docs test gives each doc its own cluster this way).
DEFAULT_STATE_DIR = Path(os.environ.get("CHITU_DEV_CLUSTER_DIR") or REPO_ROOT / ".dev-cluster")
# The venv's bin (not resolved: its python is a symlink to the base interpreter).
VENV_BIN = Path(sys.executable).parent
CONTROL_PLANE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def k8s_version() -> str:
    """The K8S_VERSION pinned at the top of the build script."""
    match = re.search(r"^K8S_VERSION=(\S+)", BUILD_SCRIPT.read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"K8S_VERSION not found in {BUILD_SCRIPT}")
    return match.group(1)


def control_plane_bin_dir() -> Path:
    """The version-keyed cache the build script fills (same CHITU_CACHE rule as the script)."""
    cache = Path(os.environ.get("CHITU_CACHE", Path.home() / ".cache" / "chitu"))
    return cache / "control-plane" / k8s_version()


def free_ports(count: int, *, grpc_pairs: bool = False) -> list[int]:
    """Ports free on 127.0.0.1 right now (held open until all are picked, so they are distinct).

    With ``grpc_pairs`` each port p also has p+10000 free: SeaweedFS derives some gRPC addresses as
    http port + 10000 even when a gRPC port flag is given, so both must be ours.
    """
    ports: list[int] = []
    with ExitStack() as held:
        while len(ports) < count:
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if grpc_pairs:
                if port + 10000 > 65535:
                    continue
                pair = held.enter_context(socket.socket())
                try:
                    pair.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            ports.append(port)
    return ports


@dataclass(frozen=True)
class StateDir:
    """The files of one dev cluster; ``down`` and ``env`` from another shell find everything here."""

    root: Path

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client cert in system:masters)."""
        return self.root / "kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        """Token kubeconfig of the chitu-operator service account (RBAC from identities.py)."""
        return self.root / "operator.kubeconfig"

    @property
    def s3_env(self) -> Path:
        return self.root / "s3.env"

    @property
    def env_sh(self) -> Path:
        return self.root / "env.sh"

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def pods(self) -> Path:
        """Per-pod folders of the node agent: pods/<namespace>/<name>/<uid>/."""
        return self.root / "pods"

    def data(self, name: str) -> Path:
        return self.root / "data" / name
