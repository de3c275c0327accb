"""Pods as the view holds them, and metric endpoints served over real HTTP on 127.0.0.x."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

Serve = Callable[[str, dict[str, str]], Awaitable[int]]


def pod(
    name: str,
    ip: str,
    serving: str = "ms",
    *,
    role: str = "leader",
    ready: bool = True,
    namespace: str = "ns",
    restarts: int = 0,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "modelserving.volcano.sh/name": serving,
                "modelserving.volcano.sh/entry": "true",
                "modelserving.volcano.sh/role": role,
                **(labels or {}),
            },
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "startTime": "2026-01-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "engine", "restartCount": restarts}],
        },
    }


@pytest.fixture
async def serve_metrics() -> AsyncIterator[Serve]:
    """``await serve(ip, {path: body})`` serves the bodies on ``ip`` and answers the port (shared)."""
    runners: list[web.AppRunner] = []
    port: list[int] = []

    async def serve(ip: str, bodies: dict[str, str]) -> int:
        app = web.Application()
        for path, body in bodies.items():

            async def answer(_: web.Request, body: str = body) -> web.Response:
                return web.Response(text=body)

            app.router.add_get(path, answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, ip, port[0] if port else 0)
        await site.start()
        if not port:
            port.append(int(site._server.sockets[0].getsockname()[1]))  # type: ignore[union-attr]
        runners.append(runner)
        return port[0]

    yield serve
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http
