"""The chitu-operator command line and the handlers it registers with kopf (no cluster)."""

from __future__ import annotations

import logging

import kopf
import pytest

from chitu_operator import handlers, main


def test_arguments_and_defaults():
    args = main.parse_args(["--kubeconfig", "/k", "--namespace", "jobs", "--liveness", "http://0.0.0.0:8080/healthz"])
    assert (args.kubeconfig, args.namespace, args.liveness, args.log_format) == (
        "/k",
        ["jobs"],
        "http://0.0.0.0:8080/healthz",
        "plain",
    )
    assert main.parse_args([]).namespace is None  # all namespaces
    assert main.parse_args(["-n", "a", "--namespace", "b"]).namespace == ["a", "b"]  # the chart's watchNamespaces
    with pytest.raises(SystemExit):
        main.parse_args(["--namespace", "a", "--all-namespaces"])


def test_routine_successes_are_not_logged_but_everything_else_is():
    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, message, None, None)

    drop = main._DropRoutineSuccess()
    assert not drop.filter(record("Timer 'reconcile' succeeded."))
    assert not drop.filter(record("Handler 'observe_job' succeeded."))  # every event of every job
    assert drop.filter(record("Handler 'create_gang' succeeded."))
    assert drop.filter(record("Timer 'reconcile' failed temporarily: boom"))


def test_handlers_are_registered():
    registry = kopf.get_default_registry()

    def ids(kind) -> set[str]:
        return {handler.id for handler in kind.get_all_handlers()}

    assert {"reconcile", "expire_finished"} <= ids(registry._spawning)
    # No on.create/on.update: kopf would keep a copy of the spec in an annotation (past 256 KiB for a big spec).
    assert ids(registry._changing) == set()
    assert "worker_pods" in ids(registry._indexing)
    assert {"configure", "login"} <= ids(registry._activities)


def test_timers_serve_active_jobs_and_finished_jobs_with_a_ttl():
    assert handlers._is_unfinished({"phase": "Suspended"}) and not handlers._is_unfinished({"phase": "Succeeded"})
    assert handlers._is_unfinished({})  # created, not yet started: the timer starts it
    ttl = {"runPolicy": {"ttlSecondsAfterFinished": 60}}
    assert handlers._expires({"phase": "Failed"}, ttl) and not handlers._expires({"phase": "Failed"}, {})
    assert not handlers._expires({"phase": "Running"}, ttl)
    assert handlers._seconds_left({"completionTime": "2000-01-01T00:00:00Z"}, ttl) == 0
