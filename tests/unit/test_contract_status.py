"""What the operator and the worker write into status fits the status models (and so the generated schema):
a key the models lack would be pruned by the apiserver without a word."""

from __future__ import annotations

import datetime
import typing

from pydantic import BaseModel

from chitu_api.jobstatus import GenerationJobStatus
from chitu_operator import status as operator_status
from chitu_worker.outputs import status_entry
from chitu_worker.progress import ProgressReporter

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


def unknown_keys(value, model_fields: dict, path: str = "status") -> list[str]:
    """Keys of `value` (recursively) that the status models do not declare."""
    problems = []
    aliases = {field.alias: field for field in model_fields.values()}
    for key, item in value.items():
        if key not in aliases:
            problems.append(f"{path}.{key}")
            continue
        nested = _model_of(aliases[key].annotation)
        items = item if isinstance(item, list) else [item]
        for element in items:
            if nested is not None and isinstance(element, dict):
                problems += unknown_keys(element, nested.model_fields, f"{path}.{key}")
    return problems


def _model_of(annotation) -> type[BaseModel] | None:
    """The model inside `Model | None` or `tuple[Model, ...]`, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((model for arg in typing.get_args(annotation) if (model := _model_of(arg))), None)


def check(status: dict) -> None:
    GenerationJobStatus.model_validate(status)
    assert unknown_keys(status, GenerationJobStatus.model_fields) == []


def test_the_operators_writes_fit_the_models():
    created = operator_status.initial_status(prompts=2, steps=50, world_size=4, suspended=False, now=NOW, generation=1)
    check(created)
    failed = operator_status.Transition(operator_status.FAILED, operator_status.FAILED, "InvalidInput", "bad model")
    check(operator_status.transition_patch(created, failed, NOW, 2))
    check(operator_status.derived_patch({"progress": {"promptsDone": 1, "promptsTotal": 2}}, 3))


def test_the_workers_writes_fit_the_models():
    published = []
    reporter = ProgressReporter(published.append, prompts_total=2, steps_per_prompt=4, min_interval=0)
    reporter.begin([])
    reporter.step(1, 4)
    reporter.prompt_done(status_entry(0, "a cat", "s3://videos/j-1/prompt-0000", ["s3://videos/j-1/p.png"]))
    assert len(published) == 3 and "outputs" in published[-1]
    for status in published:
        check(status)


def test_a_key_the_models_lack_is_found():
    assert unknown_keys({"progress": {"percnt": 3}, "phase": "Running"}, GenerationJobStatus.model_fields) == [
        "status.progress.percnt"
    ]
    assert unknown_keys({"outputs": [{"index": 0, "vid": "x"}]}, GenerationJobStatus.model_fields) == [
        "status.outputs.vid"
    ]
