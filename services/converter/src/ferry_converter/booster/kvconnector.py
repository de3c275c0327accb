"""``GetKvConnectorSpec`` (``spec/booster.md`` §3.7): the ModelServer ``kvConnector`` of a PD backend."""

from __future__ import annotations

import json
from typing import Any

from ferry_converter.booster.gofmt import go_type_name
from ferry_converter.booster.workers import config_object, unmarshal_error, worker_type

CONNECTOR_TYPES = {
    "MooncakeConnector": "mooncake",
    "MooncakeConnectorV1": "mooncake",
    "NixlConnector": "nixl",
    "LMCacheConnectorV1": "lmcache",
}
ALLOWED_ROLES = {"prefill": ("kv_producer", "kv_both"), "decode": ("kv_consumer", "kv_both")}


class KvConnectorError(ValueError):
    """The prefill/decode kv-transfer-config pair is inconsistent."""


def _parse(kind: str, config: Any) -> str | None:
    """The connector name a prefill/decode worker declares, ``None`` when it declares none."""
    if config is None or config == {}:
        return None
    obj = config_object(config)
    if obj is None:
        raise KvConnectorError(f"worker {kind}: invalid config: {unmarshal_error(config)}")
    if "kv-transfer-config" not in obj:
        return None
    raw = obj["kv-transfer-config"]
    if not isinstance(raw, str):
        raise KvConnectorError(
            f"worker {kind}: kv-transfer-config must be a JSON string, got {go_type_name(raw)}"
        )
    try:
        inner = json.loads(raw)
    except ValueError as exc:
        raise KvConnectorError(f"worker {kind}: invalid kv-transfer-config: {exc}") from None
    if not isinstance(inner, dict):
        raise KvConnectorError(f"worker {kind}: invalid kv-transfer-config: {unmarshal_error(inner)}")
    connector = inner.get("kv_connector")
    if not isinstance(connector, str) or not connector:
        raise KvConnectorError(f"worker {kind}: kv-transfer-config is set but kv_connector is missing")
    if connector not in CONNECTOR_TYPES:
        supported = ", ".join(sorted(CONNECTOR_TYPES))
        raise KvConnectorError(
            f'worker {kind}: unsupported kv_connector "{connector}" (supported: {supported})'
        )
    role = inner.get("kv_role")
    if not isinstance(role, str) or not role:
        raise KvConnectorError(f"worker {kind}: kv-transfer-config is set but kv_role is missing")
    allowed = ALLOWED_ROLES[kind]
    if role not in allowed:
        raise KvConnectorError(
            f'worker {kind}: invalid kv_role "{role}", expected one of [{", ".join(allowed)}]'
        )
    return connector


def kv_connector_spec(backend_name: str, workers: list[dict[str, Any]]) -> dict[str, str] | None:
    """``{"type": <mooncake|nixl|lmcache>}``, ``None`` when neither side configures a connector."""
    by_kind: dict[str, list[dict[str, Any]]] = {"prefill": [], "decode": []}
    for worker in workers:
        kind = worker_type(worker)
        if kind in by_kind:
            by_kind[kind].append(worker)
    for kind in ("prefill", "decode"):
        count = len(by_kind[kind])
        if count > 1:
            raise KvConnectorError(
                f"backend {backend_name}: found {count} {kind} workers, expected at most 1; "
                f"duplicate {kind} workers are not supported"
            )
    prefill = _parse("prefill", by_kind["prefill"][0].get("config")) if by_kind["prefill"] else None
    decode = _parse("decode", by_kind["decode"][0].get("config")) if by_kind["decode"] else None
    if prefill is None and decode is None:
        return None
    if prefill is None:
        raise KvConnectorError(
            f'backend {backend_name}: decode worker specifies kv_connector "{decode}" but the prefill '
            "worker has no kv-transfer-config; prefill and decode must configure the same kv connector"
        )
    if decode is None:
        raise KvConnectorError(
            f'backend {backend_name}: prefill worker specifies kv_connector "{prefill}" but the decode '
            "worker has no kv-transfer-config; prefill and decode must configure the same kv connector"
        )
    if CONNECTOR_TYPES[prefill] != CONNECTOR_TYPES[decode]:
        raise KvConnectorError(
            f'backend {backend_name}: kv_connector mismatch between prefill ("{prefill}") and decode '
            f'("{decode}") workers; prefill and decode must use the same kv connector'
        )
    return {"type": CONNECTOR_TYPES[prefill]}
