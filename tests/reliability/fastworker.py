"""A worker pod that does everything chitu-worker does except generate, for the tests and the load benchmark that
measure the operator and the worker's I/O rather than the engine.

A GenerationJob runs it through ``spec.worker.command: [python, <this file>]``. Rank 0 builds the real WorkerPlan
from its job (chitu_worker.kube, chitu_worker.plan), skips prompts already complete in S3, and for each other
prompt writes a small stand-in video and metrics.json, uploads them with the worker's own S3Store and
outputs.upload (so S3 faults meet the worker's retries), and reports through the worker's ProgressReporter.
Other ranks wait as long as rank 0 works. Knobs (env): SECONDS_PER_PROMPT (default 0.2); RUNS, a file that
gets one line ``<uid> <prompt index>`` per prompt generated and stored, so a test can count prompts generated
twice (a prompt cut off midway by a fault is redone, and not counted); VIDEO_BYTES, the stand-in video's size
(default 4096); FINISH_SECONDS, how long the final status is retried (default the worker's); HANG_AT_PROMPT, a
hung rank: rank 0 of the first attempt stops for good (alive, silent) before generating that prompt.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from chitu_worker import outputs
from chitu_worker.diskspace import writing_into
from chitu_worker.env import PodEnv
from chitu_worker.failures import exit_code, one_line, write_termination_message
from chitu_worker.kube import custom_objects_api, fetch_job, status_publisher
from chitu_worker.plan import build_plan
from chitu_worker.progress import FINISH_SECONDS, ProgressReporter
from chitu_worker.storage import S3Store


@dataclass
class StandIn:
    """What outputs.upload reads from a GenerationResult."""

    video_path: Path
    metrics_path: Path
    extra_paths: list[Path] = field(default_factory=list)


def generate(index: int, workdir: Path, seconds: float) -> StandIn:
    time.sleep(seconds)
    video, metrics = workdir / "video.mp4", workdir / "metrics.json"
    video.write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(int(os.environ.get("VIDEO_BYTES", "4096"))))
    metrics.write_text(json.dumps({"prompt_index": index, "stand_in": True}))
    return StandIn(video, metrics)


def run() -> None:
    env = PodEnv.from_environ()
    api = custom_objects_api()
    plan = build_plan(fetch_job(api, env), env, report_status=True)
    seconds = float(os.environ.get("SECONDS_PER_PROMPT", "0.2"))
    if plan.topology.node_rank != 0:
        time.sleep(seconds * len(plan.prompts))
        return
    store = S3Store.connect(plan.s3)
    pending = [i for i in range(len(plan.prompts)) if not outputs.is_complete(store, plan.prompt_prefix(i))]
    reporter = ProgressReporter(
        status_publisher(api, plan.job),
        prompts_total=len(plan.prompts),
        steps_per_prompt=plan.prompts[0].num_inference_steps,
        outputs=plan.existing_outputs,
    )
    done = [i for i in range(len(plan.prompts)) if i not in pending]
    reporter.begin(outputs.status_entry(i, plan.prompts[i].prompt, plan.prompt_prefix(i)) for i in done)
    hang_at = int(os.environ.get("HANG_AT_PROMPT", "-1")) if env.restart_attempt == 0 else -1
    for index in pending:
        while index == hang_at:  # a hung rank: alive, silent, until the operator deletes its pod
            time.sleep(3600)
        with tempfile.TemporaryDirectory() as workdir, writing_into(Path(tempfile.gettempdir()), f"prompt {index}"):
            prefix = plan.prompt_prefix(index)
            policies = outputs.upload(store, prefix, generate(index, Path(workdir), seconds))
        if runs := os.environ.get("RUNS"):
            with open(runs, "a") as record:
                record.write(f"{plan.job.uid} {index}\n")
        reporter.prompt_done(outputs.status_entry(index, plan.prompts[index].prompt, prefix, policies))
    reporter.finish(float(os.environ.get("FINISH_SECONDS", FINISH_SECONDS)))


def main() -> int:
    try:
        run()
    except Exception as exc:
        write_termination_message(one_line(exc))
        print(one_line(exc), file=sys.stderr)
        return exit_code(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
