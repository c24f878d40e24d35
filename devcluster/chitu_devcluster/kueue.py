"""Kueue's controller-manager on the dev cluster, built from its Go module (scripts/build-kueue.sh).

``start_kueue(cluster)`` (``chitu-dev-cluster up --kueue``, the e2e ``kueue`` fixture) installs its CRDs and
webhook configurations, starts it as a service of the cluster and waits until it answers /readyz.

Kueue is started as its Deployment would be, with the three things a loopback apiserver needs changed:
- Webhooks (Kueue's own mutating/validating ones for kueue.x-k8s.io objects, and the CRDs' v1beta1 <->
  v1beta2 conversion) are called at ``https://127.0.0.1:<port>`` instead of through a Service.
- Certificates: Kueue's internal cert management (cert-controller's rotator) stays on, seeded with a
  Secret we write: a CA named ``kueue-ca`` (the rotator checks that name) and a serving certificate for
  both the Service name the rotator checks and 127.0.0.1, which the apiserver checks. The rotator finds
  them valid, keeps them, writes them to the webhook cert dir and injects the CA into the webhook
  configurations and CRDs. (With internal management off, Kueue reads its metrics certificate from a
  fixed /etc path.)
- Leader election off, health probes on a free loopback port, the visibility API server off.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from kubernetes import client

from .certs import issue_certificate, x509_name
from .paths import REPO_ROOT, free_ports
from .waiting import wait_for

if TYPE_CHECKING:
    from .cluster import DevCluster

log = logging.getLogger(__name__)

NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"
SECRET = "kueue-webhook-server-cert"
CA_NAME = "kueue-ca"  # cert-controller's rotator keeps a CA only if it is valid for this DNS name
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-kueue.sh"
SERVICE_NAME = "kueue"  # in the cluster's process table
GENERATIONJOB_FRAMEWORK = "GenerationJob.v1alpha1.chitu.dev"  # Kind.version.group, as externalFrameworks wants
# CRDs that Kueue serves in two versions: their conversion goes through Kueue's /convert webhook.
CONVERTED_CRDS = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")


def kueue_version() -> str:
    """The KUEUE_VERSION pinned at the top of the build script (its single source)."""
    match = re.search(r"^KUEUE_VERSION=(\S+)", BUILD_SCRIPT.read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"KUEUE_VERSION not found in {BUILD_SCRIPT}")
    return match.group(1)


def kueue_dir() -> Path:
    """The version-keyed cache the build script fills (same CHITU_CACHE rule as the script)."""
    cache = Path(os.environ.get("CHITU_CACHE", Path.home() / ".cache" / "chitu"))
    return cache / "kueue" / kueue_version()


def ensure_kueue() -> Path:
    """The cached binary, CRDs and webhook configurations, running the build script first when missing."""
    built = kueue_dir()
    if not all((built / name).exists() for name in ("kueue", "webhooks.yaml", "crds")):
        log.info("kueue missing in %s: running %s (minutes, once)", built, BUILD_SCRIPT)
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)
    return built


def webhook_secret_data() -> dict[str, bytes]:
    """ca.crt, ca.key, tls.crt, tls.key as cert-controller's rotator stores them (RSA, PKCS#1: it parses no other)."""
    pem = serialization.Encoding.PEM
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = issue_certificate(
        x509_name(CA_NAME), ca_key, x509_name(CA_NAME), ca_key, ca=True, sans=[x509.DNSName(CA_NAME)]
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))  # the address the apiserver calls
    serving = issue_certificate(
        x509_name(SERVICE),
        key,
        ca.subject,
        ca_key,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[x509.DNSName(f"{SERVICE}.{NAMESPACE}.svc"), loopback],
    )

    def key_pem(k) -> bytes:
        return k.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())

    return {
        "ca.crt": ca.public_bytes(pem),
        "ca.key": key_pem(ca_key),
        "tls.crt": serving.public_bytes(pem),
        "tls.key": key_pem(key),
    }


