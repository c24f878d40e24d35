"""One rank of a job's gang: claim work -> generate -> upload -> report.

Every rank takes part in every prompt (the engine splits one video's work across the gang: CFG branches, context
parallelism), so all ranks must run the same prompts in the same order. Rank 0 alone decides which prompts are
still to do, from what storage holds, and broadcasts the list: ranks that each asked S3 could disagree (a
transient error on one of them) and then deadlock in the engine's collectives. Rank 0 alone uploads and
reports; the engine, for its part, writes outputs only on rank 0.

Run by the launcher in-process (world size 1) or as `python -m chitu_worker.rank --plan FILE` under torchrun.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist

from chitu_diffusion.engines import check_launch, load_engine
from chitu_diffusion.parallel.launch import DistributedEnv, init_distributed, leave_gang
from chitu_worker import outputs
from chitu_worker.compilecache import shared_compile_cache
from chitu_worker.diskspace import writing_into
from chitu_worker.failures import EXIT_FAILED, EXIT_PEER_LOST, exit_code, one_line, write_rank_error_file
from chitu_worker.filestore import RoutedStore
from chitu_worker.kube import custom_objects_api, status_publisher
from chitu_worker.logs import configure_logging
from chitu_worker.modelcache import resolve_model
from chitu_worker.plan import WorkerPlan
from chitu_worker.progress import ProgressReporter, log_publisher
from chitu_worker.storage import ObjectStore, S3Store

logger = logging.getLogger("chitu_worker.rank")  # not __main__ under `python -m`

VIDEO_STEM = "video"  # the engine writes <stem>.mp4
SINGLE = DistributedEnv(rank=0, world_size=1, local_rank=0)
T = TypeVar("T")


def rank_env() -> DistributedEnv:
    """This process's place in the gang (torchrun's variables; none when the launcher runs it in-process)."""
    return DistributedEnv.from_env() or SINGLE


@contextmanager
def gang(env: DistributedEnv, plan: WorkerPlan) -> Iterator[None]:
    """The default process group over all ranks, joined as the engine joins it (it reuses this one)."""
    if env.world_size == 1:
        yield
        return
    init_distributed(env, plan.engine.diffusion.resolved_device(torch.cuda.is_available()))
    yield
    leave_gang()  # only after success: a failed rank exits and torchrun tears the rest down


def from_leader(env: DistributedEnv, compute: Callable[[], T]) -> T:
    """`compute()` on rank 0, its result on every rank."""
    if env.world_size == 1:
        return compute()
    box = [compute() if env.rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def pending_prompts(plan: WorkerPlan, store: ObjectStore) -> list[int]:
    """Prompt indices whose outputs are not all in storage (a restarted gang resumes after the done ones)."""
    return [index for index in range(len(plan.prompts)) if not outputs.is_complete(store, plan.prompt_prefix(index))]


def make_reporter(plan: WorkerPlan, pending: list[int]) -> ProgressReporter:
    publish = status_publisher(custom_objects_api(), plan.job) if plan.report_status else log_publisher
    reporter = ProgressReporter(
        publish,
        prompts_total=len(plan.prompts),
        steps_per_prompt=plan.prompts[0].num_inference_steps,
        outputs=plan.existing_outputs,
    )
    # Prompts stored by an earlier attempt; an entry that attempt already listed is kept as it was.
    done = [index for index in range(len(plan.prompts)) if index not in pending]
    reporter.begin(outputs.status_entry(i, plan.prompts[i].prompt, plan.prompt_prefix(i)) for i in done)
    return reporter


def run_rank(plan: WorkerPlan, env: DistributedEnv) -> None:
    leader = env.rank == 0
    store = RoutedStore(lambda: S3Store.connect(plan.s3))  # a local run's folder, or S3 (connected when first used)
    check_launch(plan.engine, plan.prompts[0].cache.strategy)  # before any download or load
    with gang(env, plan):
        if leader:  # parts of an upload an earlier attempt was cut off in: no object, only cost
            store.abort_incomplete_uploads(plan.output_prefix)
        pending = from_leader(env, lambda: pending_prompts(plan, store))
        reporter = make_reporter(plan, pending) if leader else None
        if not pending:
            logger.info("all %d prompts are already complete in %s", len(plan.prompts), plan.output_prefix)
            if reporter is not None:
                reporter.finish()
            return
        logger.info("prompts to generate: %s of %d", pending, len(plan.prompts))
        model_dir = resolve_model(plan.model_uri, store, plan.model_cache)
        engine = load_engine(model_dir, plan.engine)
        compile_cache = (
            shared_compile_cache(plan.model_uri, model_dir, engine.compile_cache_folder, plan.s3) if leader else None
        )
        for index in pending:
            params = plan.prompts[index]
            with (
                tempfile.TemporaryDirectory(prefix=f"chitu-prompt-{index:04d}-") as workdir,
                writing_into(Path(tempfile.gettempdir()), f"the outputs of prompt {index}"),
            ):
                result = engine.generate(params, workdir, VIDEO_STEM, on_step=reporter.step if leader else None)
                if leader:  # the engine writes files on rank 0 only
                    prefix = plan.prompt_prefix(index)
                    policies = outputs.upload(store, prefix, result)
                    reporter.prompt_done(outputs.status_entry(index, params.prompt, prefix, policies))
            logger.info("prompt %d done", index)
            if compile_cache is not None:  # what this prompt compiled, for the model's next pods
                compile_cache.upload_new()
        if reporter is not None:
            reporter.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chitu_worker.rank", description="one rank of a Chitu worker")
    parser.add_argument("--plan", required=True, type=Path, help="the launcher's WorkerPlan (JSON)")
    args = parser.parse_args(argv)
    env = rank_env()
    configure_logging(f"rank {env.rank}")
    try:
        run_rank(WorkerPlan.model_validate_json(args.plan.read_text()), env)
    except Exception as exc:
        line, code = one_line(exc, prefix=f"rank {env.rank}: "), exit_code(exc)
        # A crash's traceback, and a lost peer's: it shows which collective broke.
        logger.error("%s", line, exc_info=code in (EXIT_FAILED, EXIT_PEER_LOST))
        write_rank_error_file(line)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
