"""Watcher settings from the environment (defaults work on the local stack)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ferry_schemas.runtime.settings import ServiceSettings, env_float, env_int, gateway_mode


@dataclass(frozen=True)
class WatcherSettings(ServiceSettings):
    """``FERRY_WATCH_NAMESPACE`` restricts the watch to one namespace (default: all);
    ``FERRY_WATCH_TIMEOUT`` is the server-side watch timeout in seconds;
    ``FERRY_WATCH_BACKOFF_MAX`` caps the reconnect back-off; ``FERRY_GATEWAY_API`` adds the Gateway
    API and InferencePool kinds."""

    service: str = "ferry-watcher"
    namespace: str | None = field(default_factory=lambda: os.environ.get("FERRY_WATCH_NAMESPACE") or None)
    watch_timeout: int = field(default_factory=lambda: env_int("FERRY_WATCH_TIMEOUT", 300))
    backoff_max: float = field(default_factory=lambda: env_float("FERRY_WATCH_BACKOFF_MAX", 10.0))
    gateway_mode: bool = field(default_factory=gateway_mode)
