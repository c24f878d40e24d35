"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler, started the envtest way.

Everything listens on 127.0.0.1 on free ports, so two dev clusters (or a dev cluster and a test
session) coexist. The binaries are the stock ones built by scripts/build-control-plane.sh.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import certs
from .kubeconfig import write_kubeconfig
from .paths import StateDir, free_ports
from .processes import ProcessTable
from .waiting import wait_for

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


def http_status(url: str, context: ssl.SSLContext, timeout: float = 2) -> int | None:
    """Status code of GET ``url``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, ssl.SSLError):
        return None


def admin_tls(paths: certs.CertPaths) -> ssl.SSLContext:
    """Trust the dev CA and present the admin client certificate."""
    tls = ssl.create_default_context(cafile=str(paths.ca_cert))
    tls.load_cert_chain(str(paths.client_cert), str(paths.client_key))
    return tls


def wait_ready(procs: ProcessTable, name: str, url: str, context: ssl.SSLContext, timeout: float) -> None:
    """Poll ``url`` until it answers 200; fail fast, with the log tail, if the process dies."""
    wait_for(
        lambda: http_status(url, context) == 200,
        f"{name} at {url}",
        timeout,
        interval=0.2,
        alive=lambda: procs.is_running(name),
        detail=lambda: procs.log_tail(name),
    )
    log.info("%s ready", name)


@dataclass
class ControlPlane:
    state: StateDir
    procs: ProcessTable
    bin_dir: Path

    def start(self, timeout: float = 90) -> str:
        """Start the four components, write the admin kubeconfig, return the apiserver URL."""
        paths = certs.generate(self.state.certs)
        etcd_port, etcd_peer_port, api_port, kcm_port, sched_port = free_ports(5)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        server = f"https://127.0.0.1:{api_port}"
        etcd_data = self.state.data("etcd")
        shutil.rmtree(etcd_data, ignore_errors=True)  # every `up` starts from an empty cluster

        self.procs.start(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                f"--data-dir={etcd_data}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                "--unsafe-no-fsync",  # a throwaway cluster: durability costs seconds per test for nothing
            ],
        )
        self.procs.start(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={paths.serving_cert}",
                f"--tls-private-key-file={paths.serving_key}",
                f"--client-ca-file={paths.ca_cert}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={paths.sa_pub}",
                f"--service-account-signing-key-file={paths.sa_key}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                # Without a kubelet there are no projected token volumes to add; pods get their
                # service-account token from the node agent instead (TokenRequest).
                "--disable-admission-plugins=ServiceAccount",
                # The endpoint reconciler refuses a loopback advertise address; nothing needs it here.
                "--endpoint-reconciler-type=none",
                # `kubectl logs`: the apiserver reaches the node agent's kubelet API at the Node's InternalIP, checks
                # its certificate against the cluster CA and presents a client certificate of the same CA.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={paths.ca_cert}",
                f"--kubelet-client-certificate={paths.client_cert}",
                f"--kubelet-client-key={paths.client_key}",
            ],
        )
        wait_ready(self.procs, "kube-apiserver", f"{server}/readyz", admin_tls(paths), timeout)

        write_kubeconfig(
            self.state.kubeconfig,
            server,
            paths.ca_cert.read_bytes(),
            user="chitu-dev-admin",
            client_cert_pem=paths.client_cert.read_bytes(),
            client_key_pem=paths.client_key.read_bytes(),
        )
        kubeconfig = f"--kubeconfig={self.state.kubeconfig}"
        # Both serve /healthz on a free port with a self-signed cert (cert-dir) so `up` can wait for them;
        # /healthz is in their always-allowed paths, so no delegated authn/authz is needed.
        self.procs.start(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                kubeconfig,
                f"--service-account-private-key-file={paths.sa_key}",
                f"--root-ca-file={paths.ca_cert}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.state.certs / 'kube-controller-manager'}",
                # The node-lifecycle controller stays on: the node agent renews its Lease like a kubelet,
                # and tests see the real taint/eviction behaviour if it stops.
            ],
        )
        self.procs.start(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                kubeconfig,
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                f"--cert-dir={self.state.certs / 'kube-scheduler'}",
            ],
        )
        self_signed = ssl.create_default_context()
        self_signed.check_hostname = False
        self_signed.verify_mode = ssl.CERT_NONE
        wait_ready(self.procs, "kube-controller-manager", f"https://127.0.0.1:{kcm_port}/healthz", self_signed, timeout)
        wait_ready(self.procs, "kube-scheduler", f"https://127.0.0.1:{sched_port}/healthz", self_signed, timeout)
        return server
