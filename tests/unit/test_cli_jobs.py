"""The `chitu` job commands without a cluster: manifest checks, how a wait ends, what status and list print."""

from __future__ import annotations

import datetime
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chitu_cli import exitcodes
from chitu_cli.errors import ManifestError
from chitu_cli.follow import Display, decide, follow
from chitu_cli.jobs import load_manifest
from chitu_cli.jobview import describe, failure_reason, list_table, output_lines

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.UTC)
MANIFEST = """\
apiVersion: chitu.dev/v1alpha1
kind: GenerationJob
metadata: {generateName: cat-}
spec:
  model: {uri: /models/tiny}
  prompt: A cat walking on grass
  output: {uri: s3://videos/runs}
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def job(phase: str, *, done: int = 0, total: int = 2, step: int = 0, conditions=(), outputs=()) -> dict:
    return {
        "metadata": {"name": "cats", "namespace": "default", "creationTimestamp": "2026-12-01T11:57:00Z"},
        "status": {
            "phase": phase,
            "restarts": 1,
            "worldSize": 2,
            "conditions": list(conditions),
            "outputs": list(outputs),
            "progress": {
                "percent": 50,
                "promptsDone": done,
                "promptsTotal": total,
                "currentStep": step,
                "totalSteps": 6,
            },
        },
    }


FAILED_CONDITION = {
    "type": "Failed",
    "status": "True",
    "reason": "RankFailed",
    "message": "rank 1: model not found",
    "lastTransitionTime": "2026-12-01T11:59:00Z",
}
OUTPUT = {
    "index": 0,
    "prompt": "A cat",
    "video": "s3://videos/runs/cats-1234abcd/prompt-0000/video.mp4",
    "metrics": "s3://videos/runs/cats-1234abcd/prompt-0000/metrics.json",
}


def test_a_manifest_without_worker_or_output_is_accepted_for_the_platform_defaults(tmp_path):
    manifest = load_manifest(write(tmp_path, MANIFEST))
    assert manifest["metadata"] == {"generateName": "cat-"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            MANIFEST.replace("prompt: A cat walking on grass", "prompt: A cat\n  generation: {frames: 80}"),
            "spec.generation.frames: must be 4k+1",
        ),
        (
            MANIFEST.replace("kind: GenerationJob", "kind: Job"),
            "apiVersion/kind must be chitu.dev/v1alpha1 / GenerationJob, got chitu.dev/v1alpha1 / Job",
        ),
        (MANIFEST.replace("metadata: {generateName: cat-}", "metadata: {}"), "metadata.name or metadata.generateName"),
        (MANIFEST + "---\n" + MANIFEST, "expected one GenerationJob document, found 2"),
        ("a: [", "not YAML"),
    ],
)
def test_an_invalid_manifest_names_the_file_and_the_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)


def test_submit_reports_an_invalid_spec_with_exit_2_before_touching_a_cluster(tmp_path):
    path = write(tmp_path, MANIFEST.replace("prompt: A cat walking on grass", "prompts: []"))
    done = subprocess.run(
        [sys.executable, "-m", "chitu_cli.jobs", "submit", path, "--wait"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"KUBECONFIG": "/nonexistent", "PATH": ""},
    )
    assert done.returncode == exitcodes.INVALID_SPEC
    assert done.stderr.startswith(f"error: {path}: spec.prompts: ") and done.stderr.count("\n") == 1


def test_checking_a_manifest_imports_neither_kubernetes_nor_boto3_nor_torch(tmp_path):
    path = write(tmp_path, MANIFEST)
    code = (
        f"import sys; from chitu_cli.jobs import load_manifest; load_manifest({path!r}); "
        "print(sorted({'kubernetes', 'boto3', 'torch', 'rich'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_wait_ends_at_the_first_deciding_state():
    assert decide(job("Running"), None, timed_out=False) is None
    failed = decide(job("Failed", conditions=[FAILED_CONDITION]), None, timed_out=False)
    assert failed.code == exitcodes.JOB_FAILED and failed.message == "job Failed: RankFailed: rank 1: model not found"
    assert decide(job("Succeeded", done=2), None, timed_out=True).code == exitcodes.SUCCEEDED
    assert decide(job("Running"), None, timed_out=True).code == exitcodes.TIMED_OUT
    assert decide(None, job("Running"), timed_out=False).code == exitcodes.CLUSTER_ERROR


def test_follow_returns_on_failure_without_reading_further_events(capsys):
    def events():
        yield job("Running", step=3)
        yield job("Failed", conditions=[FAILED_CONDITION])
        raise AssertionError("read past the deciding event")

    far = float("inf")
    with Display("cats", live=False) as display:
        outcome = follow(events(), job("Pending"), far, display)
    assert outcome.code == exitcodes.JOB_FAILED
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "cats: Pending 50% prompts 0/2 step 0/6",
        "cats: Running 50% prompts 0/2 step 3/6",
        "cats: Failed 50% prompts 0/2 step 0/6",
    ]


def test_follow_times_out_when_the_watch_ends_first():
    with Display("cats", live=False) as display:
        outcome = follow(iter([job("Running")]), job("Pending"), 0.0, display)
    assert outcome.code == exitcodes.TIMED_OUT and "still Running" in outcome.message


def test_outputs_print_one_uri_per_line():
    assert output_lines(job("Succeeded", outputs=[OUTPUT])) == [
        f"prompt-0000 video   {OUTPUT['video']}",
        f"prompt-0000 metrics {OUTPUT['metrics']}",
    ]


def test_failure_reason_falls_back_to_the_message():
    failed = job("Failed")
    failed["status"]["message"] = "deadline exceeded"
    assert failure_reason(failed) == "deadline exceeded"


def test_list_is_a_kubectl_like_table():
    assert list_table([job("Running", done=1)], all_namespaces=True, now=NOW).splitlines() == [
        "NAMESPACE   NAME   PHASE     PROGRESS   PROMPTS   RESTARTS   AGE",
        "default     cats   Running   50%        1/2       1          3m",
    ]
    assert list_table([], all_namespaces=False) == "No GenerationJobs found."


def test_status_shows_reason_conditions_outputs_and_pods():
    pod = {
        "metadata": {"name": "cats-worker-0", "labels": {"chitu.dev/restart-attempt": "1"}},
        "status": {"phase": "Failed"},
        "spec": {"nodeName": "dev-node"},
    }
    text = describe(job("Failed", conditions=[FAILED_CONDITION], outputs=[OUTPUT]), [pod], now=NOW)
    assert "Phase:       Failed (RankFailed: rank 1: model not found)" in text
    assert "Restarts:    1" in text
    assert "Failed   True     RankFailed   60s   rank 1: model not found" in text
    assert f"video   {OUTPUT['video']}" in text
    assert "cats-worker-0   Failed   1                 dev-node" in text
