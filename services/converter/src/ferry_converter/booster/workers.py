"""Worker config reading: engine port, engine arguments, served model name (§3.2, §3.5, §3.12)."""

from __future__ import annotations

import json
import re
from typing import Any

from ferry_converter.booster.gofmt import go_value

DEFAULT_ENGINE_PORT = 8000
PORT_WORKER_TYPES = ("server", "prefill", "decode")
_INT = re.compile(r"^[+-]?[0-9]+$")


class ConfigError(ValueError):
    """A worker config that cannot be read; ``index`` is the offending worker, ``value`` the raw value."""

    def __init__(self, message: str, index: int = -1, value: Any = None) -> None:
        super().__init__(message)
        self.index = index
        self.value = value


def worker_type(worker: dict[str, Any]) -> str:
    """The worker type, with the CRD default ``server``."""
    value = worker.get("type")
    return value if isinstance(value, str) and value else "server"


def config_object(config: Any) -> dict[str, Any] | None:
    """The config as a JSON object (``None``/absent → ``{}``); ``None`` return means not an object."""
    if config is None:
        return {}
    if isinstance(config, dict):
        return config
    return None


def unmarshal_error(config: Any) -> str:
    kind = {list: "array", str: "string", bool: "bool"}.get(type(config), "number")
    return f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"


def engine_port(workers: list[dict[str, Any]]) -> int:
    """``GetEnginePort``: every server/prefill/decode worker must agree; 8000 when none sets ``port``."""
    first: int | None = None
    for index, worker in enumerate(workers):
        kind = worker_type(worker)
        if kind not in PORT_WORKER_TYPES:
            continue
        config = config_object(worker.get("config"))
        if config is None:
            raise ConfigError(
                f"failed to get port for worker {kind}: {unmarshal_error(worker.get('config'))}", index
            )
        port = DEFAULT_ENGINE_PORT
        if "port" in config:
            raw = config["port"]
            printed = go_value(raw)  # Kthena prints the raw JSON value the Go way: null → <nil>
            if not _INT.match(printed) or not 1 <= int(printed) <= 65535:
                raise ConfigError(f'invalid port "{printed}" for worker {kind}', index, raw)
            port = int(printed)
        if first is None:
            first = port
        elif port != first:
            raise ConfigError(f"workers use different engine ports: {first} and {port}", index, port)
    return first if first is not None else DEFAULT_ENGINE_PORT


def engine_args(config: Any) -> list[str]:
    """``ConvertVLLMArgsFromJson``: sorted ``--key value`` pairs, ``_`` → ``-``, empty value → flag only."""
    obj = config_object(config)
    if obj is None:
        raise ConfigError(f"failed to unmarshal config: {unmarshal_error(config)}")
    args: list[str] = []
    for key in sorted(obj, key=lambda k: k.encode()):
        args.append("--" + key.replace("_", "-"))
        rendered = go_value(obj[key])
        if rendered != "":
            args.append(rendered)
    return args


def served_model_name(workers: list[dict[str, Any]], default: str) -> str:
    """First string ``served-model-name`` of a server/decode worker; an unreadable config stops the scan."""
    for worker in workers:
        if worker_type(worker) not in ("server", "decode"):
            continue
        config = worker.get("config")
        if not isinstance(config, dict) or not config:
            return default
        name = config.get("served-model-name")
        if isinstance(name, str):
            return name
    return default


def kv_connector_name(config: Any) -> str:
    """The ``kv_connector`` of a worker config, leniently ("" when missing or unparsable)."""
    if not isinstance(config, dict):
        return ""
    raw = config.get("kv-transfer-config")
    if not isinstance(raw, str):
        return ""
    try:
        inner = json.loads(raw)
    except ValueError:
        return ""
    if not isinstance(inner, dict):
        return ""
    name = inner.get("kv_connector")
    return name if isinstance(name, str) else ""
