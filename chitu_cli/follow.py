"""`chitu submit --wait`: follow a job until it ends, showing its steps and prompts, and say how it ended.

Progress goes to stderr (a live bar on a terminal, one line per change of phase or prompt otherwise, so CI logs
stay readable); stdout is kept for results. The wait ends at the first status that decides it: Succeeded,
Failed (with the operator's reason), the job deleted, or the timeout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

from chitu_cli.exitcodes import CLUSTER_ERROR, JOB_FAILED, SUCCEEDED, TIMED_OUT
from chitu_cli.jobview import FAILED, Progress, failure_reason, progress


@dataclass(frozen=True)
class Outcome:
    code: int
    job: dict | None  # the last state seen (None when the job was deleted before any was seen)
    message: str


def decide(job: dict | None, last: dict | None, timed_out: bool) -> Outcome | None:
    """How the wait ends given the newest event (`job`, None = deleted), or None to keep waiting."""
    if job is None:
        return Outcome(CLUSTER_ERROR, last, "the job was deleted while we waited")
    state = progress(job)
    if state.phase == FAILED:
        return Outcome(JOB_FAILED, job, f"job Failed: {failure_reason(job)}")
    if state.finished:
        return Outcome(SUCCEEDED, job, "job Succeeded")
    if timed_out:
        return Outcome(TIMED_OUT, job, f"timed out: the job is still {state.phase} ({state.percent}%)")
    return None


def follow(events: Iterable[dict | None], first: dict, deadline: float, display: Display) -> Outcome:
    """Consume watch `events` (newer states of `first`) until `decide` says the wait is over."""
    display.show(first)
    outcome = decide(first, first, timed_out=False)
    if outcome is not None:
        return outcome
    last = first
    for job in events:
        if job is not None:
            display.show(job)
        outcome = decide(job, last, time.monotonic() >= deadline)
        if outcome is not None:
            return outcome
        last = job
    return decide(last, last, timed_out=True)  # the watch ended at the deadline


class Display:
    """Shows each new state: a rich progress bar on a terminal, plain lines elsewhere."""

    def __init__(self, name: str, *, live: bool | None = None):
        self.name = name
        self.live = sys.stderr.isatty() if live is None else live
        self._previous: Progress | None = None
        self._bar = None

    def __enter__(self) -> Display:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._prompts = self._bar.add_task(f"{self.name}: Pending  prompts", total=None)
            self._steps = self._bar.add_task("  steps of the current prompt", total=None)
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def show(self, job: dict) -> None:
        state = progress(job)
        if state == self._previous:
            return
        if self._bar is not None:
            self._bar.update(
                self._prompts,
                description=f"{self.name}: {state.phase:<10} prompts",
                completed=state.prompts_done,
                total=state.prompts_total or None,
            )
            self._bar.update(self._steps, completed=state.step, total=state.steps or None)
        elif self._changed_enough(state):
            print(
                f"{self.name}: {state.phase} {state.percent}% prompts {state.prompts_done}/{state.prompts_total}"
                f" step {state.step}/{state.steps}",
                file=sys.stderr,
                flush=True,
            )
        self._previous = state

    def _changed_enough(self, state: Progress) -> bool:
        """A plain line for a new phase, a finished prompt, or every 10% (not for each step)."""
        before = self._previous
        return (
            before is None
            or state.phase != before.phase
            or state.prompts_done != before.prompts_done
            or state.percent // 10 != before.percent // 10
        )
