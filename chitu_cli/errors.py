"""The errors a user can cause or meet, each with its exit code (chitu_cli.exitcodes): `run_command` prints one
line for any of them. Light on purpose: importing it costs nothing, so no command pays for another's imports."""

from __future__ import annotations

from chitu_cli import exitcodes


class CommandError(Exception):
    """A failure reported as one line and an exit code, without a traceback."""

    exit_code = exitcodes.CLUSTER_ERROR


class ManifestError(CommandError):
    """The file is not a valid GenerationJob; the message names the file and the field."""

    exit_code = exitcodes.INVALID_SPEC


class SpecRejected(CommandError):
    """The apiserver refused the job as invalid (schema or CEL rule): its message names the fields."""

    exit_code = exitcodes.INVALID_SPEC


class ClusterError(CommandError):
    """The cluster could not be reached or refused the request, or the object does not exist."""


class StorageError(CommandError):
    """S3 could not be reached or refused a request."""


class ChecksumError(CommandError):
    """A downloaded file does not match the SHA-256 stored with its object (or none was stored)."""

    exit_code = exitcodes.CHECKSUM_MISMATCH
