"""Which failed rank ended an attempt: the one the Restarting condition, its RankFailed event and firstFailure quote.

When a rank dies, its peers' next collective breaks as well and they fail of it, exiting EXIT_PEER_LOST
(chitu_api.exitcodes): a symptom. As torchelastic and Kubeflow do, the operator names the first real failure. The
order of the pods' finishes cannot tell it: finishedAt has whole seconds, and a victim's pod often finishes first
(its launcher noticed sooner than the cause's). So a failure other than a peer loss is quoted before any peer loss,
whenever it finished. While every failed rank of the attempt lost a peer and other ranks have not finished, the
cause may still be on its way: the lifecycle waits for it up to PEER_LOSS_GRACE_SECONDS from the first failure,
then quotes the peer loss. The reconcile timer decides again every second, so the wait ends without a pod event.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from .pods import FAILED, PENDING, RUNNING, PodView

# How long peer losses wait for their cause: the dead rank's pod finishes seconds after its peers noticed (its
# process exits, then its launcher and the kubelet report it). Longer would only delay the restart when the cause
# never reports (a node gone with it).
PEER_LOSS_GRACE_SECONDS = 15.0


def in_quoting_order(failed: Iterable[PodView], now: datetime.datetime) -> list[PodView]:
    """Failed pods, the one to quote first: a failure before a peer loss, then the earliest finished (``now`` for a
    pod without a finish time), then the lowest rank."""
    return sorted(failed, key=lambda p: (p.lost_a_peer, p.finished or now, p.rank))


def awaiting_root_cause(current: Iterable[PodView], now: datetime.datetime) -> bool:
    """Whether the attempt's only failures are peer losses, another rank still runs (or has yet to), and the first
    of them finished less than PEER_LOSS_GRACE_SECONDS ago."""
    current = tuple(current)
    failed = [p for p in current if p.phase == FAILED]
    if not failed or not all(p.lost_a_peer for p in failed):
        return False
    if not any(p.phase in (PENDING, RUNNING) for p in current):
        return False
    first = min((p.finished for p in failed if p.finished), default=None)
    return first is not None and (now - first).total_seconds() < PEER_LOSS_GRACE_SECONDS
