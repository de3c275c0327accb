"""Connector and relay table tests (spec §18.4 transport/connectors, §18.1 usage forwarding)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from ferry_router.pd import connector_for
from ferry_router.pd.base import PDCall
from ferry_router.proxy import _scan_usage, inject_usage, upstream_headers
from multidict import CIMultiDict, CIMultiDictProxy


@pytest.mark.parametrize(
    ("body", "injected", "options"),
    [
        ({"stream": True}, True, {"include_usage": True}),
        ({"stream": True, "stream_options": {"include_usage": True}}, False, {"include_usage": True}),
        (
            {"stream": True, "stream_options": {"continuous_usage_stats": True}},
            True,
            {"continuous_usage_stats": True, "include_usage": True},
        ),
        ({"stream": True, "stream_options": {"include_usage": "true"}}, True, {"include_usage": True}),
        ({"stream": "true"}, False, None),  # only boolean true streams
        ({}, False, None),
    ],
)
def test_inject_usage(body: dict[str, Any], injected: bool, options: dict[str, Any] | None) -> None:
    assert inject_usage(body) is injected
    assert body.get("stream_options") == options
    assert "include_usage" not in body  # never the non-standard top-level field


def chunk(choices: list[Any], usage: dict[str, int] | None = None) -> bytes:
    payload: dict[str, Any] = {"id": "x", "choices": choices}
    if usage is not None:
        payload["usage"] = usage
    return b"data: " + orjson.dumps(payload) + b"\n"


USAGE = {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}


@pytest.mark.parametrize(
    ("line", "hide", "kept", "reported"),
    [
        (chunk([], USAGE), True, False, (4, 7)),  # router-injected usage-only chunk dropped
        (chunk([{"index": 0, "delta": {}}], USAGE), True, True, (4, 7)),  # injected usage with choices kept
        (chunk([], USAGE), False, True, (4, 7)),  # the client asked for usage: forwarded
        (chunk([{"index": 0}], None), True, True, None),
        (b'data: {"usage": null, "choices": []}\n', True, True, None),
        (b'data: not json but has "usage"\n', True, True, None),
    ],
)
async def test_usage_scan(line: bytes, hide: bool, kept: bool, reported: tuple[int, int] | None) -> None:
    seen: list[tuple[int, int]] = []

    async def on_usage(prompt: int, completion: int) -> None:
        seen.append((prompt, completion))

    block = line + b"\n" + b"data: [DONE]\n\n"
    out = await _scan_usage(block, hide, on_usage)
    assert (line in out) is kept
    assert out.endswith(b"data: [DONE]\n\n")
    assert seen == ([reported] if reported else [])


def test_upstream_headers_drop_hop_by_hop_and_set_request_id() -> None:
    incoming = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Host", "router"),
                ("Connection", "keep-alive"),
                ("Content-Length", "10"),
                ("Authorization", "Bearer t"),
                ("X-Custom", "a"),
                ("X-Custom", "b"),
                ("Transfer-Encoding", "chunked"),
            ]
        )
    )
    out = upstream_headers(incoming, "rid")
    assert out.getall("X-Custom") == ["a", "b"]
    assert out["Authorization"] == "Bearer t"
    assert out["X-Request-Id"] == "rid"
    assert not {"host", "connection", "content-length", "transfer-encoding"} & {k.lower() for k in out}


def make_call(body: dict[str, Any]) -> PDCall:
    return PDCall(
        request=None,  # type: ignore[arg-type]
        client=None,  # type: ignore[arg-type]
        server=None,  # type: ignore[arg-type]
        path_qs="/v1/completions",
        body=body,
        headers=CIMultiDict(),
        record=None,  # type: ignore[arg-type]
        on_usage=None,  # type: ignore[arg-type]
        path_label="/v1/completions",
        dest_labels=("", "", "", "", ""),
    )


@pytest.mark.parametrize(
    ("body", "prefill", "decode"),
    [
        (
            {"model": "m", "stream": True, "stream_options": {"x": 1}, "max_tokens": 9},
            {"model": "m", "max_tokens": 1},
            {
                "model": "m",
                "stream": True,
                "stream_options": {"x": 1, "include_usage": True},
                "max_tokens": 9,
            },
        ),
        (
            {"model": "m", "max_completion_tokens": 9},
            {"model": "m", "max_tokens": 1, "max_completion_tokens": 1},
            {"model": "m", "max_completion_tokens": 9},
        ),
    ],
)
def test_pd_body_rewrites_do_not_touch_the_callers_body(
    body: dict[str, Any], prefill: dict[str, Any], decode: dict[str, Any]
) -> None:
    original = orjson.loads(orjson.dumps(body))
    call = make_call(body)
    assert call.prefill_body() == prefill
    assert call.decode_body()[0] == decode
    assert body == original


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("http", "http"),
        ("lmcache", "lmcache"),
        ("nixl", "nixl"),
        ("mooncake", "mooncake"),
        ("sglang", "sglang"),
        ("x", "http"),
    ],
)
def test_connector_factory(name: str, kind: str) -> None:
    assert connector_for(name).name == kind
