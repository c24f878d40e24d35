"""Leader election over a coordination.k8s.io Lease, as client-go's leaderelection does it.

Two or more operator replicas run; each calls ``acquire`` before it starts kopf, so only the holder of the
Lease serves GenerationJobs. The holder renews the Lease from a thread; a renewal that fails for longer
than the lease duration means another replica may have taken over, so the process exits at once
(client-go's OnStoppedLeading does the same) and its Deployment restarts it as a follower. A killed
leader stops renewing: a follower takes the Lease ``lease_seconds`` after the last renewal.

Nothing the operator does depends on which replica runs it (decisions come from the cluster), so a
takeover resumes every job where the old leader left it.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str = "chitu-operator"
    identity: str = ""  # defaults to the pod's name (HOSTNAME) and pid
    lease_seconds: int = 15
    renew_seconds: float = 5.0
    retry_seconds: float = 2.0

    @property
    def holder(self) -> str:
        return self.identity or f"{os.environ.get('HOSTNAME', 'local')}-{os.getpid()}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _expired(lease: client.V1Lease, now: datetime.datetime) -> bool:
    spec = lease.spec
    if not spec.holder_identity or spec.renew_time is None:
        return True
    return (now - spec.renew_time).total_seconds() > (spec.lease_duration_seconds or 0)


def try_acquire(coordination: client.CoordinationV1Api, config: LeaseConfig) -> bool:
    """One attempt: create the Lease, renew it if ours, take it over if expired. True when we hold it."""
    now = _now()
    body = {
        "metadata": {"name": config.name, "namespace": config.namespace},
        "spec": {
            "holderIdentity": config.holder,
            "leaseDurationSeconds": config.lease_seconds,
            "acquireTime": _micro(now),
            "renewTime": _micro(now),
            "leaseTransitions": 0,
        },
    }
    try:
        lease = coordination.read_namespaced_lease(config.name, config.namespace)
    except ApiException as err:
        if err.status != 404:
            raise
        try:
            coordination.create_namespaced_lease(config.namespace, body)
            return True
        except ApiException as create_err:
            if create_err.status == 409:
                return False  # another replica created it first
            raise
    ours = lease.spec.holder_identity == config.holder
    if not ours and not _expired(lease, now):
        return False
    lease.spec.renew_time = _micro(now)  # MicroTime wants exactly 6 fraction digits; isoformat() may drop them
    lease.spec.lease_duration_seconds = config.lease_seconds
    if not ours:
        lease.spec.holder_identity = config.holder
        lease.spec.acquire_time = _micro(now)
        lease.spec.lease_transitions = (lease.spec.lease_transitions or 0) + 1
    try:  # replace carries resourceVersion: a concurrent writer makes this fail with 409
        coordination.replace_namespaced_lease(config.name, config.namespace, lease)
        return True
    except ApiException as err:
        if err.status == 409:
            return False
        raise


def acquire(coordination: client.CoordinationV1Api, config: LeaseConfig, on_wait: Callable[[str], None]) -> None:
    """Block until this replica holds the Lease."""
    while True:
        try:
            if try_acquire(coordination, config):
                log.info("leader: %s holds lease %s/%s", config.holder, config.namespace, config.name)
                return
            on_wait(f"waiting for lease {config.namespace}/{config.name}")
        except ApiException as err:
            log.warning("lease %s/%s: %s", config.namespace, config.name, err.reason)
        time.sleep(config.retry_seconds)


def keep_renewing(
    coordination: client.CoordinationV1Api, config: LeaseConfig, on_lost: Callable[[], None]
) -> threading.Thread:
    """A daemon thread renewing the Lease; ``on_lost`` runs once when it cannot for lease_seconds."""

    def renew() -> None:
        last_renewed = time.monotonic()
        while True:
            time.sleep(config.renew_seconds)
            try:
                if try_acquire(coordination, config):
                    last_renewed = time.monotonic()
                    continue
                log.error("lease %s/%s was taken by another replica", config.namespace, config.name)
                on_lost()
                return
            except Exception as err:
                log.warning("renewing lease %s/%s failed: %s", config.namespace, config.name, err)
            if time.monotonic() - last_renewed > config.lease_seconds:
                log.error("could not renew lease %s/%s for %ss", config.namespace, config.name, config.lease_seconds)
                on_lost()
                return

    thread = threading.Thread(target=renew, name="lease-renewal", daemon=True)
    thread.start()
    return thread
