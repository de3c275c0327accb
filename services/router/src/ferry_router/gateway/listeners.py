"""One HTTP server per port of the Gateway listeners Ferry serves (Kthena's listener manager).

Level-triggered: after every change of the Gateway objects the wanted ports are recomputed and
servers are opened or closed to match (several listeners sharing a port share its server; the
Host header picks the listener). The router's own port is never opened twice: its server already
dispatches to the listeners on it. What happened to each port (bound, or why not) is kept for the
status report (:mod:`ferry_router.gateway.report`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web
from ferry_schemas.gateway.view import GatewayWorld
from ferry_schemas.runtime.tasks import cancel_all

from ferry_router.app import Router
from ferry_router.gateway.handler import GatewayHandler

log = logging.getLogger(__name__)


class ListenerManager:
    def __init__(
        self,
        router: Router,
        world: GatewayWorld,
        handler: GatewayHandler,
        *,
        host: str,
        main_port: int,
        drain_timeout: float = 5.0,
        reuse_port: bool = False,
    ) -> None:
        """``reuse_port``: several worker processes of one router share each port (SO_REUSEPORT)."""
        self.router = router
        self.world = world
        self.handler = handler
        self.host = host
        self.main_port = main_port
        self.drain_timeout = drain_timeout
        self.reuse_port = reuse_port
        self.runners: dict[int, web.ServerRunner] = {}
        self.ports: dict[int, str] = {}
        """port -> "" when bound, else the error that kept it closed (the router's own port included)."""
        self.changed: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        world.listeners.append(self._wake.set)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="gateway-listeners")
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
            except Exception:
                log.exception("gateway listener sync failed; retrying on the next change")

    async def sync(self) -> None:
        wanted = set(self.world.resolve().listeners_by_port)
        before = dict(self.ports)
        for port in sorted(set(self.runners) - wanted):
            runner = self.runners.pop(port)
            log.info("closing gateway listener port %d", port)
            await runner.cleanup()
        for port in sorted(set(self.ports) - wanted):
            self.ports.pop(port, None)
        for port in sorted(wanted - set(self.runners)):
            if port == self.main_port:
                self.ports[port] = ""
                continue
            try:
                self.runners[port] = await self._open(port)
                self.ports[port] = ""
                log.info("gateway listener on %s:%d", self.host, port)
            except OSError as exc:
                self.ports[port] = f"port {port} could not be bound: {exc.strerror or exc}"
                log.warning("gateway listener on %s:%d not opened: %s", self.host, port, exc)
        if self.ports != before:
            for callback in self.changed:
                callback()

    async def _open(self, port: int) -> web.ServerRunner:
        server = self.router.build_server(catch_all=self.handler.for_port(port, None), management=False)
        runner = web.ServerRunner(server, shutdown_timeout=self.drain_timeout)
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, self.host, port, backlog=4096, reuse_address=True, reuse_port=self.reuse_port
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_all([self._task])
        for runner in self.runners.values():
            await runner.cleanup()
        self.runners.clear()
