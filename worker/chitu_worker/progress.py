"""Rank 0's progress report: `status.progress` and `status.outputs` of the GenerationJob, or log lines.

Reporting must never cost a video: a failed publish is logged and generation goes on. Step updates are throttled
(at most one per `min_interval`, none for `retry_after` seconds after a failure); the start of the run and the
end of every prompt are always published, so the status is exact at prompt boundaries.

A worker that finishes must not exit 0 before its outputs are in the job's status (issue 14 (d): the API was
unreachable at the end, and the job showed 1/4 prompts though all 4 videos were stored): `finish()` sends the
final status until the job has it, and raises ReportLost after `finish_seconds` (exit code 5): the attempt then
fails, and the next one, finding every prompt complete in storage, reports them (a restart the operator does not
count against backoffLimit). A refusal that retrying cannot change (401, 403, 404) is raised as it is.

`status.outputs` is a list, and a JSON merge patch replaces lists whole: the reporter keeps the full list,
starting from the one in the job as fetched, keyed by prompt index, and sends all of it whenever it changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from chitu_worker.outputs import now_rfc3339

logger = logging.getLogger(__name__)

Publish = Callable[[dict], None]  # receives the `status` object to merge
FINISH_SECONDS = 120.0
FINISH_MAX_DELAY_SECONDS = 15.0
REFUSED_FOR_GOOD = (401, 403, 404)  # the API's answer, not its absence: another attempt would be refused too


class ReportLost(RuntimeError):
    """The final status could not be written: the outputs are stored but the job does not list them."""


class ProgressReporter:
    def __init__(
        self,
        publish: Publish,
        *,
        prompts_total: int,
        steps_per_prompt: int,
        outputs: Iterable[dict] = (),
        min_interval: float = 1.0,
        retry_after: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._publish = publish
        self._prompts_total = prompts_total
        self._steps = steps_per_prompt
        self._outputs = {int(entry["index"]): entry for entry in outputs if "index" in entry}
        self._outputs_changed = False
        self._done = 0
        self._step = 0
        self._min_interval = min_interval
        self._retry_after = retry_after
        self._clock = clock
        self._quiet_until = float("-inf")

    def begin(self, recovered: Iterable[dict]) -> None:
        """Start of the run; `recovered` are entries of prompts found complete in storage (kept if listed)."""
        for entry in recovered:
            if entry["index"] not in self._outputs:
                self._outputs[entry["index"]] = entry
                self._outputs_changed = True
            self._done += 1
        self._send()

    def step(self, step: int, total: int) -> None:
        """A denoising step of the current prompt finished (chitu_diffusion's on_step signature)."""
        self._step, self._steps = step, total
        if self._clock() >= self._quiet_until:
            self._send()

    def prompt_done(self, entry: dict) -> None:
        self._outputs[entry["index"]] = entry
        self._outputs_changed = True
        self._done += 1
        self._step = 0
        self._send()

    def finish(self, finish_seconds: float = FINISH_SECONDS, sleep: Callable[[float], None] = time.sleep) -> None:
        """The final status with every output, sent until the job has it (1, 2, 4 ... 15 s apart)."""
        self._outputs_changed = True
        deadline, delay = self._clock() + finish_seconds, 1.0
        while True:
            try:
                self._publish(self.status())
                self._outputs_changed = False
                return
            except Exception as err:
                if getattr(err, "status", None) in REFUSED_FOR_GOOD:
                    raise
                if self._clock() >= deadline:
                    raise ReportLost(
                        f"the final status ({self._done}/{self._prompts_total} prompts) could not be "
                        f"written for {finish_seconds:.0f} s: {type(err).__name__}: {err}"
                    ) from err
                logger.warning("final status not reported (%s: %s); retrying in %.0f s", type(err).__name__, err, delay)
                sleep(delay)
                delay = min(delay * 2, FINISH_MAX_DELAY_SECONDS)

    def status(self) -> dict:
        all_done = self._done >= self._prompts_total
        current = self._steps if all_done else self._step
        work = self._prompts_total * self._steps
        status = {
            "progress": {
                "currentStep": current,
                "totalSteps": self._steps,
                "percent": 100 if all_done else min(99, (self._done * self._steps + current) * 100 // max(work, 1)),
                "promptsDone": self._done,
                "promptsTotal": self._prompts_total,
                # the Prompts printer column, in the same patch as the counts so `kubectl get gj` never
                # shows a count that disagrees with the percent (the operator only fills it in when behind)
                "summary": f"{self._done}/{self._prompts_total}",
                "lastUpdateTime": now_rfc3339(),
            }
        }
        if self._outputs_changed:
            status["outputs"] = [self._outputs[index] for index in sorted(self._outputs)]
        return status

    def _send(self) -> None:
        status = self.status()
        try:
            self._publish(status)
        except Exception as err:
            logger.warning(
                "progress not reported (%s: %s); retrying in %.0f s", type(err).__name__, err, self._retry_after
            )
            self._quiet_until = self._clock() + self._retry_after
            return
        if "outputs" in status:
            self._outputs_changed = False
        self._quiet_until = self._clock() + self._min_interval


def log_publisher(status: dict) -> None:
    """`Publish` for runs without a cluster: progress goes to the log."""
    progress = status["progress"]
    logger.info(
        "progress: %d%%, prompts %d/%d, step %d/%d",
        progress["percent"],
        progress["promptsDone"],
        progress["promptsTotal"],
        progress["currentStep"],
        progress["totalSteps"],
    )
    if "outputs" in status:
        logger.info("outputs: %d prompts listed", len(status["outputs"]))
