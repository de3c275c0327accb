"""Waiting for a started process to answer, with its log in the error when it does not."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from pathlib import Path

from ferry_local.processes import ManagedProcess, tail


class StackError(RuntimeError):
    """A part of the stack did not come up; the message includes the end of its log."""


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


LISTEN_PORTS = range(10000, 32768)
"""Where a port for a process to listen on is picked: below Linux's default ephemeral range
(32768-60999), which the kernel hands to every outgoing connection, so a port picked here cannot be
taken by a connection between the pick and the process's own bind (a router's probe port was, in CI)."""


def _ephemeral_ports() -> range:
    with contextlib.suppress(OSError, ValueError):
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    return range(32768, 61000)


CLAIM_TTL = 300.0
"""Seconds a port handed out by :func:`free_port` stays claimed against every other process of this
machine: between the pick and the bind of the process it is for (a stack starts in under a minute)."""


def claim_port(port: int, claims: Path | None = None) -> bool:
    """Claim ``port`` for this pick, machine-wide: False when another pick (of any process: two
    stacks starting at once, the test workers) claimed it less than :data:`CLAIM_TTL` ago. A port that
    is free when checked can still be picked twice before either process binds it."""
    directory = claims or Path(tempfile.gettempdir()) / f"ferry-ports-{os.getuid()}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / str(port)
    for _ in range(2):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            return True
        except FileExistsError:
            try:
                if time.time() - path.stat().st_mtime < CLAIM_TTL:
                    return False
                path.unlink()  # an old claim: of two racing for it, one creates it again
            except FileNotFoundError:
                pass
    return False


def free_port() -> int:
    """A port on 127.0.0.1 that is free now and not handed out to another process lately
    (:func:`claim_port`), outside the ephemeral range when there is room."""
    ephemeral = _ephemeral_ports()
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)
        if port in ephemeral or not claim_port(port):
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # the ephemeral range covers every candidate: let the kernel pick
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_run(length: int, avoid: Collection[int] = ()) -> int:
    """The first of ``length`` consecutive free ports, none of them in ``avoid`` (for a process that
    takes ``port + i`` for its i-th worker)."""
    for _ in range(100):
        first = free_port()
        if first in avoid:
            continue
        ports = range(first, first + length)
        if ports[-1] > 65535 or any(port in avoid or not claim_port(port) for port in ports[1:]):
            continue
        with contextlib.ExitStack() as held:
            try:
                for port in ports:
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
            return first
    raise RuntimeError(f"no {length} consecutive free ports found")


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        return int(response.status) == 200


def wait_until_ready(what: str, proc: ManagedProcess, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StackError(f"{what} exited during start-up; last lines of {proc.log}:\n{tail(proc.log)}")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ssl.SSLError):
            pass
        time.sleep(0.2)
    raise StackError(
        f"{what} did not become ready in {timeout:.0f}s; last lines of {proc.log}:\n{tail(proc.log)}"
    )
