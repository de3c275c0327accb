"""``nixl`` and ``mooncake``: prefill asks for remote decode; decode gets its ``kv_transfer_params``."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from ferry_router.pd.base import PDCall
from ferry_router.scheduler.framework import PDPair

log = logging.getLogger(__name__)

PREFILL_PARAMS = {"do_remote_decode": True, "do_remote_prefill": False}


class NIXLConnector:
    def __init__(self, name: str = "nixl") -> None:
        self.name = name

    async def run(self, call: PDCall, pair: PDPair) -> web.StreamResponse:
        prefill = call.prefill_body()
        prefill["kv_transfer_params"] = dict(PREFILL_PARAMS)
        answer = await call.prefill(pair.prefill, prefill)
        params = None
        try:
            parsed = orjson.loads(answer)
            params = parsed.get("kv_transfer_params") if isinstance(parsed, dict) else None
        except orjson.JSONDecodeError:
            pass
        if params is None:
            log.warning(
                "prefill on %s returned no kv_transfer_params; decode will recompute", pair.prefill.key
            )
        body, injected = call.decode_body()
        body["kv_transfer_params"] = params
        return await call.decode(pair.decode, body, injected)
