"""``sglang``: prefill and decode run concurrently, joined by a fresh ``bootstrap_room``.

Decode is relayed in the handler while prefill runs in the background; a decode failure cancels
prefill; a prefill failure fails the attempt (and is only logged when decode already answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from aiohttp import web

from ferry_router.pd.base import PDCall
from ferry_router.proxy import UpstreamError
from ferry_router.scheduler.framework import PDPair

log = logging.getLogger(__name__)


class SGLangConnector:
    name = "sglang"

    async def run(self, call: PDCall, pair: PDPair) -> web.StreamResponse:
        room = secrets.randbits(63)
        prefill = call.prefill_body()
        prefill["bootstrap_room"] = room
        body, injected = call.decode_body()
        body["bootstrap_room"] = room
        body["bootstrap_host"] = pair.prefill.pod.ip
        background = asyncio.create_task(call.prefill(pair.prefill, prefill))
        try:
            response = await call.decode(pair.decode, body, injected)
        except BaseException:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError, UpstreamError):
                await background
            raise
        try:
            await background
        except UpstreamError as exc:
            if response.prepared:
                log.error("sglang prefill failed after decode answered: %s", exc)
                return response
            raise
        return response
