"""Status service settings from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field

from ferry_schemas.runtime.settings import ServiceSettings, env_int


@dataclass(frozen=True)
class StatusSettings(ServiceSettings):
    """``FERRY_STATUS_WORKERS``: reconciles in flight; ``FERRY_STATUS_BATCH``: messages per fetch."""

    service: str = "ferry-status"
    workers: int = field(default_factory=lambda: env_int("FERRY_STATUS_WORKERS", 8))
    batch: int = field(default_factory=lambda: env_int("FERRY_STATUS_BATCH", 32))
