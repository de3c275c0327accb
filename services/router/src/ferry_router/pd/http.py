"""``http`` (and ``lmcache``): prefill to completion, discard its answer, then decode."""

from __future__ import annotations

from aiohttp import web

from ferry_router.pd.base import PDCall
from ferry_router.scheduler.framework import PDPair


class HTTPConnector:
    def __init__(self, name: str = "http") -> None:
        self.name = name

    async def run(self, call: PDCall, pair: PDPair) -> web.StreamResponse:
        await call.prefill(pair.prefill, call.prefill_body())
        body, injected = call.decode_body()
        return await call.decode(pair.decode, body, injected)
