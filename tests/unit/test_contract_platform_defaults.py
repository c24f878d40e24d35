"""Platform defaults (the chart's jobDefaults -> the operator's configuration) fill what a job's spec leaves out."""

from __future__ import annotations

import pytest
import yaml

from chitu_api.generationjob import InvalidSpec, parse_spec
from chitu_api.operatorconfig import InvalidConfig, parse_operator_config, with_platform_defaults

# What the chart renders with its default values plus an output (templates/_helpers.tpl "chitu.operatorConfig").
RENDERED = """
model: {volume: {}}
output: {credentialsSecretRef: {name: s3-creds}, endpoint: http://s3.storage:8333, region: "", uri: s3://videos/runs}
worker: {image: ghcr.io/chitu/worker:0.1.0, resources: {}}
"""
JOB = {"model": {"uri": "s3://models/wan2.1-t2v-1.3b"}, "prompt": "A cat walking on grass"}


def test_a_job_of_prompt_and_model_gets_image_output_and_credentials():
    config = parse_operator_config(yaml.safe_load(RENDERED))
    spec = parse_spec(with_platform_defaults(JOB, config))
    assert spec.worker.image == "ghcr.io/chitu/worker:0.1.0"
    assert (spec.output.uri, spec.output.endpoint, spec.output.region) == (
        "s3://videos/runs",
        "http://s3.storage:8333",
        None,
    )
    assert spec.output.credentials_secret_ref.name == "s3-creds"
    assert spec.model.volume is None  # "" and {} in the values mean: not set


def test_the_job_wins_field_by_field():
    config = parse_operator_config(yaml.safe_load(RENDERED))
    job = {
        **JOB,
        "output": {"uri": "s3://mine/x"},
        "worker": {"image": "mine:1", "resources": {"limits": {"cpu": "1"}}},
    }
    spec = parse_spec(with_platform_defaults(job, config))
    assert (spec.output.uri, spec.output.endpoint) == ("s3://mine/x", "http://s3.storage:8333")
    assert spec.worker.image == "mine:1" and spec.worker.resources == {"limits": {"cpu": "1"}}


def test_without_defaults_the_missing_field_is_named_with_its_chart_value():
    with pytest.raises(InvalidSpec, match=r"^spec\.worker\.image: .*jobDefaults\.worker\.image"):
        parse_spec(with_platform_defaults(JOB, parse_operator_config({})))


def test_a_bad_default_is_named():
    with pytest.raises(InvalidConfig, match=r"^operator config output\.uri: "):
        parse_operator_config({"output": {"uri": "http://not-s3"}})
