"""What the lifecycle needs to know about one worker pod, read from the pod as the API returns it.

The operator keeps a kopf index of these views (handlers.worker_pods), fed by the pod watch: it is
rebuilt from the cluster when the operator starts, so no decision depends on memory of the past.

Text a pod writes about itself (termination message, waiting message) reaches the job's status and events,
which more people may read than the pod's logs: it is scrubbed on the way in (control characters dropped,
values after credential-like words and AWS access key ids redacted) and capped.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chitu_api.exitcodes import EXIT_PEER_LOST, PERMANENT_EXIT_CODES
from chitu_api.names import ATTEMPT_LABEL, RANK_LABEL, WORKER_CONTAINER

RUNNING, SUCCEEDED, FAILED, PENDING = "Running", "Succeeded", "Failed", "Pending"
MAX_DETAIL_CHARS = 800  # a log tail (FallbackToLogsOnError) can be 2 KiB: keep its end, where the error is
CREDENTIAL_VALUE = re.compile(
    r"(?i)\b([\w-]*(?:secret|token|password|passwd|api[_-]?key|access[_-]?key)[\w-]*)"
    r"(\s*[=:]\s*)(\S+)"
)
AWS_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def scrub(text: str | None) -> str | None:
    """Pod-written text fit for status and events: no control characters, no credential-looking values."""
    if not text:
        return None
    text = CONTROL.sub("", text)
    text = CREDENTIAL_VALUE.sub(lambda m: f"{m[1]}{m[2]}<redacted>", text)
    return AWS_ACCESS_KEY_ID.sub("<redacted>", text).strip() or None


def parse_time(value: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    owner_uid: str | None  # the controlling GenerationJob's uid
    rank: int
    attempt: int
    phase: str
    deleting: bool  # marked for deletion, waiting for the kubelet to stop it
    created: datetime.datetime | None
    waiting_reason: str | None = None  # container waiting (ImagePullBackOff, ...) or Unschedulable
    waiting_message: str | None = None
    exit_code: int | None = None
    termination_message: str | None = None
    finished: datetime.datetime | None = None
    conditions: tuple[tuple[str, str], ...] = ()  # (type, status) of the pod's conditions, for podFailurePolicy
    node_name: str | None = None  # where the scheduler bound it (health.py names a lost node)

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> PodView | None:
        """The view of a worker pod; None for a pod whose rank/attempt labels are not ours."""
        meta, status = pod["metadata"], pod.get("status") or {}
        labels = meta.get("labels") or {}
        try:
            rank, attempt = int(labels[RANK_LABEL]), int(labels.get(ATTEMPT_LABEL, 0))
        except (KeyError, ValueError):
            return None
        owner = next((ref["uid"] for ref in meta.get("ownerReferences") or [] if ref.get("controller")), None)
        state = _container_state(status)
        waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
        unscheduled = next(
            (
                c
                for c in status.get("conditions") or []
                if c.get("type") == "PodScheduled" and c.get("status") == "False"
            ),
            {},
        )
        return cls(
            name=meta["name"],
            uid=meta.get("uid", ""),
            owner_uid=owner,
            rank=rank,
            attempt=attempt,
            phase=status.get("phase") or PENDING,
            deleting=bool(meta.get("deletionTimestamp")),
            created=parse_time(meta.get("creationTimestamp")),
            waiting_reason=waiting.get("reason") or unscheduled.get("reason"),
            waiting_message=scrub(waiting.get("message") or unscheduled.get("message")),
            exit_code=terminated.get("exitCode"),
            termination_message=scrub(terminated.get("message")),
            finished=parse_time(terminated.get("finishedAt")),
            conditions=tuple((c["type"], c.get("status", "")) for c in status.get("conditions") or [] if c.get("type")),
            node_name=(pod.get("spec") or {}).get("nodeName"),
        )

    @property
    def failed_permanently(self) -> bool:
        """The worker container exited with a code that says running it again cannot succeed (invalid input)."""
        return self.phase == FAILED and self.exit_code in PERMANENT_EXIT_CODES

    @property
    def lost_a_peer(self) -> bool:
        """The worker container exited because a collective lost its partner: a symptom of another rank's failure."""
        return self.phase == FAILED and self.exit_code == EXIT_PEER_LOST

    def failure(self) -> str:
        """One line on why this pod failed, for conditions and events."""
        code = f" with exit code {self.exit_code}" if self.exit_code is not None else ""
        message = self.termination_message or ""
        if len(message) > MAX_DETAIL_CHARS:
            message = "..." + message[-MAX_DETAIL_CHARS:]
        detail = f": {message}" if message else ""
        return f"rank {self.rank} (pod {self.name}) failed{code}{detail}"


def _container_state(status: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = status.get("containerStatuses") or []
    worker = next((s for s in statuses if s.get("name") == WORKER_CONTAINER), statuses[0] if statuses else {})
    return worker.get("state") or {}
