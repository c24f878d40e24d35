"""The `chitu` console script: one command line over the engine's commands and the job commands.

    chitu --version
    chitu generate | make-tiny-model | make-random-model | calibrate-teacache ...   (chitu_diffusion.commands)
    chitu submit | list | status | logs | cancel | download ...                     (chitu_cli.jobs)

A command group is a module with `register(subparsers)`, which adds its commands, and `run_command(args) -> exit
code`, which runs the parsed one. A group's module level imports only light modules, so `chitu --help` and a
usage error cost no torch and no Kubernetes client; what a command needs is imported when it runs. An install
without a command's dependencies (`chitu[operator]` has no torch) gets one line naming the extra to install
instead of a traceback. The hermetic dev cluster has its own script, `chitu-dev-cluster`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

#: Exit code when a command's dependencies are not installed.
MISSING_DEPENDENCY = 1


@dataclass(frozen=True)
class CommandGroup:
    module: str  # has register(subparsers) and run_command(args)
    extra: str  # the pip extra that installs what its commands import


GROUPS = (
    CommandGroup("chitu_diffusion.commands", extra="engine"),
    CommandGroup("chitu_cli.jobs", extra="cli"),
)


def build_parser() -> argparse.ArgumentParser:
    """`chitu` with every group's commands; each command's parser defaults name the group that runs it."""
    parser = argparse.ArgumentParser(prog="chitu", description="Chitu: Kubernetes-native batch video generation")
    parser.add_argument("--version", action=_PrintVersion, nargs=0, help="print chitu's version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        module = importlib.import_module(group.module)
        before = set(commands.choices)
        module.register(commands)
        for name in commands.choices.keys() - before:
            commands.choices[name].set_defaults(group=group, run_command=module.run_command)
    return parser


class _PrintVersion(argparse.Action):
    """argparse's "version" action, reading the installed version only when asked (importlib.metadata is slow)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import version

        print(f"{parser.prog} {version('chitu')}")
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return args.run_command(args)
    except ModuleNotFoundError as err:
        missing = (err.name or "").partition(".")[0]
        if not missing or missing.startswith("chitu"):
            raise  # our own code is missing or broken: show the real error
        extra = args.group.extra
        print(
            f"chitu {args.command}: error: needs {missing}, which is not installed: pip install 'chitu[{extra}]'",
            file=sys.stderr,
        )
        return MISSING_DEPENDENCY
