"""A tiny scripted upstream for unit tests of the request pipeline (statuses, delays, bodies).

The integration tests use the real mock engine (``ferry-mock-engine``); this fake exists to force
the failure modes (5xx, hangs, broken streams) that a well-behaved engine never shows.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FakeEngine:
    host: str
    port: int
    status: int = 200
    delay: float = 0.0
    stream_delay: float = 0.0
    kv_params: Any = None
    seen: list[dict[str, Any]] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    scrapes: int = 0  # GET /metrics served
    _runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.seen.append(body)
        self.headers_seen.append({k.lower(): v for k, v in request.headers.items()})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.json_response({"error": {"message": f"engine says {self.status}"}}, status=self.status)
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for word in ("hel", "lo"):
                chunk = {
                    "id": "x",
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {"content": word}}],
                }
                await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                if self.stream_delay:
                    await asyncio.sleep(self.stream_delay)
            if (body.get("stream_options") or {}).get("include_usage"):
                await response.write(
                    b"data: " + orjson.dumps({"id": "x", "choices": [], "usage": usage}) + b"\n\n"
                )
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        answer: dict[str, Any] = {
            "id": "x",
            "model": body["model"],
            "choices": [{"index": 0, "text": "hello"}],
            "usage": usage,
            "engine": self.host,
        }
        if self.kv_params is not None:
            answer["kv_transfer_params"] = self.kv_params
        return web.json_response(answer)

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "served"}]})

    async def metrics(self, _: web.Request) -> web.Response:
        self.scrapes += 1
        return web.Response(text="# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 7\n")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
