"""Detached service processes recorded in pid files, so another shell can find and stop them.

Each service runs in its own session: it survives the ``chitu-dev-cluster up`` command that started
it and a Ctrl-C in that terminal. A pid file records the pid and the process start time read from
/proc, so ``down`` never signals a recycled pid that now belongs to someone else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def _start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces: split after it
    return None if fields[0] == "Z" else int(fields[19])


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` exited (reaping it when it is our child); True if it did in time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:  # not our child: look at /proc (a zombie counts as gone)
            if _start_ticks(pid) is None:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_group(pgid: int, grace: float) -> None:
    """SIGTERM a process group, SIGKILL it after ``grace`` seconds if its leader is still there."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not wait_gone(pgid, grace):
        log.warning("process group %d ignored SIGTERM for %.0f s: SIGKILL", pgid, grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # also reaps stragglers the leader left behind
    wait_gone(pgid, 5)


def write_record(path: Path, pid: int, argv: Sequence[str]) -> None:
    """Remember a process so that another process can later check it is the same one and stop it."""
    path.write_text(
        json.dumps({"pid": pid, "start_ticks": _start_ticks(pid), "argv": list(argv), "started": time.time()})
    )


def is_ours(record: dict) -> bool:
    """The recorded process still runs (same pid and same start time: not a recycled pid)."""
    ticks = _start_ticks(record["pid"])
    return ticks is not None and ticks == record["start_ticks"]


def kill_recorded(path: Path) -> None:
    """SIGKILL the process group of a recorded process if it still runs, and forget it."""
    record = json.loads(path.read_text())
    alive = is_ours(record)
    if alive:
        log.info("SIGKILL process group %d (%s)", record["pid"], " ".join(record["argv"])[:200])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record["pid"], signal.SIGKILL)
    wait_gone(record["pid"], 5 if alive else 0)  # also reaps it if it died as our child
    path.unlink()


class ProcessTable:
    """The services of one dev cluster: ``pids/<name>.json`` holds pid, start time and argv."""

    def __init__(self, pid_dir: Path, log_dir: Path):
        self.pid_dir = pid_dir
        self.log_dir = log_dir

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen:
        """Start ``argv`` detached, logging to logs/<name>.log, and record it."""
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        write_record(self.pid_dir / f"{name}.json", proc.pid, argv)
        log.info("started %s (pid %d), log %s", name, proc.pid, self.log_path(name))
        return proc

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _records(self) -> list[tuple[str, dict]]:
        """Recorded services, newest first (the order to stop them in)."""
        if not self.pid_dir.is_dir():
            return []
        records = [(p.stem, json.loads(p.read_text())) for p in self.pid_dir.glob("*.json")]
        return sorted(records, key=lambda r: r[1]["started"], reverse=True)

    def running(self) -> dict[str, bool]:
        """Each recorded service and whether it is still alive."""
        return {name: is_ours(record) for name, record in self._records()}

    def is_running(self, name: str) -> bool:
        return self.running().get(name, False)

    def stop(self, name: str, grace: float = 10) -> None:
        path = self.pid_dir / f"{name}.json"
        if not path.exists():
            return
        record = json.loads(path.read_text())
        if is_ours(record):
            log.info("stopping %s (pid %d)", name, record["pid"])
            stop_group(record["pid"], grace)  # the pid leads its own session and process group
        else:
            wait_gone(record["pid"], 0)  # reap it if it died as our child
        path.unlink()

    def kill(self, name: str) -> None:
        """SIGKILL a service's process group at once (a crash, not a shutdown)."""
        path = self.pid_dir / f"{name}.json"
        if path.exists():
            kill_recorded(path)

    def stop_all(self, grace: float = 10) -> None:
        """Stop every recorded service, newest first (so the apiserver outlives its clients)."""
        for name, _ in self._records():
            self.stop(name, grace)
