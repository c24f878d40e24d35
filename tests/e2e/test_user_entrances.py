"""What a new user does, as written: the examples applied unedited, and the `chitu` job commands of a CI step.

The session's dev cluster is a real cluster's twin: the chart's platform defaults (worker image, S3 output and
credentials Secret) and the tiny model pre-loaded at the examples' model.uri, so the files in examples/ run as
they are. Each test gets a fresh namespace holding the credentials Secret the defaults name (`s3-creds`), as a
platform team provides it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from chitu_api.names import GROUP, KIND, PLURAL, VERSION
from chitu_cli import exitcodes
from chitu_devcluster.paths import VENV_BIN
from chitu_devcluster.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
TIMEOUT = 600  # worker processes importing torch and generating on 2 CPU cores


def example_jobs() -> list[Path]:
    return [path for path in EXAMPLES if yaml.safe_load(path.read_text()).get("kind") == KIND]


@pytest.fixture
def user_namespace(cluster, k8s, namespace) -> str:
    """A fresh namespace with the S3 credentials Secret the platform defaults name (the namespace fixture's)."""
    return namespace


def chitu(cluster, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """`chitu ARGS` as a CI step runs it: the cluster's env (kubeconfig, S3 credentials), nothing else."""
    env = {**cluster.env(), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [sys.executable, "-m", "chitu_cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("example", example_jobs(), ids=lambda path: path.name)
def test_every_example_applies_unedited_and_succeeds(cluster, k8s, user_namespace, operator_process, example):
    kubectl = [str(VENV_BIN / "kubectl"), "--kubeconfig", str(cluster.state.kubeconfig), "-n", user_namespace]
    subprocess.run([*kubectl, "apply", "-f", str(example)], check=True, capture_output=True)
    name = yaml.safe_load(example.read_text())["metadata"]["name"]

    def finished():
        job = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, user_namespace, PLURAL, name)
        return job if job.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    job = wait_for(finished, f"{example.name} to finish", TIMEOUT, interval=0.5)
    assert job["status"]["phase"] == "Succeeded", (job["status"], cluster.pod_log(user_namespace, f"{name}-worker-0"))


def test_submit_wait_download_logs(cluster, user_namespace, operator_process, tmp_path):
    done = chitu(cluster, "submit", "examples/single-prompt.yaml", "--wait", "-n", user_namespace)
    assert done.returncode == exitcodes.SUCCEEDED, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["prompt-0000", "video"], ["prompt-0000", "metrics"]]
    assert all(line.split()[2].startswith("s3://") for line in lines)
    assert "cat-on-grass: job Succeeded" in done.stderr

    done = chitu(cluster, "download", "cat-on-grass", str(tmp_path / "out"), "-n", user_namespace)
    assert done.returncode == exitcodes.SUCCEEDED, done.stderr
    video, metrics = tmp_path / "out" / "prompt-0000" / "video.mp4", tmp_path / "out" / "prompt-0000" / "metrics.json"
    assert video.read_bytes()[4:8] == b"ftyp"  # an mp4
    assert json.loads(metrics.read_text())["params"]["prompt"] == "A cat walking on grass"
    digests = dict(reversed(line.split("  ", 1)) for line in done.stdout.splitlines())
    assert digests[str(video)] == hashlib.sha256(video.read_bytes()).hexdigest()

    done = chitu(cluster, "logs", "cat-on-grass", "--rank", "0", "-n", user_namespace)
    assert done.returncode == exitcodes.SUCCEEDED, done.stderr
    assert "prompt 0 done" in done.stdout

    done = chitu(cluster, "status", "cat-on-grass", "-n", user_namespace)
    assert "Phase:       Succeeded" in done.stdout and "video.mp4" in done.stdout
    listed = json.loads(chitu(cluster, "list", "-n", user_namespace, "-o", "json").stdout)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["cat-on-grass"]


def test_a_failing_job_ends_the_wait_within_30_s_with_its_reason(cluster, user_namespace, operator_process, tmp_path):
    manifest = yaml.safe_load((REPO / "examples" / "single-prompt.yaml").read_text())
    manifest["metadata"] = {"generateName": "missing-model-"}
    manifest["spec"]["model"]["uri"] = "s3://models/no-such-model"
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(manifest))
    started = time.monotonic()
    done = chitu(cluster, "submit", str(path), "--wait", "-n", user_namespace)
    assert done.returncode == exitcodes.JOB_FAILED, done.stderr
    assert time.monotonic() - started < 30
    assert "job Failed" in done.stderr and "s3://models/no-such-model" in done.stderr, done.stderr


def test_timeout_and_a_spec_the_apiserver_refuses_have_their_own_codes(
    cluster, user_namespace, operator_process, tmp_path
):
    done = chitu(
        cluster, "submit", "examples/two-prompts-teacache.yaml", "--wait", "--timeout", "1", "-n", user_namespace
    )
    assert done.returncode == exitcodes.TIMED_OUT and "timed out" in done.stderr, done.stderr
    assert chitu(cluster, "cancel", "cats-and-dogs", "-n", user_namespace).returncode == exitcodes.SUCCEEDED

    manifest = yaml.safe_load((REPO / "examples" / "single-prompt.yaml").read_text())
    manifest["metadata"]["name"] = "n" * 60  # pods <name>-worker-<rank> must fit a 63-character hostname
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(manifest))
    done = chitu(cluster, "submit", str(path), "-n", user_namespace)
    assert done.returncode == exitcodes.INVALID_SPEC
    assert "the cluster refused the job" in done.stderr and "metadata.name" in done.stderr