def manifests(webhook_port: int, ca_pem: bytes, secret: dict[str, bytes]) -> list[dict]:
    """Namespace, seeded Secret, CRDs (conversion via loopback), Kueue's own webhook configurations."""
    base = f"https://127.0.0.1:{webhook_port}"
    ca_bundle = base64.b64encode(ca_pem).decode()
    docs: list[dict] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": NAMESPACE},
            "data": {k: base64.b64encode(v).decode() for k, v in secret.items()},
        },
    ]
    for path in sorted((kueue_dir() / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["plural"] in CONVERTED_CRDS:
            crd["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": {"url": f"{base}/convert", "caBundle": ca_bundle},
                },
            }
        docs.append(crd)
    module_webhooks = kueue_dir() / "webhooks.yaml"
    for config in yaml.safe_load_all(module_webhooks.read_text()):
        kind = "mutating" if config["kind"].startswith("Mutating") else "validating"
        kept = [hook for hook in config["webhooks"] if hook["rules"][0]["apiGroups"] == ["kueue.x-k8s.io"]]
        for hook in kept:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"{base}{path}", "caBundle": ca_bundle}
        docs.append({**config, "metadata": {"name": f"kueue-{kind}-webhook-configuration"}, "webhooks": kept})
    return docs


def configuration(webhook_port: int, health_port: int, cert_dir: Path, external_frameworks: list[str]) -> dict:
    """Kueue's config file (config.kueue.x-k8s.io/v1beta2 Configuration)."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": True, "webhookServiceName": SERVICE, "webhookSecretName": SECRET},
        "integrations": {"frameworks": ["batch/job"], "externalFrameworks": external_frameworks},
    }


def start_kueue(cluster: DevCluster, timeout: float = 120) -> None:
    """Install Kueue's CRDs and webhooks on ``cluster``, start its controller-manager, wait until ready."""
    built = ensure_kueue()
    webhook_port, health_port = free_ports(2)
    secret = webhook_secret_data()
    cluster._apply(manifests(webhook_port, secret["ca.crt"], secret))
    extensions = client.ApiextensionsV1Api(cluster.api_client())
    for path in (built / "crds").glob("*.yaml"):
        name = f"{path.stem.split('_', 1)[1]}.{path.stem.split('_', 1)[0]}"  # kueue.x-k8s.io_workloads.yaml

        def established(name: str = name) -> bool:
            conditions = extensions.read_custom_resource_definition(name).status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        wait_for(established, f"CRD {name} to be established", timeout)
    cert_dir = cluster.state.certs / "kueue"
    cert_dir.mkdir(parents=True, exist_ok=True)
    for name, content in secret.items():  # what the kubelet does for Kueue's Deployment: the Secret as files
        (cert_dir / name).write_bytes(content)
        (cert_dir / name).chmod(0o600)
    config_file = cluster.state.root / "kueue.yaml"
    config_file.write_text(
        yaml.safe_dump(configuration(webhook_port, health_port, cert_dir, [GENERATIONJOB_FRAMEWORK]))
    )
    cluster.procs.start(
        SERVICE_NAME,
        [
            str(built / "kueue"),
            f"--config={config_file}",
            # the visibility API server would need its own certificates in /visibility
            "--feature-gates=VisibilityOnDemand=false",
        ],
        env={**os.environ, "KUBECONFIG": str(cluster.state.kubeconfig)},
    )
    wait_for(
        lambda: _ready(f"http://127.0.0.1:{health_port}/readyz"),
        "kueue /readyz",
        timeout,
        interval=0.2,
        alive=lambda: cluster.procs.is_running(SERVICE_NAME),
        detail=lambda: cluster.procs.log_tail(SERVICE_NAME),
    )
    log.info("kueue ready (webhooks on 127.0.0.1:%d)", webhook_port)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
