"""Starting and stopping the stack's processes, and recognising exactly the ones we started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Processes started by this interpreter: their exit status is authoritative (and reaps zombies)."""


@dataclass
class ManagedProcess:
    """A process we started: its pid, its command line and its log file."""

    name: str
    pid: int
    argv: list[str]
    log: str

    def alive(self) -> bool:
        """True only if ``pid`` is still the process we started (pids are reused)."""
        if (child := _CHILDREN.get(self.pid)) is not None:
            return child.poll() is None
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                os.waitpid(self.pid, os.WNOHANG)
                return False
        except (OSError, IndexError, ChildProcessError):
            pass
        return bool(cmdline) and cmdline[0].decode(errors="replace") == self.argv[0]

    def exit_code(self) -> int | None:
        """The exit status of a process this interpreter started and that has ended, else None."""
        child = _CHILDREN.get(self.pid)
        return None if child is None else child.poll()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; never touches a reused pid."""
        stop_all([self], timeout)


def stop_all(processes: Iterable[ManagedProcess], timeout: float = 15.0) -> None:
    """SIGTERM every process at once, then SIGKILL those left after ``timeout`` seconds. Stopping many
    one after another (fifty engines of a node, 5 s each) outlasts whoever stops their parent, which
    then kills the parent and orphans the rest."""
    alive = [process for process in processes if process.alive()]
    for process in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [process for process in alive if process.alive()]
    for process in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
    if alive:
        time.sleep(0.2)


def spawn(name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> ManagedProcess:
    """Start ``argv`` in its own session (it outlives ``make up``), logging to ``<log_dir>/<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    _CHILDREN[proc.pid] = proc
    return ManagedProcess(name=name, pid=proc.pid, argv=argv, log=str(log_path))


def tail(path: str, lines: int = 30) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
