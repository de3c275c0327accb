"""``/healthz``, ``/readyz`` and Prometheus ``/metrics`` on a small aiohttp server."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

ReadyCheck = Callable[[], Awaitable[bool] | bool]

_STARTED: weakref.WeakSet[ProbeServer] = weakref.WeakSet()
"""The probe servers of this process that are serving."""


async def all_ready() -> bool:
    """True once this process serves probes and every probe server's readiness says ready."""
    servers = list(_STARTED)
    return bool(servers) and all([await server.is_ready() for server in servers])


class ProbeServer:
    """Serves liveness, readiness and metrics; readiness is whatever ``ready`` answers."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ready: ReadyCheck | None = None,
        registry: CollectorRegistry = REGISTRY,
        render_in_thread: bool = False,
    ) -> None:
        """``render_in_thread``: render ``/metrics`` on a worker thread, so a large exposition does
        not hold the event loop (the collectors must then tolerate running beside it)."""
        self.host = host
        self._render_in_thread = render_in_thread
        self.port = port
        self._ready = ready
        self._registry = registry
        self._runner: web.AppRunner | None = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def is_ready(self) -> bool:
        if self._ready is None:
            return True
        answer = self._ready()
        return answer if isinstance(answer, bool) else await answer

    async def _readyz(self, _: web.Request) -> web.Response:
        ok = await self.is_ready()
        return web.Response(text="ready\n" if ok else "not ready\n", status=200 if ok else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        if self._render_in_thread:
            body = await asyncio.to_thread(generate_latest, self._registry)
        else:
            body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> int:
        """Start serving; returns the bound port (useful when ``port`` is 0)."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/health", self._healthz)  # the path Kthena's runtime sidecar probes
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        _STARTED.add(self)
        return self.port

    async def stop(self) -> None:
        _STARTED.discard(self)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
