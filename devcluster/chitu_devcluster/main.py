"""``chitu-dev-cluster up|down|env|status``: the hermetic cluster from a shell.

``python -m chitu_devcluster`` is the same command. Progress goes to stderr so ``env``'s stdout can be eval'ed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .cluster import DevCluster
from .kueue import start_kueue
from .nodeagent import GPU_RESOURCE, NodeConfig
from .paths import DEFAULT_STATE_DIR

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="folder holding kubeconfig, s3.env, env.sh, pids and logs (default: %(default)s)",
    )
    parser = argparse.ArgumentParser(prog="chitu-dev-cluster", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", parents=[common], help="start the control plane, node agent, S3 (and operator)")
    up.add_argument("--no-operator", action="store_true", help="do not run chitu-operator")
    up.add_argument("--kueue", action="store_true", help="also run Kueue (built from its Go module; docs/kueue.md)")
    up.add_argument("--gpus", type=int, default=NodeConfig.gpus, help=f"{GPU_RESOURCE} capacity of the node")
    commands.add_parser("down", parents=[common], help="stop everything started by `up`")
    commands.add_parser("env", parents=[common], help="print shell exports: eval $(chitu-dev-cluster env)")
    commands.add_parser("status", parents=[common], help="which services run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        if args.command == "up":
            # The operator as a real cluster runs it: the chart's Deployment (its pod is a local process here).
            cluster = DevCluster.up(
                args.state_dir, with_operator=False, operator_pod=not args.no_operator, gpus=args.gpus
            )
            if args.kueue:
                start_kueue(cluster)
            print(
                f"dev cluster up; logs in {cluster.state.logs}\n"
                f"use it with: eval $(chitu-dev-cluster env{_state_flag(args)})",
                file=sys.stderr,
            )
        elif args.command == "down":
            DevCluster(args.state_dir).down()
        elif args.command == "env":
            sys.stdout.write(DevCluster(args.state_dir).env_script())
        else:
            services = DevCluster(args.state_dir).status()
            if not services:
                print(f"no dev cluster in {args.state_dir}")
            for name, ok in services.items():
                print(f"{name:28} {'ok' if ok else 'DOWN'}")
            return 0 if services and all(services.values()) else 1
    except (RuntimeError, OSError) as err:
        print(f"chitu-dev-cluster {args.command}: {err}", file=sys.stderr)
        return 1
    return 0


def _state_flag(args: argparse.Namespace) -> str:
    return "" if args.state_dir == DEFAULT_STATE_DIR else f" --state-dir {args.state_dir}"
