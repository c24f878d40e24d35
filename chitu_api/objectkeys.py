"""Where a job's results live: `<output.uri>/<job name>-<uid[:8]>/prompt-<index:04d>/{video.mp4,metrics.json,...}`.

Keys depend only on the job's identity and the prompt index, so a restarted gang overwrites what a failed attempt
left half-written, and a new job with an old job's name starts clean. metrics.json is uploaded last: its presence
means every other file of the prompt is there too.
"""

from __future__ import annotations

VIDEO = "video.mp4"
METRICS = "metrics.json"


def job_prefix(output_uri: str, job_name: str, job_uid: str) -> str:
    return f"{output_uri.rstrip('/')}/{job_name}-{job_uid[:8]}"


def prompt_prefix(job_prefix: str, index: int) -> str:
    return f"{job_prefix}/prompt-{index:04d}"
