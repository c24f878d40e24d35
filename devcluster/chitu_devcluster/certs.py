"""Certificates and keys for the dev control plane.

The apiserver needs a CA it trusts for client certificates, a serving certificate valid for
127.0.0.1/localhost, and an RSA key pair to sign and verify service-account tokens. Clients (the
admin kubeconfig, the controller-manager, the scheduler, the node agent) authenticate with a
client certificate in group ``system:masters``, which RBAC always allows. Pods never get it: they get
service-account tokens (see nodeagent).

Keys are EC P-256 for TLS (fast to generate) and RSA 2048 for service accounts (the classic choice,
accepted by every verifier).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class CertPaths:
    """PEM files written by :func:`generate`, all in one folder."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def client_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def client_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"


def x509_name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def issue_certificate(
    subject: x509.Name,
    key,
    issuer: x509.Name,
    signer,
    *,
    ca: bool = False,
    usages: list | None = None,
    sans: list | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signer, hashes.SHA256())


def generate(dir: Path) -> CertPaths:
    """Write a fresh CA, serving cert, admin client cert and service-account key pair into ``dir``."""
    paths = CertPaths(dir)
    dir.mkdir(parents=True, exist_ok=True)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509_name("chitu-dev-ca")
    ca = issue_certificate(ca_name, ca_key, ca_name, ca_key, ca=True)

    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving = issue_certificate(
        x509_name("kube-apiserver"),
        serving_key,
        ca_name,
        ca_key,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = issue_certificate(
        x509_name("chitu-dev-admin", "system:masters"),
        client_key,
        ca_name,
        ca_key,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pem = serialization.Encoding.PEM
    paths.ca_cert.write_bytes(ca.public_bytes(pem))
    paths.serving_cert.write_bytes(serving.public_bytes(pem))
    paths.serving_key.write_bytes(_key_pem(serving_key))
    paths.client_cert.write_bytes(client.public_bytes(pem))
    paths.client_key.write_bytes(_key_pem(client_key))
    paths.sa_key.write_bytes(_key_pem(sa_key))
    paths.sa_pub.write_bytes(sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    for key_file in (paths.serving_key, paths.client_key, paths.sa_key):
        key_file.chmod(0o600)
    return paths
