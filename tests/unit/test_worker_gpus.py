"""A GPU pod whose CUDA sees too few devices fails at once, unless the node declares its GPUs simulated."""

from __future__ import annotations

import pytest

from chitu_worker.gpus import SIMULATED_GPUS_ENV, GpusNotVisible, check_visible_gpus


def test_enough_visible_gpus_or_none_requested_pass():
    check_visible_gpus(2, 2, {})
    check_visible_gpus(0, 0, {})


def test_missing_gpus_fail_naming_the_field_and_the_likely_causes():
    with pytest.raises(GpusNotVisible, match=r"gpusPerPod is 2 but CUDA sees 0 GPU\(s\).*runtimeClassName"):
        check_visible_gpus(2, 0, {"CUDA_VISIBLE_DEVICES": ""})


def test_simulated_gpus_run_on_cpu():
    check_visible_gpus(2, 0, {SIMULATED_GPUS_ENV: "2"})
