"""The reconcile waits for its own writes to come back through the watches (operator/expectations.py)."""

from __future__ import annotations

from chitu_operator.expectations import EXPIRY_SECONDS, Expectations
from chitu_operator.pods import PodView


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pod(name: str, uid: str, *, deleting: bool = False) -> PodView:
    return PodView(
        name=name, uid=uid, owner_uid="job", rank=0, attempt=0, phase="Pending", deleting=deleting, created=None
    )


def test_a_status_patch_is_awaited_until_the_job_holds_its_values():
    expectations = Expectations(Clock())
    patch = {"phase": "Succeeded", "restarts": 1, "message": {"nested": "x"}, "startTime": None}
    expectations.expect("job", status=patch)
    # Another writer's newer version (the worker's progress) is not our patch.
    assert not expectations.satisfied("job", {"phase": "Running", "progress": {"promptsDone": 2}}, ())
    assert not expectations.satisfied("job", {"phase": "Succeeded", "restarts": 1, "message": {"nested": "y"}}, ())
    held = {"phase": "Succeeded", "restarts": 1, "message": {"nested": "x"}}
    assert not expectations.satisfied("job", {**held, "startTime": "t"}, ())
    assert expectations.satisfied("job", {**held, "progress": {"promptsDone": 2}}, ())
    assert len(expectations) == 0


def test_progress_is_not_awaited_the_worker_moves_it_on():
    expectations = Expectations(Clock())
    expectations.expect("job", status={"phase": "Pending", "progress": {"promptsDone": 0, "summary": "0/2"}})
    assert expectations.satisfied("job", {"phase": "Pending", "progress": {"promptsDone": 2, "summary": "2/2"}}, ())


def test_created_pods_are_awaited_until_the_index_holds_them():
    expectations = Expectations(Clock())
    expectations.expect("job", status={}, created=["j-worker-0", "j-worker-1"])
    assert not expectations.satisfied("job", {}, [pod("j-worker-0", "a")])
    assert expectations.satisfied("job", {}, [pod("j-worker-0", "a"), pod("j-worker-1", "b")])


def test_deleted_pods_are_awaited_until_the_index_shows_them_deleting_or_gone():
    expectations = Expectations(Clock())
    expectations.expect("job", status={}, deleted=["a", "b"])
    assert not expectations.satisfied("job", {}, [pod("j-worker-0", "a", deleting=True), pod("j-worker-1", "b")])
    assert expectations.satisfied("job", {}, [pod("j-worker-0", "a", deleting=True)])


def test_an_expectation_that_never_comes_back_expires():
    clock = Clock()
    expectations = Expectations(clock)
    expectations.expect("job", status={"phase": "Running"})
    clock.now = EXPIRY_SECONDS - 1
    assert not expectations.satisfied("job", {"phase": "Pending"}, ())
    clock.now = EXPIRY_SECONDS
    assert expectations.satisfied("job", {"phase": "Pending"}, ())


def test_nothing_written_or_forgotten_means_nothing_to_wait_for():
    clock = Clock()
    expectations = Expectations(clock)
    expectations.expect("a", status={"phase": "Running"})
    expectations.expect("a", status={})  # a later tick that wrote nothing
    assert expectations.satisfied("a", {}, ())
    expectations.expect("b", status={"phase": "Running"})
    expectations.forget("b")
    assert expectations.satisfied("b", {}, ())
    expectations.expect("c", status={"phase": "Running"})
    clock.now = EXPIRY_SECONDS + 1
    expectations.expect("d", status={"phase": "Running"})  # expired entries of jobs never seen again are dropped
    assert len(expectations) == 1
