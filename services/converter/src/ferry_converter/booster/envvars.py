"""Environment handling (``spec/booster.md`` §3.4): interpreted names and the env lists built."""

from __future__ import annotations

import re
from typing import Any

RUNTIME_PORT = "RUNTIME_PORT"
RUNTIME_URL = "RUNTIME_URL"
RUNTIME_METRICS_PATH = "RUNTIME_METRICS_PATH"
SKIP_ENGINE_DEPENDENCY_INSTALL = "KTHENA_SKIP_ENGINE_DEPENDENCY_INSTALL"
DOWNLOADER_ENV_NAMES = ("ENDPOINT", "HF_ENDPOINT", "MS_TOKEN", "MS_REVISION")

DEFAULT_RUNTIME_PORT = 8100
DEFAULT_METRICS_PATH = "/metrics"

_INT = re.compile(r"^[+-]?[0-9]+$")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _entry(env: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for item in env:
        if item.get("name") == name:
            return item
    return None


def env_str(env: list[dict[str, Any]], name: str, default: str) -> str:
    """The literal value of the first entry named ``name`` (even empty), else ``default``."""
    entry = _entry(env, name)
    if entry is None:
        return default
    value = entry.get("value")
    return value if isinstance(value, str) else ""


def env_int(env: list[dict[str, Any]], name: str, default: int) -> int:
    """Base-10 integer value, ``default`` when absent or unparsable (``valueFrom`` is ignored)."""
    entry = _entry(env, name)
    value = entry.get("value") if entry else None
    if isinstance(value, str) and _INT.match(value):
        return int(value)
    return default


def env_bool(env: list[dict[str, Any]], name: str, default: bool) -> bool:
    """Go ``strconv.ParseBool`` semantics, ``default`` when absent or unparsable."""
    entry = _entry(env, name)
    value = entry.get("value") if entry else None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return default


def downloader_env(env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ENDPOINT, HF_ENDPOINT, MS_TOKEN, MS_REVISION (first entry each, only when non-empty)."""
    out: list[dict[str, Any]] = []
    for name in DOWNLOADER_ENV_NAMES:
        entry = _entry(env, name)
        if entry is not None and entry.get("value"):
            out.append(dict(entry))
    return out


def _field_ref(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _optional_ref(name: str, kind: str, source: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {kind: {"name": source, "key": name, "optional": True}}}


def standard_env() -> list[dict[str, Any]]:
    return [
        _field_ref("POD_NAME", "metadata.name"),
        _field_ref("NAMESPACE", "metadata.namespace"),
        {"name": "VLLM_USE_V1", "value": "1"},
        _optional_ref("REDIS_HOST", "configMapKeyRef", "redis-config"),
        _optional_ref("REDIS_PORT", "configMapKeyRef", "redis-config"),
        _optional_ref("REDIS_PASSWORD", "secretKeyRef", "redis-secret"),
    ]


PREFILL_EXTRA_ENV: tuple[dict[str, Any], ...] = (
    {"name": "HF_HUB_OFFLINE", "value": "1"},
    _field_ref("HCCL_IF_IP", "status.podIP"),
)
DECODE_EXTRA_ENV: tuple[dict[str, Any], ...] = (
    {"name": "HF_HUB_OFFLINE", "value": "1"},
    {"name": "GLOO_SOCKET_IFNAME", "value": "eth0"},
    {"name": "TP_SOCKET_IFNAME", "value": "eth0"},
    {"name": "HCCL_SOCKET_IFNAME", "value": "eth0"},
)


def engine_env(env: list[dict[str, Any]], *extra: dict[str, Any]) -> list[dict[str, Any]]:
    """All of the backend env (in order), the standard list, then ``extra``."""
    return [dict(item) for item in env] + standard_env() + [dict(item) for item in extra]
