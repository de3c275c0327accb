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

    def acquire(self, owner: str) -> str:
        if owner in self._by_owner:
            return str(ipaddress.IPv4Address(self._by_owner[owner]))
        if self._free:
            value = self._free.pop(0)
        else:
            if self._next > self._last:
                raise RuntimeError("no loopback addresses left for pods")
            value = self._next
            self._next += 1
        self._by_owner[owner] = value
        return str(ipaddress.IPv4Address(value))

    def release(self, owner: str) -> None:
        if (value := self._by_owner.pop(owner, None)) is not None:
            self._free.append(value)
