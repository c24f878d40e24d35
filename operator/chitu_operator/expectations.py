"""What the operator wrote for a job and has not seen come back through its watches yet.

kopf hands the reconcile timer the job as the job watch last delivered it, and the pod index as the pod
watch last delivered it. Under load both lag the previous tick's writes by seconds, and a decision made on
such a stale view repeats the previous one: a job started twice (an AlreadyExists 409 for each of its
objects), a finished job's Service deleted twice (404), a doomed pod deleted twice. Kubernetes' own Job
controller guards against this with expectations (pkg/controller's ControllerExpectations): after acting on
an object it does not act on it again until its informers show what it did, or the expectation expires.
The same here, per job uid:

- a status patch: satisfied once the job as delivered holds every value the patch wrote (a newer version
  alone proves nothing: the worker writes progress in between), except under ``progress``, which the worker
  moves on (its counts, and so the summary that follows them);
- pods created (by name): satisfied once the index holds a pod of each name (older pods of those names
  were gone before the creation: lifecycle waits for them);
- pods deleted (by uid): satisfied once the index shows each one deleting or no longer holds it.

An expectation expires after EXPIRY_SECONDS: a write that failed, or a value someone else overwrote since,
never comes back. Only memory of this process: a restarted
operator starts without expectations and decides from the cluster, whose creations are idempotent.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .pods import PodView

EXPIRY_SECONDS = 300.0  # as Kubernetes' ExpectationsTimeout: a watch minutes behind under load must not expire it
SHARED_STATUS = ("progress",)  # status keys the worker writes too: what the operator wrote there may be gone


@dataclass(frozen=True)
class Pending:
    """One job's writes not seen yet."""

    status: Mapping[str, Any]  # the merge patch written to the job's status ({}: none)
    created: frozenset[str]  # pod names
    deleted: frozenset[str]  # pod uids
    expires: float  # monotonic

    def seen(self, status: Mapping[str, Any], pods: Iterable[PodView]) -> bool:
        pods = tuple(pods)
        names = {p.name for p in pods}
        alive = {p.uid for p in pods if not p.deleting}
        return _holds(status, self.status) and self.created <= names and not (self.deleted & alive)


def _holds(current: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """Whether ``current`` already reflects the JSON merge patch ``patch`` (None: the key removed)."""
    for key, value in patch.items():
        if value is None:
            if current.get(key) is not None:
                return False
        elif isinstance(value, Mapping):
            if not isinstance(current.get(key), Mapping) or not _holds(current[key], value):
                return False
        elif current.get(key) != value:
            return False
    return True


class Expectations:
    """Per job uid, the writes of its last reconcile that its watches have not delivered yet."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pending: dict[str, Pending] = {}

    def satisfied(self, uid: str, status: Mapping[str, Any], pods: Iterable[PodView]) -> bool:
        """True when nothing this operator wrote for the job is still on its way (or it expired)."""
        pending = self._pending.get(uid)
        if pending is None:
            return True
        if pending.seen(status, pods) or self._clock() >= pending.expires:
            del self._pending[uid]
            return True
        return False

    def expect(
        self,
        uid: str,
        *,
        status: Mapping[str, Any],
        created: Iterable[str] = (),
        deleted: Iterable[str] = (),
    ) -> None:
        """Record a reconcile's writes: the status merge patch ({}: none), pods created by name and pods deleted
        by uid. Nothing written: nothing to wait for."""
        created, deleted = frozenset(created), frozenset(deleted)
        now = self._clock()
        self._pending = {key: p for key, p in self._pending.items() if p.expires > now}  # jobs gone meanwhile
        if not status and not created and not deleted:  # (a progress-only patch is awaited by nothing: fine)
            self._pending.pop(uid, None)
            return
        awaited = {key: copy.deepcopy(value) for key, value in status.items() if key not in SHARED_STATUS}
        self._pending[uid] = Pending(awaited, created, deleted, now + EXPIRY_SECONDS)

    def forget(self, uid: str) -> None:
        """The job finished or was deleted: nothing of it to wait for."""
        self._pending.pop(uid, None)

    def __len__(self) -> int:
        return len(self._pending)
