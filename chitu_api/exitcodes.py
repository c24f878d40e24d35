"""Worker exit codes: how a rank's ending tells the operator whether a retry can help.

The worker exits with one of these; the operator reads the container's exit code. Invalid input (a bad spec,
model path or pod environment) fails the job at once: running the same input again cannot succeed.
"""

from __future__ import annotations

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1  # anything else: a crash, a lost peer, S3 down; the gang may be restarted
EXIT_INVALID_INPUT = 2  # a bad spec, model path or pod env: permanent
EXIT_GPUS_NOT_VISIBLE = 4  # GPUs requested but CUDA sees fewer in the pod (the node's driver/runtime): permanent
# Every output is stored but the final status could not be written (the API out of reach): the next attempt only
# reports them, so the operator restarts the gang without counting it against backoffLimit.
EXIT_REPORT_LOST = 5

PERMANENT_EXIT_CODES = frozenset({EXIT_INVALID_INPUT, EXIT_GPUS_NOT_VISIBLE})
