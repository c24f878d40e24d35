"""The GenerationJob document as the worker reads it: a manifest file or the API object -> the typed spec.

The spec model is the contract's (`chitu_api.generationjob`, one model of the document for all). What the worker adds
is what an apiserver would have done for a local `--job-file` run: a field the model does not know is an error
here (a typo like `generation.setps` must not silently run with the default), where the apiserver would have
pruned it. Errors become `InvalidInput` naming the field.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel

from chitu_api.generationjob import GenerationJobSpec, InvalidSpec, field_path
from chitu_api.generationjob import parse_spec as parse_operator_spec
from chitu_worker.failures import InvalidInput


def _section_model(annotation: object) -> type[BaseModel] | None:
    """The pydantic model behind a field's annotation (`Model` or `Model | None`), else None."""
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    candidates = typing.get_args(annotation) if is_union else (annotation,)
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def unknown_field(model: type[BaseModel], data: dict, loc: tuple = ()) -> tuple | None:
    """The location of the first key in `data` (and its nested sections) that `model` has no field for."""
    fields = {key: field for name, field in model.model_fields.items() for key in {name, field.alias or name}}
    for key, value in data.items():
        if key not in fields:
            return (*loc, key)
        section = _section_model(fields[key].annotation)
        if section is not None and isinstance(value, dict) and (found := unknown_field(section, value, (*loc, key))):
            return found
    return None


def parse_spec(spec: object) -> GenerationJobSpec:
    if not isinstance(spec, dict):
        raise InvalidInput("spec", "must be a mapping")
    if (loc := unknown_field(GenerationJobSpec, spec)) is not None:
        raise InvalidInput(field_path(loc), "unknown field (the GenerationJob schema has no such field)")
    try:
        return parse_operator_spec(spec, require_worker=False)
    except InvalidSpec as err:
        raise InvalidInput(err.field, err.detail) from None


def read_job_file(path: Path) -> dict:
    """A GenerationJob manifest (YAML or JSON) for running without a cluster."""
    try:
        job = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise InvalidInput("--job-file", f"cannot read {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise InvalidInput("--job-file", f"{path} is not YAML or JSON: {' '.join(str(err).split())}") from None
    if not isinstance(job, dict):
        raise InvalidInput("--job-file", f"{path} must hold one GenerationJob mapping")
    return job
