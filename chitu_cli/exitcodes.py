"""Exit codes of the `chitu` job commands, one meaning each, so a CI step can tell why it stopped.

`submit --wait` exits 0 only when the job Succeeded. An invalid spec is 2, as for argparse's usage errors and the
worker's invalid input (chitu_api.exitcodes): running the same input again cannot help.
"""

from __future__ import annotations

SUCCEEDED = 0
JOB_FAILED = 1  # the job ended Failed (the reason is printed)
INVALID_SPEC = 2  # the manifest or the command line is wrong (checked here, or refused by the apiserver)
TIMED_OUT = 3  # --timeout passed while the job was still running
CLUSTER_ERROR = 4  # no cluster, no permission, the job not found or deleted while waiting, S3 unreachable
CHECKSUM_MISMATCH = 5  # `download`: a file's SHA-256 differs from the one stored with it

EPILOG = (
    "exit codes: 0 success (submit --wait: the job Succeeded), 1 the job Failed, 2 invalid spec or usage, "
    "3 timed out, 4 cluster/S3 error or job not found, 5 checksum mismatch"
)
