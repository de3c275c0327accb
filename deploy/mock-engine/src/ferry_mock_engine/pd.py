"""Prefill/decode checks: does a request carry what the router's connector must send (spec/router.md §13)?

* http, lmcache — nothing is checked (KV moves out of band).
* nixl, mooncake — prefill: ``kv_transfer_params.do_remote_decode == true``;
  decode: the ``kv_transfer_params`` a prefill returned.
* sglang — prefill: ``bootstrap_room`` (0 ≤ int < 2**63); decode: ``bootstrap_room`` and ``bootstrap_host``.

A prefill answers (nixl/mooncake) with ``kv_transfer_params`` shaped like vLLM's NIXL connector, plus
``ferry_prompt_hash`` so the decode side can tell the params were produced for *this* prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ferry_mock_engine.config import Connector, EngineConfig, Role
from ferry_mock_engine.generation import BadRequest, count_tokens, prompt_hash

MAX_BOOTSTRAP_ROOM = 2**63
_IN_BAND = {Connector.NIXL, Connector.MOONCAKE}


class PdRefused(BadRequest):
    """A prefill or decode request without the transfer fields its connector requires."""


@dataclass(frozen=True)
class PdRequest:
    """How this engine treats one request."""

    role: Role  # AGGREGATED, PREFILL or DECODE (never BOTH)
    kv_transfer_params: Any = None
    bootstrap_room: int | None = None
    bootstrap_host: str | None = None


def _role_for_request(config: EngineConfig, params: Any) -> Role:
    if config.role is not Role.BOTH:
        return config.role
    if isinstance(params, dict) and params.get("do_remote_decode") is True:
        return Role.PREFILL
    if isinstance(params, dict) and params.get("do_remote_prefill") is True:
        return Role.DECODE
    return Role.AGGREGATED


def _check_bootstrap(body: dict[str, Any], need_host: bool) -> tuple[int, str | None]:
    room = body.get("bootstrap_room")
    if isinstance(room, bool) or not isinstance(room, int) or not 0 <= room < MAX_BOOTSTRAP_ROOM:
        raise PdRefused(
            f"sglang PD request needs 'bootstrap_room', a non-negative 63-bit integer; got {room!r}"
        )
    host = body.get("bootstrap_host")
    if need_host and (not isinstance(host, str) or not host):
        raise PdRefused(f"sglang decode request needs 'bootstrap_host' (the prefill pod IP); got {host!r}")
    return room, host if isinstance(host, str) else None


def _check_decode_params(params: Any, prompt: str) -> None:
    if not isinstance(params, dict):
        raise PdRefused(
            f"decode request needs the 'kv_transfer_params' returned by a prefill; got {params!r}"
        )
    problems: list[str] = []
    if params.get("do_remote_prefill") is not True:
        problems.append("do_remote_prefill is not true")
    if not isinstance(params.get("remote_engine_id"), str) or not params.get("remote_engine_id"):
        problems.append("remote_engine_id missing")
    if not isinstance(params.get("remote_block_ids"), list):
        problems.append("remote_block_ids missing")
    if not isinstance(params.get("remote_host"), str):
        problems.append("remote_host missing")
    port = params.get("remote_port")
    if isinstance(port, bool) or not isinstance(port, int):
        problems.append("remote_port missing")
    expected = params.get("ferry_prompt_hash")
    if expected is not None and expected != prompt_hash(prompt):
        problems.append("they were produced by a prefill of a different prompt")
    if problems:
        raise PdRefused("invalid kv_transfer_params for decode: " + "; ".join(problems))


def classify(config: EngineConfig, body: dict[str, Any], prompt: str) -> PdRequest:
    """Decide the request's role and check its transfer fields; raise :class:`PdRefused` if wrong."""
    params = body.get("kv_transfer_params")
    role = _role_for_request(config, params)
    connector = config.connector
    if role is Role.PREFILL:
        asks_remote_decode = isinstance(params, dict) and params.get("do_remote_decode") is True
        if connector in _IN_BAND and not asks_remote_decode:
            raise PdRefused(
                f"{connector} prefill request needs kv_transfer_params "
                f'{{"do_remote_decode": true, "do_remote_prefill": false}}; got {params!r}'
            )
        if connector is Connector.SGLANG:
            room, host = _check_bootstrap(body, need_host=False)
            return PdRequest(role, params, room, host)
    elif role is Role.DECODE:
        if connector in _IN_BAND:
            _check_decode_params(params, prompt)
        if connector is Connector.SGLANG:
            room, host = _check_bootstrap(body, need_host=True)
            return PdRequest(role, params, room, host)
    return PdRequest(role, params)


def prefill_transfer_params(
    config: EngineConfig, prompt: str, host: str, port: int, request_id: str
) -> dict[str, Any] | None:
    """What a nixl/mooncake prefill returns for the decode side; ``None`` for other connectors."""
    if config.connector not in _IN_BAND:
        return None
    blocks = math.ceil(count_tokens(prompt) / max(1, config.block_size))
    return {
        "do_remote_prefill": True,
        "do_remote_decode": False,
        "remote_engine_id": config.engine_id,
        "remote_block_ids": list(range(blocks)),
        "remote_host": host,
        "remote_port": port,
        "remote_request_id": request_id,
        "tp_size": config.tensor_parallel_size,
        "ferry_prompt_hash": prompt_hash(prompt),
    }
