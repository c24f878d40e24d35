"""The docs cannot drift: every command block of README.md and docs/*.md fenced as ```bash runnable runs here.

Blocks of one file run in order in one bash process (`set -euo pipefail`), from the repository root, as a reader
would type them, with the venv first on PATH and a dev cluster state folder of their own (CHITU_DEV_CLUSTER_DIR),
so `chitu-dev-cluster up` in a doc never meets the session's cluster or a developer's. A file's blocks end with
`chitu-dev-cluster down` when they started one; the test stops it anyway if a block failed first.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
RUNNABLE = re.compile(r"^```bash runnable[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
TIMEOUT = 900  # a doc may build a tiny model, start a dev cluster and run a job on 2 CPU cores


def runnable_blocks(markdown: str) -> list[str]:
    """The bodies of the ```bash runnable fences, in order (other fences are examples, not run)."""
    return [match.group(1) for match in RUNNABLE.finditer(markdown)]


def documents() -> list[Path]:
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return [path for path in docs if runnable_blocks(path.read_text())]


def test_runnable_fences_are_found_and_others_are_not():
    text = "```bash runnable\necho one\n```\n```bash\necho never\n```\n```bash runnable\necho two\n```\n"
    assert runnable_blocks(text) == ["echo one\n", "echo two\n"]


@pytest.mark.parametrize("doc", documents(), ids=lambda path: str(path.relative_to(REPO)))
def test_runnable_blocks_of_a_doc_succeed(doc: Path, tmp_path: Path):
    script = "set -euo pipefail\n" + "\n".join(runnable_blocks(doc.read_text()))
    state = tmp_path / "dev-cluster"
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "CHITU_DEV_CLUSTER_DIR": str(state),
        "HOME": os.environ.get("HOME", str(tmp_path)),
    }
    try:
        done = subprocess.run(
            ["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    finally:
        if state.exists():
            subprocess.run(
                [str(VENV_BIN / "chitu-dev-cluster"), "down", "--state-dir", str(state)],
                capture_output=True,
                check=False,
            )
    assert done.returncode == 0, f"{doc.name}: exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
