"""Rank 0's progress reporting: what it publishes, how often, and that a failing API never stops generation."""

from __future__ import annotations

import pytest

from chitu_worker.outputs import status_entry
from chitu_worker.progress import ProgressReporter


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A `Publish` that records what it was given, failing while `down` is set."""

    def __init__(self):
        self.sent: list[dict] = []
        self.down = False

    def __call__(self, status: dict) -> None:
        if self.down:
            raise ConnectionError("apiserver unreachable")
        self.sent.append(status)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def api():
    return Recorder()


def reporter(api, clock, outputs=(), prompts=2, steps=10):
    return ProgressReporter(
        api,
        prompts_total=prompts,
        steps_per_prompt=steps,
        outputs=outputs,
        min_interval=1.0,
        retry_after=15.0,
        clock=clock,
    )


def progress(status: dict) -> tuple:
    p = status["progress"]
    return p["promptsDone"], p["promptsTotal"], p["currentStep"], p["totalSteps"], p["percent"]


def test_steps_are_throttled_and_prompt_ends_always_sent(api, clock):
    r = reporter(api, clock)
    r.begin([])
    assert progress(api.sent[-1]) == (0, 2, 0, 10, 0)
    r.step(1, 10)  # within a second of the last publish: skipped
    assert len(api.sent) == 1
    clock.now = 1.0
    r.step(2, 10)
    assert progress(api.sent[-1]) == (0, 2, 2, 10, 10)
    clock.now = 1.5
    r.step(3, 10)
    r.prompt_done(status_entry(0, "a cat", "s3://b/j/prompt-0000"))  # forced, even inside the interval
    assert progress(api.sent[-1]) == (1, 2, 0, 10, 50)
    clock.now = 3.0
    r.step(5, 10)
    assert progress(api.sent[-1]) == (1, 2, 5, 10, 75)
    r.prompt_done(status_entry(1, "a dog", "s3://b/j/prompt-0001"))
    assert progress(api.sent[-1]) == (2, 2, 10, 10, 100)
    assert api.sent[-1]["progress"]["lastUpdateTime"].endswith("Z")
    assert api.sent[-1]["progress"]["summary"] == "2/2"  # the Prompts column, in the same patch as the counts


def test_percent_never_reads_100_before_the_last_prompt(api, clock):
    r = reporter(api, clock, prompts=3, steps=1000)
    r.begin([])
    clock.now = 10
    r.prompt_done(status_entry(0, "p", "s3://b/j/prompt-0000"))
    r.prompt_done(status_entry(1, "p", "s3://b/j/prompt-0001"))
    clock.now = 20
    r.step(999, 1000)  # 2999 of 3000 steps
    assert progress(api.sent[-1])[-1] == 99


def test_outputs_list_extends_the_fetched_one_and_is_sent_only_when_changed(api, clock):
    fetched = [{"index": 1, "prompt": "old dog", "video": "s3://b/j/prompt-0001/video.mp4", "completedTime": "then"}]
    r = reporter(api, clock, outputs=fetched, prompts=3)
    # prompt 1 was already done and listed (kept as fetched), prompt 2 was done but its status patch was lost
    r.begin([status_entry(1, "dog", "s3://b/j/prompt-0001"), status_entry(2, "bird", "s3://b/j/prompt-0002")])
    assert [o["index"] for o in api.sent[-1]["outputs"]] == [1, 2]
    assert api.sent[-1]["outputs"][0] == fetched[0]
    assert progress(api.sent[-1])[0] == 2
    clock.now = 5
    r.step(3, 10)
    assert "outputs" not in api.sent[-1]
    policies = ["s3://b/j/prompt-0000/p.ppm", "s3://b/j/prompt-0000/p.png"]
    r.prompt_done(status_entry(0, "cat", "s3://b/j/prompt-0000", policies))
    outputs = api.sent[-1]["outputs"]
    assert [o["index"] for o in outputs] == [0, 1, 2]  # the whole list: a merge patch replaces lists
    assert outputs[0]["policy"] == "s3://b/j/prompt-0000/p.png"  # the viewable picture
    assert outputs[0]["video"] == "s3://b/j/prompt-0000/video.mp4"
    assert outputs[0]["metrics"] == "s3://b/j/prompt-0000/metrics.json"


def test_unreachable_api_is_survived_backed_off_and_caught_up(api, clock, caplog):
    r = reporter(api, clock)
    api.down = True
    r.begin([])  # must not raise
    assert "progress not reported" in caplog.text
    api.down = False
    clock.now = 5
    r.step(1, 10)  # inside the 15 s back-off: not even tried
    assert api.sent == []
    api.down = True
    r.prompt_done(status_entry(0, "cat", "s3://b/j/prompt-0000"))  # forced: tried, fails, survives
    api.down = False
    clock.now = 30
    r.step(4, 10)
    # the lost prompt-end patch is caught up: the outputs list rides along with the next publish that works
    assert [o["index"] for o in api.sent[-1]["outputs"]] == [0]
    assert progress(api.sent[-1]) == (1, 2, 4, 10, 70)
