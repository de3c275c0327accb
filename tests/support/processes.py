"""The machine's processes as tests see them (``/proc``), to act on exactly the ones a test owns.

Tests run in parallel workers, each with its own stack: matching processes by name alone
(``pkill -f``) would reach another worker's engines or API server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Process:
    """One running process: its pid and its command line."""

    pid: int
    argv: tuple[str, ...]

    def environ(self) -> dict[str, str]:
        """Its environment at start ({} once it is gone or not ours to read)."""
        try:
            raw = Path(f"/proc/{self.pid}/environ").read_bytes()
        except OSError:
            return {}
        pairs = (entry.decode(errors="replace").partition("=") for entry in raw.split(b"\0") if entry)
        return {name: value for name, _, value in pairs}


def processes() -> Iterator[Process]:
    """Every process whose command line can be read now (kernel threads and the gone skipped)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0]:
            yield Process(int(entry.name), tuple(a.decode(errors="replace") for a in argv if a))
