"""Prefill/decode engines check what each router connector sends (spec/router.md §13)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from ferry_mock_engine import MockEngine

EngineFactory = Callable[..., Awaitable[MockEngine]]
CHAT = [{"role": "user", "content": "explain PD"}]


def kv(connector: str, role: str) -> list[str]:
    return [
        "--served-model-name",
        "m",
        "--kv-transfer-config",
        json.dumps({"kv_connector": connector, "kv_role": role}),
    ]


async def post(http: aiohttp.ClientSession, engine: MockEngine, body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(f"{engine.url}/v1/chat/completions", json=body) as resp:
        return resp.status, await resp.json()


async def test_nixl_prefill_hands_params_to_decode(
    start_engine: EngineFactory, http: aiohttp.ClientSession
) -> None:
    prefill = await start_engine(*kv("NixlConnector", "kv_producer"), "--mock-id", "p0")
    decode = await start_engine(*kv("NixlConnector", "kv_consumer"), "--mock-id", "d0")
    prefill_body = {
        "model": "m",
        "messages": CHAT,
        "max_tokens": 1,
        "kv_transfer_params": {"do_remote_decode": True, "do_remote_prefill": False},
    }
    status, answer = await post(http, prefill, prefill_body)
    assert status == 200
    params = answer["kv_transfer_params"]
    assert params["do_remote_prefill"] is True
    assert params["remote_engine_id"] == "p0"
    assert (params["remote_host"], params["remote_port"]) == ("127.0.0.1", prefill.port)
    assert answer["usage"]["completion_tokens"] == 1

    status, answer = await post(
        http, decode, {"model": "m", "messages": CHAT, "stream": False, "kv_transfer_params": params}
    )
    assert status == 200
    assert answer["choices"][0]["message"]["content"].startswith("m answers")
    assert "kv_transfer_params" not in answer
    assert [(r.role, r.status) for r in prefill.requests] == [("prefill", 200)]
    assert [(r.role, r.status) for r in decode.requests] == [("decode", 200)]
    assert decode.requests[0].kv_transfer_params["remote_engine_id"] == "p0"


async def test_nixl_refusals(start_engine: EngineFactory, http: aiohttp.ClientSession) -> None:
    prefill = await start_engine(*kv("NixlConnector", "kv_producer"))
    decode = await start_engine(*kv("MooncakeConnectorV1", "kv_consumer"))
    # a prefill request without do_remote_decode
    status, answer = await post(http, prefill, {"model": "m", "messages": CHAT, "max_tokens": 1})
    assert status == 400
    assert "do_remote_decode" in answer["error"]["message"]
    # a decode request without params, with null params (router forwards null when prefill gave none)
    for params in ({}, {"kv_transfer_params": None}):
        status, answer = await post(http, decode, {"model": "m", "messages": CHAT, **params})
        assert status == 400
        assert "kv_transfer_params" in answer["error"]["message"]
    # params a prefill produced for another prompt
    _, produced = await post(
        http,
        prefill,
        {"model": "m", "messages": [{"role": "user", "content": "other"}], "max_tokens": 1,
         "kv_transfer_params": {"do_remote_decode": True, "do_remote_prefill": False}},
    )  # fmt: skip
    status, answer = await post(
        http, decode, {"model": "m", "messages": CHAT, "kv_transfer_params": produced["kv_transfer_params"]}
    )
    assert status == 400
    assert "different prompt" in answer["error"]["message"]


async def test_kv_both_decides_by_request(start_engine: EngineFactory, http: aiohttp.ClientSession) -> None:
    engine = await start_engine(*kv("NixlConnector", "kv_both"))
    status, _ = await post(http, engine, {"model": "m", "messages": CHAT})
    assert status == 200
    _, produced = await post(
        http,
        engine,
        {"model": "m", "messages": CHAT, "max_tokens": 1,
         "kv_transfer_params": {"do_remote_decode": True, "do_remote_prefill": False}},
    )  # fmt: skip
    status, _ = await post(http, engine, {"model": "m", "messages": CHAT, **produced})
    assert status == 200
    assert [r.role for r in engine.requests] == ["aggregated", "prefill", "decode"]


async def test_sglang_bootstrap_fields(start_engine: EngineFactory, http: aiohttp.ClientSession) -> None:
    prefill = await start_engine("--served-model-name", "m", "--disaggregation-mode", "prefill")
    decode = await start_engine("--served-model-name", "m", "--disaggregation-mode", "decode")
    room = 2**62 + 5
    status, answer = await post(http, prefill, {"model": "m", "messages": CHAT, "bootstrap_room": room})
    assert status == 200
    assert "kv_transfer_params" not in answer
    status, _ = await post(
        http, decode, {"model": "m", "messages": CHAT, "bootstrap_room": room, "bootstrap_host": "127.0.0.1"}
    )
    assert status == 200
    assert decode.requests[-1].bootstrap_room == prefill.requests[-1].bootstrap_room == room
    for bad in (
        {"bootstrap_room": room},
        {"bootstrap_room": -1, "bootstrap_host": "h"},
        {"bootstrap_host": "h"},
    ):
        status, answer = await post(http, decode, {"model": "m", "messages": CHAT, **bad})
        assert status == 400, bad
        assert "bootstrap" in answer["error"]["message"]
    status, _ = await post(http, prefill, {"model": "m", "messages": CHAT, "bootstrap_room": 2**63})
    assert status == 400


async def test_http_and_lmcache_need_no_in_band_fields(
    start_engine: EngineFactory, http: aiohttp.ClientSession
) -> None:
    for connector in ("P2pNcclConnector", "LMCacheConnectorV1"):
        decode = await start_engine(*kv(connector, "kv_consumer"))
        status, _ = await post(http, decode, {"model": "m", "messages": CHAT, "include_usage": True})
        assert status == 200
        assert decode.requests[-1].role == "decode"
