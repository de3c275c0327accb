"""The request pipeline over HTTP: errors (spec §18.1 table), aggregated proxying, retries, PD connectors.

The router app runs in-process against scripted upstreams on 127.0.0.x (see ``fake_engine``).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import orjson
import pytest
from aiohttp import web
from ferry_router.app import Router
from ferry_router.observability import AccessLog
from ferry_router.proxy import UpstreamClient, UpstreamSettings
from ferry_router.ratelimit import RateLimiter
from ferry_router.scheduler import build_scheduler
from ferry_router.scheduler.config import parse_config
from ferry_router.state.table import RoutingTable

from .fake_engine import FakeEngine, free_port
from .objects import pod, route, server

PD = {
    "groupKey": "group",
    "prefillLabels": {"role": "prefill"},
    "decodeLabels": {"role": "decode"},
}


@dataclass
class Harness:
    table: RoutingTable
    url: str
    port: int
    log: io.StringIO
    session: aiohttp.ClientSession
    engines: list[FakeEngine]

    async def engine(self, host: str, **kwargs: object) -> FakeEngine:
        engine = FakeEngine(host, self.port, **kwargs)  # type: ignore[arg-type]
        await engine.start()
        self.engines.append(engine)
        return engine

    async def post(self, path: str, body: object, **kwargs: object) -> tuple[int, dict | str]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.session.post(self.url + path, data=data, **kwargs) as response:  # type: ignore[arg-type]
            text = await response.text()
            try:
                return response.status, orjson.loads(text)
            except orjson.JSONDecodeError:
                return response.status, text


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    table = RoutingTable()
    log = io.StringIO()
    access = AccessLog(enabled=True, fmt="json")
    access._stream = log
    scheduler = build_scheduler(parse_config("scheduler: {plugins: {Filter: {enabled: [least-request]}}}"))
    client = UpstreamClient(UpstreamSettings(connect_timeout=1.0, header_timeout=5.0))
    await client.start()
    router = Router(table, scheduler, RateLimiter(), client, access, max_body_bytes=10_000)
    runner = web.ServerRunner(router.build_server())
    await runner.setup()
    router_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", router_port).start()
    session = aiohttp.ClientSession()
    h = Harness(table, f"http://127.0.0.1:{router_port}", free_port(), log, session, [])
    try:
        yield h
    finally:
        await session.close()
        for engine in h.engines:
            await engine.stop()
        await runner.cleanup()
        await client.close()


def setup_model(
    h: Harness, *ips: str, model: str = "m", srv: dict | None = None, **route_kwargs: object
) -> None:
    h.table.apply_server("default/srv", srv or server("srv", {"app": "m"}, model="served", port=h.port))
    h.table.apply_route("default/r", route("r", model, **route_kwargs))  # type: ignore[arg-type]
    for i, ip in enumerate(ips):
        h.table.apply_pod(f"default/p{i}", pod(f"p{i}", {"app": "m"}, ip))


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello world"}]}


async def test_aggregated_rewrites_model_and_relays_usage(harness: Harness) -> None:
    engine = await harness.engine("127.0.0.2")
    setup_model(harness, "127.0.0.2")
    status, body = await harness.post("/v1/chat/completions", CHAT, headers={"x-request-id": "rid-1"})
    assert status == 200
    assert isinstance(body, dict)
    assert body["model"] == "served"
    assert engine.seen[0]["model"] == "served"
    assert "include_usage" not in engine.seen[0]  # no non-standard top-level field (Kthena adds one)
    assert engine.headers_seen[0]["x-request-id"] == "rid-1"
    entry = orjson.loads(harness.log.getvalue().splitlines()[-1])
    assert entry["status_code"] == 200
    assert entry["output_tokens"] == 2
    assert entry["selected_pod"] == "p0"
    assert entry["model_route"] == "default/r"
    assert entry["upstream_model"] == "served"


async def test_streaming_hides_the_usage_chunk_the_router_asked_for(harness: Harness) -> None:
    engine = await harness.engine("127.0.0.2")
    setup_model(harness, "127.0.0.2")
    status, text = await harness.post("/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 200
    assert isinstance(text, str)
    assert engine.seen[0]["stream_options"] == {"include_usage": True}
    assert '"usage"' not in text
    assert "hel" in text
    assert "data: [DONE]" in text
    # when the client asked for usage itself, it gets it
    status, text = await harness.post(
        "/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert '"usage"' in str(text)


async def test_retry_moves_to_next_endpoint_on_5xx(harness: Harness) -> None:
    bad = await harness.engine("127.0.0.2", status=503)
    good = await harness.engine("127.0.0.3")
    setup_model(harness, "127.0.0.2", "127.0.0.3")
    for _ in range(6):
        status, _ = await harness.post("/v1/completions", {"model": "m", "prompt": "x"})
        assert status == 200
    assert len(good.seen) == 6
    assert all(seen == good.seen[0] for seen in bad.seen)  # every retry sent the full body


async def test_client_errors_pass_through(harness: Harness) -> None:
    await harness.engine("127.0.0.2", status=400)
    setup_model(harness, "127.0.0.2")
    status, body = await harness.post("/v1/completions", {"model": "m", "prompt": "x"})
    assert status == 400
    assert body == {"error": {"message": "engine says 400"}}


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, 502), (503, 502)],
)
async def test_all_endpoints_failing_is_502(harness: Harness, status: int, code: int) -> None:
    await harness.engine("127.0.0.2", status=status)
    await harness.engine("127.0.0.3", status=status)
    setup_model(harness, "127.0.0.2", "127.0.0.3")
    got, body = await harness.post("/v1/completions", {"model": "m", "prompt": "x"})
    assert got == code
    assert "all 2 endpoints failed" in body["error"]["message"]


async def test_timeout_is_504_and_connection_refused_is_502(harness: Harness) -> None:
    await harness.engine("127.0.0.2", delay=2.0)
    setup_model(harness, "127.0.0.2", srv=server("srv", {"app": "m"}, port=harness.port, timeout="200ms"))
    status, body = await harness.post("/v1/completions", {"model": "m", "prompt": "x"})
    assert status == 504
    assert body["error"]["code"] == "upstream_timeout"
    harness.table.apply_pod("default/p0", pod("p0", {"app": "m"}, "127.0.0.9"))  # nothing listens there
    status, body = await harness.post("/v1/completions", {"model": "m", "prompt": "x"})
    assert status == 502
    assert body["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "code"),
    [
        ("POST", "/v1/completions", b"{not json", 400, "invalid_json"),
        ("POST", "/v1/completions", b'{"model": "m"} {"x": 1}', 400, "invalid_json"),
        ("POST", "/v1/completions", b"[1, 2]", 400, "invalid_json"),
        ("POST", "/v1/completions", b'{"prompt": "x"}', 400, "missing_model"),
        ("POST", "/v1/completions", b'{"model": "  ", "prompt": "x"}', 400, "missing_model"),
        ("POST", "/v1/completions", b'{"model": 5, "prompt": "x"}', 400, "missing_model"),
        ("POST", "/v1/completions", b'{"model": "m"}', 400, "invalid_prompt"),
        ("POST", "/v1/completions", b'{"model": "nope", "prompt": "x"}', 404, "model_not_found"),
        (
            "POST",
            "/v1/completions",
            b'{"model": "m", "prompt": "' + b"x" * 20_000 + b'"}',
            413,
            "request_too_large",
        ),
        ("POST", "/v1/unknown", b'{"model": "m", "prompt": "x"}', 404, "unknown_url"),
        ("POST", "/admin", b"{}", 404, "unknown_url"),
        ("GET", "/v1/completions", b"", 405, "method_not_allowed"),
    ],
)
async def test_client_error_table(
    harness: Harness, method: str, path: str, payload: bytes, status: int, code: str
) -> None:
    setup_model(harness)
    async with harness.session.request(method, harness.url + path, data=payload) as response:
        body = await response.json()
    assert response.status == status
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


async def test_server_side_errors(harness: Harness) -> None:
    harness.table.apply_route("default/r", route("r", "m", server="missing"))
    status, body = await harness.post("/v1/completions", {"model": "m", "prompt": "x"})
    assert status == 503
    assert body["error"]["code"] == "model_server_not_found"
    setup_model(harness)  # server without pods
    status, body = await harness.post("/v1/completions", {"model": "m", "prompt": "x"})
    assert status == 503
    assert body["error"]["code"] == "no_endpoints"
    harness.table.apply_pod("default/p0", pod("p0", {"app": "m"}, "127.0.0.2"))
    harness.table.endpoints["default/p0"].metrics.waiting = 99
    status, body = await harness.post("/v1/completions", {"model": "m", "prompt": "x"})
    assert status == 503
    assert body["error"]["code"] == "no_capacity"
    assert "least-request" in body["error"]["message"]  # type: ignore[index]


async def test_rate_limit_is_429(harness: Harness) -> None:
    await harness.engine("127.0.0.2")
    setup_model(harness, "127.0.0.2", rate_limit={"inputTokensPerUnit": 10, "unit": "minute"})
    statuses = [
        (await harness.post("/v1/completions", {"model": "m", "prompt": "x" * 12}))[0] for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    data = orjson.dumps({"model": "m", "prompt": "x" * 12})
    async with harness.session.post(harness.url + "/v1/completions", data=data) as response:
        body = await response.json()
    assert response.status == 429
    assert body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(response.headers["Retry-After"]) <= 18  # 3 tokens at 10 per minute


async def test_models_health_and_readiness(harness: Harness) -> None:
    harness.table.apply_route("default/a", route("a", "zeta", loras=["alpha"]))
    harness.table.apply_route("default/b", route("b", "alpha"))
    async with harness.session.get(harness.url + "/v1/models") as response:
        body = await response.json()
    assert [m["id"] for m in body["data"]] == ["alpha", "zeta"]
    async with harness.session.get(harness.url + "/healthz") as response:
        assert await response.json() == {"message": "ok"}
    async with harness.session.get(harness.url + "/readyz") as response:
        assert response.status == 200


async def test_pd_http_connector(harness: Harness) -> None:
    prefill = await harness.engine("127.0.0.2")
    decode = await harness.engine("127.0.0.3")
    srv = server("srv", {"app": "m"}, model="served", port=harness.port, pd=PD)
    setup_model(harness, srv=srv)
    harness.table.apply_pod("default/p", pod("p", {"app": "m", "group": "g", "role": "prefill"}, "127.0.0.2"))
    harness.table.apply_pod("default/d", pod("d", {"app": "m", "group": "g", "role": "decode"}, "127.0.0.3"))
    request = {**CHAT, "stream": True, "max_tokens": 50, "max_completion_tokens": 50}
    status, text = await harness.post("/v1/chat/completions", request)
    assert status == 200
    assert "hel" in str(text)
    assert '"usage"' not in str(text)
    assert len(prefill.seen) == 1
    assert len(decode.seen) == 1
    p, d = prefill.seen[0], decode.seen[0]
    assert "stream" not in p
    assert "stream_options" not in p
    assert p["max_tokens"] == 1
    assert p["max_completion_tokens"] == 1
    assert p["model"] == "served"
    assert d["stream"] is True
    assert d["max_tokens"] == 50
    assert d["stream_options"] == {"include_usage": True}


async def test_pd_nixl_connector_passes_kv_transfer_params(harness: Harness) -> None:
    params = {"remote_block_ids": [1, 2], "remote_host": "127.0.0.2"}
    prefill = await harness.engine("127.0.0.2", kv_params=params)
    decode = await harness.engine("127.0.0.3")
    srv = server("srv", {"app": "m"}, port=harness.port, pd=PD, connector="nixl")
    setup_model(harness, srv=srv)
    harness.table.apply_pod("default/p", pod("p", {"app": "m", "group": "g", "role": "prefill"}, "127.0.0.2"))
    harness.table.apply_pod("default/d", pod("d", {"app": "m", "group": "g", "role": "decode"}, "127.0.0.3"))
    status, _ = await harness.post("/v1/completions", {"model": "m", "prompt": "x"})
    assert status == 200
    assert prefill.seen[0]["kv_transfer_params"] == {"do_remote_decode": True, "do_remote_prefill": False}
    assert decode.seen[0]["kv_transfer_params"] == params


async def test_pd_sglang_connector_bootstrap_fields_fresh_per_attempt(harness: Harness) -> None:
    prefill = await harness.engine("127.0.0.2")
    decode = await harness.engine("127.0.0.3")
    srv = server("srv", {"app": "m"}, port=harness.port, pd=PD, engine="SGLang")
    setup_model(harness, srv=srv)
    harness.table.apply_pod("default/p", pod("p", {"app": "m", "group": "g", "role": "prefill"}, "127.0.0.2"))
    harness.table.apply_pod("default/d", pod("d", {"app": "m", "group": "g", "role": "decode"}, "127.0.0.3"))
    for _ in range(2):
        status, _ = await harness.post("/v1/completions", {"model": "m", "prompt": "x"})
        assert status == 200
    rooms = {p["bootstrap_room"] for p in prefill.seen}
    assert len(rooms) == 2
    assert rooms == {d["bootstrap_room"] for d in decode.seen}
    assert all(d["bootstrap_host"] == "127.0.0.2" for d in decode.seen)
    assert all(0 <= r < 2**63 for r in rooms)


async def test_pd_failure_tries_next_pair_then_502(harness: Harness) -> None:
    await harness.engine("127.0.0.2", status=500)  # prefill of group a fails
    await harness.engine("127.0.0.3")
    good_prefill = await harness.engine("127.0.0.4")
    srv = server("srv", {"app": "m"}, port=harness.port, pd=PD)
    setup_model(harness, srv=srv)
    harness.table.apply_pod(
        "default/pa", pod("pa", {"app": "m", "group": "a", "role": "prefill"}, "127.0.0.2")
    )
    harness.table.apply_pod(
        "default/da", pod("da", {"app": "m", "group": "a", "role": "decode"}, "127.0.0.3")
    )
    harness.table.apply_pod(
        "default/pb", pod("pb", {"app": "m", "group": "b", "role": "prefill"}, "127.0.0.4")
    )
    harness.table.apply_pod(
        "default/db", pod("db", {"app": "m", "group": "b", "role": "decode"}, "127.0.0.3")
    )
    for _ in range(4):
        status, _ = await harness.post("/v1/completions", {"model": "m", "prompt": "x"})
        assert status == 200
    assert len(good_prefill.seen) == 4
    harness.table.apply_pod("default/pb", None)
    status, body = await harness.post("/v1/completions", {"model": "m", "prompt": "x"})
    assert status == 502
    assert "prefill/decode" in body["error"]["message"]


async def test_client_leaving_mid_stream_frees_the_endpoint(harness: Harness) -> None:
    slow = await harness.engine("127.0.0.2", stream_delay=0.3)
    setup_model(harness, "127.0.0.2")
    body = orjson.dumps({**CHAT, "stream": True})
    async with harness.session.post(harness.url + "/v1/chat/completions", data=body) as response:
        assert response.status == 200
        await response.content.readline()  # first chunk, then hang up
    endpoint = harness.table.endpoints["default/p0"]
    for _ in range(50):
        if endpoint.inflight == 0:
            break
        await asyncio.sleep(0.05)
    assert endpoint.inflight == 0
    slow.stream_delay = 0.0
    status, _ = await harness.post("/v1/chat/completions", CHAT)
    assert status == 200


async def test_timeout_bounds_headers_not_a_slow_stream(harness: Harness) -> None:
    await harness.engine("127.0.0.2", stream_delay=0.3)  # 2 chunks, 0.3 s apart: longer than the timeout
    setup_model(harness, "127.0.0.2", srv=server("srv", {"app": "m"}, port=harness.port, timeout="200ms"))
    status, text = await harness.post("/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 200
    assert "data: [DONE]" in str(text)
