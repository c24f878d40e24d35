"""The `chitu` job commands: run GenerationJobs on a cluster from a shell or a CI step, no kubectl needed.

    chitu submit FILE [--wait] [--timeout S]   create the job (name or generateName); --wait follows it
    chitu list [-A]                            jobs of the namespace (or of every namespace)
    chitu status NAME                          phase and reason, conditions, per-prompt outputs, restarts, pods
    chitu logs NAME [--rank N] [-f]            a worker pod's log
    chitu cancel NAME                          delete the job (its pods go with it)
    chitu download NAME DIR                    the outputs from S3, each file's SHA-256 verified
    chitu run FILE [--output DIR]              the manifest on this machine (no cluster; no S3 with --output)

The cluster is the current kubeconfig context (or the pod's service account inside a cluster); `-n` and
`--context` choose otherwise, as in kubectl, and so does `-o json|yaml`. A manifest is validated here, with the
same model the operator uses, before anything heavy is imported: a bad spec is reported in well under a second.
Exit codes: chitu_cli.exitcodes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from chitu_cli import exitcodes
from chitu_cli.errors import CommandError, ManifestError

DEFAULT_TIMEOUT = 3600.0


def load_manifest(path: str) -> dict:
    """One GenerationJob from a YAML/JSON file ("-" = stdin), its spec checked by the contract's model."""
    import yaml

    from chitu_api.generationjob import InvalidSpec, parse_spec
    from chitu_api.names import GROUP, KIND, VERSION

    where = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except OSError as err:
        raise ManifestError(f"{where}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ManifestError(f"{where}: not YAML: {err}") from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise ManifestError(f"{where}: expected one GenerationJob document, found {len(documents)} documents")
    manifest = documents[0]
    expected = (f"{GROUP}/{VERSION}", KIND)
    if (manifest.get("apiVersion"), manifest.get("kind")) != expected:
        raise ManifestError(
            f"{where}: apiVersion/kind must be {expected[0]} / {expected[1]}, got "
            f"{manifest.get('apiVersion')} / {manifest.get('kind')}"
        )
    meta = manifest.get("metadata") or {}
    if not (meta.get("name") or meta.get("generateName")):
        raise ManifestError(f"{where}: metadata.name or metadata.generateName is required")
    try:  # the pod template and the output may come from the platform defaults (chart values)
        parse_spec(manifest.get("spec") or {}, require_worker=False)
    except InvalidSpec as err:
        raise ManifestError(f"{where}: {err}") from None
    return manifest


def _connect(args: argparse.Namespace):
    from chitu_cli.kube import Cluster

    cluster = Cluster.connect(args.context)
    return cluster, args.namespace or cluster.default_namespace


def submit(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.file)
    from chitu_cli.follow import Display, follow
    from chitu_cli.jobview import dump, output_lines

    cluster, namespace = _connect(args)
    namespace = args.namespace or manifest.get("metadata", {}).get("namespace") or namespace
    created = cluster.create_job(namespace, manifest)
    name = created["metadata"]["name"]
    print(f"generationjob.chitu.dev/{name} created", file=sys.stderr if args.output or args.wait else sys.stdout)
    if not args.wait:
        if args.output:
            print(dump(created, args.output))
        return exitcodes.SUCCEEDED
    deadline = time.monotonic() + args.timeout
    with Display(name) as display:
        outcome = follow(cluster.watch_job(created, deadline), created, deadline, display)
    print(f"{name}: {outcome.message}", file=sys.stderr)
    if args.output and outcome.job is not None:
        print(dump(outcome.job, args.output))
    elif outcome.code == exitcodes.SUCCEEDED:
        print("\n".join(output_lines(outcome.job)))
    return outcome.code


def list_jobs(args: argparse.Namespace) -> int:
    from chitu_cli.jobview import as_list, dump, list_table

    cluster, namespace = _connect(args)
    jobs = cluster.list_jobs(None if args.all_namespaces else namespace)
    print(dump(as_list(jobs), args.output) if args.output else list_table(jobs, all_namespaces=args.all_namespaces))
    return exitcodes.SUCCEEDED


def status(args: argparse.Namespace) -> int:
    from chitu_api.names import JOB_NAME_LABEL
    from chitu_cli.jobview import describe, dump

    cluster, namespace = _connect(args)
    job = cluster.get_job(namespace, args.name)
    if args.output:
        print(dump(job, args.output))
    else:
        pods = cluster.list_pods(namespace, f"{JOB_NAME_LABEL}={args.name}")
        print(describe(job, sorted(pods, key=lambda pod: pod["metadata"]["name"])))
    return exitcodes.SUCCEEDED


def logs(args: argparse.Namespace) -> int:
    from chitu_api.names import WORKER_CONTAINER, pod_name

    cluster, namespace = _connect(args)
    cluster.get_job(namespace, args.name)  # "job not found" reads better than "pod not found"
    for chunk in cluster.pod_log(
        namespace, pod_name(args.name, args.rank), WORKER_CONTAINER, follow=args.follow, tail=args.tail
    ):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    return exitcodes.SUCCEEDED


def cancel(args: argparse.Namespace) -> int:
    cluster, namespace = _connect(args)
    cluster.delete_job(namespace, args.name)
    print(f"generationjob.chitu.dev/{args.name} deleted")
    return exitcodes.SUCCEEDED


def download(args: argparse.Namespace) -> int:
    from chitu_cli.download import download_outputs, s3_access
    from chitu_cli.jobview import outputs, progress

    cluster, namespace = _connect(args)
    job = cluster.get_job(namespace, args.name)
    entries = outputs(job)
    if not entries:
        print(f"{args.name}: no outputs yet (phase {progress(job).phase})", file=sys.stderr)
        return exitcodes.CLUSTER_ERROR
    access = s3_access(
        (job.get("spec") or {}).get("output") or {}, args.endpoint, lambda secret: cluster.secret(namespace, secret)
    )
    files = download_outputs(access, entries, Path(args.dir))
    for path, digest in files:
        print(f"{digest}  {path}")
    print(f"{args.name}: {len(files)} files of {len(entries)} prompts in {args.dir}, SHA-256 verified", file=sys.stderr)
    return exitcodes.SUCCEEDED


def run_local(args: argparse.Namespace) -> int:
    """The manifest on this machine through the worker's own launcher (one process per rank, gloo on CPU)."""
    manifest = load_manifest(args.file)
    from chitu_worker.main import main as worker_main  # torch: only now

    output = args.output or (None if _has_output(manifest) else f"out/{_job_name(manifest)}")
    argv = ["--job-file", args.file] + (["--output", output] if output else [])
    code = worker_main(argv)
    if code == exitcodes.SUCCEEDED and output:
        print(f"outputs in {output}", file=sys.stderr)
    return code


def _has_output(manifest: dict) -> bool:
    return bool(((manifest.get("spec") or {}).get("output") or {}).get("uri"))


def _job_name(manifest: dict) -> str:
    meta = manifest.get("metadata") or {}
    return meta.get("name") or meta["generateName"].rstrip("-")


def _add_cluster_options(parser: argparse.ArgumentParser, *, output: bool = True) -> None:
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's, else default)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    if output:
        parser.add_argument("-o", "--output", choices=("json", "yaml"), help="print the object(s) in this format")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the job commands to the `chitu` parser's subcommands (each sets `func`)."""

    def add(name: str, func, help_text: str, **kwargs) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text, epilog=exitcodes.EPILOG, **kwargs)
        parser.set_defaults(func=func)
        return parser

    parser = add("submit", submit, "create a GenerationJob from a manifest and optionally wait for it")
    parser.add_argument("file", help="GenerationJob manifest (YAML or JSON; - for stdin)")
    parser.add_argument(
        "--wait", action="store_true", help="follow the job; exit 0 only if it Succeeded (then print its output URIs)"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        help=f"with --wait: give up after this many seconds (default {DEFAULT_TIMEOUT:.0f})",
    )
    _add_cluster_options(parser)

    parser = add("list", list_jobs, "list GenerationJobs")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="jobs of every namespace")
    _add_cluster_options(parser)

    parser = add("status", status, "show a job: phase and reason, conditions, per-prompt outputs, restarts, pods")
    parser.add_argument("name")
    _add_cluster_options(parser)

    parser = add("logs", logs, "print the log of one worker pod of a job")
    parser.add_argument("name")
    parser.add_argument("--rank", type=int, default=0, help="the pod's rank (chitu.dev/rank; default 0, the leader)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing as the log grows")
    parser.add_argument("--tail", type=int, help="only the last N lines")
    _add_cluster_options(parser, output=False)

    parser = add("cancel", cancel, "delete a job (its pods and Service go with it)")
    parser.add_argument("name")
    _add_cluster_options(parser, output=False)

    parser = add("download", download, "copy a job's outputs from S3 into a folder, verifying SHA-256")
    parser.add_argument("name")
    parser.add_argument("dir", help="destination folder (one subfolder per prompt)")
    parser.add_argument("--endpoint", help="S3 endpoint (default: $CHITU_S3_ENDPOINT, else the job's)")
    _add_cluster_options(parser, output=False)

    parser = add("run", run_local, "run a manifest on this machine: no cluster, no S3 with --output")
    parser.add_argument("file", help="GenerationJob manifest (YAML or JSON)")
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="write outputs to DIR/prompt-NNNN/ (default: the manifest's S3 output.uri, with "
        "credentials from the environment; out/<name> when it names none)",
    )


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def run_command(args: argparse.Namespace) -> int:
    """Call the parsed command; an error a user can cause or meet becomes one line and its exit code."""
    try:
        return args.func(args)
    except CommandError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    """The job commands on their own (chitu_cli.main adds them to `chitu`)."""
    parser = argparse.ArgumentParser(prog="chitu", epilog=exitcodes.EPILOG)
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
