"""A finished worker's outputs always reach the job (issue 14 (d)): the final status is retried until the job has
it, and a report that cannot be written fails the attempt (the next one reports from storage)."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from chitu_api.exitcodes import EXIT_REPORT_LOST
from chitu_worker.failures import exit_code
from chitu_worker.progress import ProgressReporter, ReportLost


class FlakyApi:
    def __init__(self, failures: int):
        self.failures, self.sent, self.now, self.sleeps = failures, [], 0.0, []

    def publish(self, status: dict) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("apiserver unreachable")
        self.sent.append(status)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def reporter(api: FlakyApi) -> ProgressReporter:
    report = ProgressReporter(api.publish, prompts_total=2, steps_per_prompt=4, clock=lambda: api.now)
    report.begin([])
    for index in range(2):
        report.prompt_done({"index": index, "video": f"s3://b/p{index}/video.mp4"})
    return report


def test_the_final_status_is_retried_until_the_job_has_every_output():
    api = FlakyApi(failures=0)
    report = reporter(api)
    api.failures = 4
    report.finish(sleep=api.sleep)
    assert api.sleeps == [1, 2, 4, 8]
    assert [entry["index"] for entry in api.sent[-1]["outputs"]] == [0, 1]
    assert api.sent[-1]["progress"]["promptsDone"] == 2


def test_a_report_that_never_lands_fails_the_attempt():
    api = FlakyApi(failures=0)
    report = reporter(api)
    api.failures = 1000
    with pytest.raises(ReportLost, match=r"final status \(2/2 prompts\) could not be written for 60 s"):
        report.finish(finish_seconds=60, sleep=api.sleep)


def test_a_lost_report_exits_with_its_own_code():
    """Exit 5: the operator restarts the gang without counting it (every output is already stored)."""
    assert exit_code(ReportLost("x")) == EXIT_REPORT_LOST == 5


def test_a_refusal_retrying_cannot_change_is_raised_at_once():
    """403 (the worker's Role lost): retrying for 120 s, then restarting without counting, would loop for ever."""
    api = FlakyApi(failures=0)
    report = reporter(api)

    def forbidden(status: dict) -> None:
        raise ApiException(status=403, reason="Forbidden")

    report._publish = forbidden
    with pytest.raises(ApiException, match="Forbidden"):
        report.finish(sleep=api.sleep)
    assert api.sleeps == []
