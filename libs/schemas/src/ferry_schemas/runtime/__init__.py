"""The plumbing every Ferry service shares: settings, probes and metrics, tracing, NATS.

It lives beside the contracts so that no service copies it (design: no service imports another).
The exports are imported on first use, so a process that needs one submodule (the router's load
reader needs ``jetstream`` alone) does not load aiohttp, pydantic and OpenTelemetry with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ferry_schemas.runtime.probes import ProbeServer
    from ferry_schemas.runtime.settings import ServiceSettings
    from ferry_schemas.runtime.tracing import setup_tracing

__all__ = ["ProbeServer", "ServiceSettings", "setup_tracing"]
_HOMES = {"ProbeServer": "probes", "ServiceSettings": "settings", "setup_tracing": "tracing"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
