"""`chitu-worker`: the command each GenerationJob pod runs.

    chitu-worker                   read the job named by CHITU_JOB_NAME/CHITU_JOB_NAMESPACE from the API
    chitu-worker --job-file FILE   run a GenerationJob manifest without a cluster (progress goes to the log)
        [--output DIR]             ... writing the outputs to DIR/prompt-NNNN/ instead of S3 (`chitu run`)

Exit codes (chitu_api.exitcodes): 0 done, 1 failed, 2 invalid input (the spec or the pod env; the one-line reason
names the field), 4 GPUs not visible, 5 outputs stored but not reported, 6 a peer rank went away.
On failure the reason is also written to $CHITU_TERMINATION_LOG (default /dev/termination-log).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from chitu_worker.env import PodEnv
from chitu_worker.failures import EXIT_FAILED, exit_code, one_line, write_termination_message
from chitu_worker.kube import custom_objects_api, fetch_job
from chitu_worker.launcher import RankFailure, launch
from chitu_worker.logs import configure_logging
from chitu_worker.manifest import read_job_file
from chitu_worker.plan import WorkerPlan, build_plan

logger = logging.getLogger("chitu_worker")


def load_plan(job_file: Path | None, output_dir: Path | None = None) -> WorkerPlan:
    env = PodEnv.from_environ()
    job = read_job_file(job_file) if job_file else fetch_job(custom_objects_api(), env)
    plan = build_plan(job, env, report_status=job_file is None, output_dir=output_dir)
    topology = plan.topology
    logger.info(
        "job %s (uid %s, attempt %d): %d prompts -> %s; node %d of %d, %d ranks here, world size %d",
        plan.job.name,
        plan.job.uid,
        env.restart_attempt,
        len(plan.prompts),
        plan.output_prefix,
        topology.node_rank,
        topology.nnodes,
        topology.nproc_per_node,
        topology.world_size,
    )
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chitu-worker", description="run this pod's part of a GenerationJob")
    parser.add_argument("--job-file", type=Path, help="a GenerationJob manifest (YAML or JSON): no cluster needed")
    parser.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="with --job-file: write the outputs to DIR/prompt-NNNN/ (no S3) instead of the manifest's output.uri",
    )
    args = parser.parse_args(argv)
    configure_logging("launcher")
    try:
        if args.output and not args.job_file:
            parser.error("--output needs --job-file (a pod writes where its GenerationJob says)")
        launch(load_plan(args.job_file, args.output))
        return 0
    except RankFailure as failure:  # the rank logged its traceback
        line, code = failure.line, failure.exit_code
        logger.error("worker failed (exit %d): %s", code, line)
    except Exception as exc:
        line, code = one_line(exc), exit_code(exc)
        logger.error("worker failed (exit %d): %s", code, line, exc_info=code == EXIT_FAILED)
    write_termination_message(line)
    return code
