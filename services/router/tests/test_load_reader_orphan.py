"""A load reader never outlives its router — also when the router dies while the reader is still
connecting to a NATS that does not answer (a bench left such readers running for good)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ferry_router.state.load_reader import FD_ENV, PARENT_ENV

# A stand-in router: starts the reader as LoadFeed does (pipe fd, parent pid) and exits at once.
ROUTER = f"""
import os, subprocess, sys
read_fd, write_fd = os.pipe()
env = {{**os.environ, "FERRY_NATS_URL": sys.argv[1], {FD_ENV!r}: str(write_fd)}}
env[{PARENT_ENV!r}] = str(os.getpid())
reader = subprocess.Popen(
    [sys.executable, "-m", "ferry_router.state.load_reader"], env=env, pass_fds=(write_fd,),
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
print(reader.pid, flush=True)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_reader_ends_when_its_router_died_before_nats_answered() -> None:
    unreachable = "nats://127.0.0.1:9"  # the discard port: refused, so nats-py keeps reconnecting
    started = subprocess.run(
        [sys.executable, "-c", ROUTER, unreachable], capture_output=True, text=True, timeout=60, check=True
    )
    pid = int(started.stdout.split()[-1])
    try:
        deadline = time.monotonic() + 20
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(pid), "the load reader outlived its router"
    finally:
        if alive(pid):
            os.kill(pid, 9)
