"""Tells the status service what this replica really serves (the Gateway ``Programmed`` condition).

The router holds no Kubernetes credentials (it is the internet-facing data plane); it puts a
:class:`ListenerReport` in the ``ferry_gateway_listeners`` KV bucket on every listener change and
every few seconds. Entries expire after ``LISTENER_REPORT_TTL``, so a replica that dies stops
counting and a Gateway nobody serves any more turns ``Programmed=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from ferry_schemas.bus import GATEWAY_LISTENERS_BUCKET, LISTENER_REPORT_TTL, ListenerReport, encode_token
from ferry_schemas.runtime.jetstream import key_value
from ferry_schemas.runtime.tasks import cancel_all
from nats.js import JetStreamContext

from ferry_router.gateway.listeners import ListenerManager

log = logging.getLogger(__name__)


def replica_name() -> str:
    return encode_token(f"{os.environ.get('POD_NAME') or socket.gethostname()}-{os.getpid()}")


class ListenerReporter:
    def __init__(
        self, js: JetStreamContext, manager: ListenerManager, address: str, interval: float | None = None
    ) -> None:
        self._js = js
        self._manager = manager
        self.address = address
        self.replica = replica_name()
        self.interval = interval or LISTENER_REPORT_TTL / 3
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        manager.changed.append(self._wake.set)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="gateway-listener-report")

    async def _loop(self) -> None:
        kv = None
        while True:
            try:
                if kv is None:
                    kv = await key_value(self._js, GATEWAY_LISTENERS_BUCKET, ttl=LISTENER_REPORT_TTL)
                report = ListenerReport(
                    replica=self.replica,
                    address=self.address,
                    ports={str(port): error for port, error in sorted(self._manager.ports.items())},
                )
                await kv.put(self.replica, report.to_bytes())
            except Exception as exc:  # NATS reconnecting: the next round tries again
                log.warning("listener report not written: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_all([self._task])  # its loop writes the KV: a request can swallow a cancel
        with contextlib.suppress(Exception):
            kv = await self._js.key_value(GATEWAY_LISTENERS_BUCKET)
            await kv.delete(self.replica)
