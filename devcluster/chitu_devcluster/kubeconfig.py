"""Self-contained kubeconfig files (certificates inlined, so a file can be copied anywhere)."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(
    path: Path,
    server: str,
    ca_pem: bytes,
    *,
    user: str,
    token: str | None = None,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    namespace: str = "default",
) -> Path:
    """Write a one-context kubeconfig authenticating with a bearer token or a client certificate."""
    credentials: dict[str, str] = {}
    if token is not None:
        credentials["token"] = token
    if client_cert_pem is not None and client_key_pem is not None:
        credentials["client-certificate-data"] = _b64(client_cert_pem)
        credentials["client-key-data"] = _b64(client_key_pem)
    if not credentials:
        raise ValueError("a kubeconfig needs a token or a client certificate")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "chitu-dev", "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "chitu-dev", "context": {"cluster": "chitu-dev", "user": user, "namespace": namespace}}],
        "current-context": "chitu-dev",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
