"""Worker exit codes: how a rank's ending tells the operator whether a retry can help, and whether it is a cause.

The worker exits with one of these; the operator reads the container's exit code. Invalid input (a bad spec,
model path or pod environment) fails the job at once: running the same input again cannot succeed. A rank that
failed only because another rank went away (EXIT_PEER_LOST) is a symptom: the operator quotes the other rank.
"""

from __future__ import annotations

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1  # anything else: a crash, S3 down; the gang may be restarted
EXIT_INVALID_INPUT = 2  # a bad spec, model path or pod env: permanent
EXIT_GPUS_NOT_VISIBLE = 4  # GPUs requested but CUDA sees fewer in the pod (the node's driver/runtime): permanent
# Every output is stored but the final status could not be written (the API out of reach): the next attempt only
# reports them, so the operator restarts the gang without counting it against backoffLimit.
EXIT_REPORT_LOST = 5
# A collective lost its partner: another rank went away (its process exited, its pod was deleted), so this rank's
# failure is a symptom of that one's. Retried and counted like any failure, but when choosing which failed rank to
# quote, the operator takes any other failure first, whenever it finished (its pod may finish after this one's).
EXIT_PEER_LOST = 6

PERMANENT_EXIT_CODES = frozenset({EXIT_INVALID_INPUT, EXIT_GPUS_NOT_VISIBLE})
