"""Loopback addresses for pods: 127.0.0.2 … 127.0.255.254 (Linux routes all of 127/8 to lo).

Several local nodes (several stacks, several test runs) share one machine and one loopback range,
so an address is handed to a pod only when

* this node holds the machine-wide lock of that address (an ``flock`` on a file in a directory
  every node on the machine uses; the kernel drops it when the node dies), and
* nothing listens on it: no listening socket bound to that exact address (``/proc/net/tcp``), and
  no answer on the pod's port (a connect probe, for listeners the table does not show).

An address that fails either test is skipped, never taken over; released addresses are probed
again before they are handed out anew.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

FIRST = int(ipaddress.IPv4Address("127.0.0.2"))
LAST = int(ipaddress.IPv4Address("127.0.255.254"))
LOCK_DIR_ENV = "FERRY_NODE_ADDRESS_LOCKS"
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def default_lock_dir() -> Path:
    """One directory for every local node on this machine (``FERRY_NODE_ADDRESS_LOCKS`` overrides)."""
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "ferry-local-node-addresses")


def listening_addresses(tables: tuple[str, ...] = ("/proc/net/tcp",)) -> set[str]:
    """IPv4 addresses with at least one listening TCP socket bound to them specifically."""
    found: set[str] = set()
    for table in tables:
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[3] == _LISTEN:
                    hex_ip = fields[1].split(":")[0]
                    found.add(str(ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(hex_ip), "little"))))
    return found


def answers(ip: str, port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts a TCP connection on ``ip:port``."""
    with socket.socket() as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((ip, port))
        except OSError:
            return False
        return True


class AddressPool:
    """Hands out a distinct, unused 127.0.x.y per pod and takes it back when the pod goes."""

    def __init__(
        self,
        lock_dir: Path | None = None,
        *,
        in_use: Callable[[], set[str]] = listening_addresses,
        probe: Callable[[str, int], bool] = answers,
    ) -> None:
        self._lock_dir = lock_dir or default_lock_dir()
        self._lock_dir.mkdir(parents=True, exist_ok=True)
        self._in_use = in_use
        self._probe = probe
        self._by_owner: dict[str, int] = {}
        self._locks: dict[int, int] = {}  # address → open lock file descriptor

    def acquire(self, owner: str, port: int | None = None, preferred: str | None = None) -> str:
        """An address for ``owner``: its own if it has one, else ``preferred`` when it is usable (a
        restarted node keeps the pod's reported IP), else the lowest usable one."""
        if owner in self._by_owner:
            return str(ipaddress.IPv4Address(self._by_owner[owner]))
        listening = self._in_use()
        candidates = self._preferred(preferred)
        for value in [*candidates, *range(FIRST, LAST + 1)]:
            if value in self._locks or str(ipaddress.IPv4Address(value)) in listening:
                continue
            if not self._lock(value):
                continue
            ip = str(ipaddress.IPv4Address(value))
            if port is not None and self._probe(ip, port):
                self._unlock(value)  # someone else's server answers there: leave it alone
                continue
            self._by_owner[owner] = value
            return ip
        raise RuntimeError("no unused loopback addresses left for pods")

    @staticmethod
    def _preferred(preferred: str | None) -> list[int]:
        try:
            value = int(ipaddress.IPv4Address(preferred or ""))
        except ValueError:
            return []
        return [value] if FIRST <= value <= LAST else []

    def _lock(self, value: int) -> bool:
        path = self._lock_dir / f"{ipaddress.IPv4Address(value)}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._locks[value] = fd
        return True

    def _unlock(self, value: int) -> None:
        if (fd := self._locks.pop(value, None)) is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def release(self, owner: str) -> None:
        if (value := self._by_owner.pop(owner, None)) is not None:
            self._unlock(value)

    def close(self) -> None:
        for owner in list(self._by_owner):
            self.release(owner)
