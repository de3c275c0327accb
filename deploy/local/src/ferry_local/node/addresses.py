"""Loopback addresses for pods: 127.0.0.2 … 127.0.255.254 (Linux routes all of 127/8 to lo)."""

from __future__ import annotations

import ipaddress


class AddressPool:
    """Hands out a distinct 127.0.x.y per pod and takes it back when the pod goes."""

    def __init__(self) -> None:
        self._next = int(ipaddress.IPv4Address("127.0.0.2"))
        self._last = int(ipaddress.IPv4Address("127.0.255.254"))
        self._free: list[int] = []
        self._by_owner: dict[str, int] = {}

    def acquire(self, owner: str, preferred: str | None = None) -> str:
        """An address for ``owner``: its own if it has one, else ``preferred`` when free (a restarted
        node keeps the pod's reported IP), else the next free one."""
        if owner in self._by_owner:
            return str(ipaddress.IPv4Address(self._by_owner[owner]))
        if (wanted := self._claimable(preferred)) is not None:
            self._by_owner[owner] = wanted
            if wanted in self._free:
                self._free.remove(wanted)
            return str(ipaddress.IPv4Address(wanted))
        if self._free:
            value = self._free.pop(0)
        else:
            if self._next > self._last:
                raise RuntimeError("no loopback addresses left for pods")
            value = self._next
            self._next += 1
        self._by_owner[owner] = value
        return str(ipaddress.IPv4Address(value))

    def _claimable(self, preferred: str | None) -> int | None:
        if not preferred:
            return None
        try:
            value = int(ipaddress.IPv4Address(preferred))
        except ValueError:
            return None
        first = int(ipaddress.IPv4Address("127.0.0.2"))
        if not first <= value <= self._last or value in self._by_owner.values():
            return None
        while self._next <= value:  # skip past it, remembering the ones in between as free
            if self._next != value:
                self._free.append(self._next)
            self._next += 1
        return value

    def release(self, owner: str) -> None:
        if (value := self._by_owner.pop(owner, None)) is not None:
            self._free.append(value)
