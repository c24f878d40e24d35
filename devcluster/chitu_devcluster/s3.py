"""SeaweedFS as the dev cluster's S3: ``weed mini`` with access keys enforced.

``weed mini`` runs master, volume, filer and S3 gateway in one process. Every port it opens is
chosen free (two dev clusters coexist), the WebDAV, Iceberg and Lance endpoints are off, and it
binds 127.0.0.1 only. With AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in its environment the S3
gateway accepts only requests signed with that pair; buckets are created on first upload for it.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
from dataclasses import dataclass

import boto3
import botocore.config
import botocore.exceptions

from .paths import VENV_BIN, StateDir, free_ports
from .processes import ProcessTable
from .waiting import wait_for

log = logging.getLogger(__name__)

REGION = "us-east-1"
SERVICE = "s3"
#: The S3 port when it is free (SeaweedFS's own default): the address a user's shell and notes keep across `up`s.
#: A second dev cluster on the machine (a test session beside a developer's cluster) gets a free one instead.
STABLE_PORT = 8333
#: Volumes the volume server may hold. Every bucket is its own collection with at least one volume, and weed mini's
#: automatic limit is free disk / volume size (73 with 74 GiB free, 1 GiB volumes): past that many buckets every
#: PutObject to a new bucket fails with InternalError ("no free volumes left"), as the last tests of a CI session did
#: on a fuller disk. Volumes are not preallocated, so the count costs nothing until data is written.
MAX_VOLUMES = 4096


@dataclass(frozen=True)
class S3Credentials:
    endpoint: str
    access_key_id: str
    secret_access_key: str
    region: str = REGION

    def env(self) -> dict[str, str]:
        """The variables our worker and boto3 read (the contents of the state folder's s3.env)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "CHITU_S3_ENDPOINT": self.endpoint,
        }

    def client(self, *, secret_access_key: str | None = None, **config):
        """A boto3 S3 client for this endpoint (optionally with another secret, to test rejection)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=botocore.config.Config(**config),
        )

    def save(self, state: StateDir) -> None:
        state.s3_env.write_text("".join(f"{k}={v}\n" for k, v in self.env().items()))
        state.s3_env.chmod(0o600)

    @classmethod
    def load(cls, state: StateDir) -> S3Credentials:
        env = dict(line.split("=", 1) for line in state.s3_env.read_text().splitlines() if "=" in line)
        return cls(
            env["CHITU_S3_ENDPOINT"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_DEFAULT_REGION"]
        )


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_s3(state: StateDir, procs: ProcessTable, timeout: float = 60) -> S3Credentials:
    """Start ``weed mini`` with fresh credentials and wait until a signed ListBuckets succeeds."""
    data = state.data(SERVICE)
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    master, volume, filer, s3, admin = free_ports(5, grpc_pairs=True)
    if _free(STABLE_PORT) and _free(STABLE_PORT + 10000) and STABLE_PORT not in (master, volume, filer, admin):
        s3 = STABLE_PORT
    creds = S3Credentials(f"http://127.0.0.1:{s3}", "chitu-dev", secrets.token_urlsafe(24))
    procs.start(
        SERVICE,
        [
            str(VENV_BIN / "weed"),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            # gRPC ports are http + 10000, the convention weed itself assumes (see free_ports).
            f"-master.port={master}",
            f"-master.port.grpc={master + 10000}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume + 10000}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer + 10000}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3 + 10000}",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin + 10000}",
            "-admin.ui=false",
            f"-volume.max={MAX_VOLUMES}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-master.telemetry=false",  # no phoning home (and no internet here anyway)
            f"-filer.localSocket={data / 'filer.sock'}",
            f"-s3.localSocket={data / 's3.sock'}",
        ],
        env={
            "PATH": str(VENV_BIN),
            "HOME": str(data),
            "AWS_ACCESS_KEY_ID": creds.access_key_id,
            "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
        },
    )
    probe = creds.client(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)

    def answers() -> bool:
        try:
            probe.list_buckets()  # signed: proves the credentials are enforced and accepted
            return True
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False

    wait_for(
        answers,
        "S3 (signed ListBuckets)",
        timeout,
        interval=0.2,
        alive=lambda: procs.is_running(SERVICE),
        detail=lambda: procs.log_tail(SERVICE),
    )
    log.info("S3 ready at %s", creds.endpoint)
    creds.save(state)
    return creds
