"""Bounded retries with exponential backoff around object-storage calls.

botocore retries one request a few times within seconds; an S3 endpoint that restarts, fails over or throttles
for a minute outlasts that, and the first error that escaped used to end the gang's attempt (issue 14 (c): S3
down for ~46 s spent three gang restarts in 25 s and failed the job). ``retrying`` repeats a call while its
error is transient (no connection, a connect/read timeout, a connection dropped mid-transfer, a 5xx,
throttling) with exponential backoff, until ``budget_seconds`` have passed; then it raises StorageUnavailable,
naming the operation and the last error. An error retrying cannot fix (AccessDenied, NoSuchBucket, a bad
digest) is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, ReadTimeoutError

logger = logging.getLogger(__name__)

T = TypeVar("T")
FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 15.0
#: S3 error codes that mean "not now" rather than "never".
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "500",
        "502",
        "503",
        "504",
    }
)


class StorageUnavailable(RuntimeError):
    """Object storage kept failing transiently for the whole retry budget."""


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (or an error it wraps: boto3's S3UploadFailedError, s3transfer's RetriesExceededError)
    is one that waiting may cure."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | HTTPClientError | ReadTimeoutError):
            return True
        if isinstance(current, ClientError):
            error_info = current.response.get("Error", {})
            status = current.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return error_info.get("Code") in TRANSIENT_CODES or status >= 500
        current = getattr(current, "last_exception", None) or current.__cause__ or current.__context__
    return False


def retrying(
    call: Callable[[], T],
    what: str,
    budget_seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, repeated on transient errors for up to ``budget_seconds`` (1, 2, 4 ... 15 s apart)."""
    deadline = clock() + budget_seconds
    delay = FIRST_DELAY_SECONDS
    attempt = 1
    while True:
        try:
            return call()
        except Exception as err:
            if not is_transient(err):
                raise
            left = deadline - clock()
            if left <= 0:
                raise StorageUnavailable(
                    f"{what}: object storage failed for {budget_seconds:.0f} s ({attempt} attempts); last error: "
                    f"{type(err).__name__}: {err}"
                ) from err
            wait = min(delay, left)
            logger.warning(
                "%s failed (%s: %s); attempt %d, retrying in %.0f s", what, type(err).__name__, err, attempt, wait
            )
            sleep(wait)
            delay = min(delay * 2, MAX_DELAY_SECONDS)
            attempt += 1
