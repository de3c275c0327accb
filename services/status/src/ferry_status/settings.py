"""Status service settings from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field

from ferry_schemas.runtime.settings import ServiceSettings, env_float, env_int


@dataclass(frozen=True)
class StatusSettings(ServiceSettings):
    """``FERRY_STATUS_WORKERS``: reconciles in flight; ``FERRY_STATUS_BATCH``: messages per fetch;
    ``FERRY_STATUS_SETTLE``: seconds a reconcile waits for more changes of the same object."""

    service: str = "ferry-status"
    workers: int = field(default_factory=lambda: env_int("FERRY_STATUS_WORKERS", 8))
    batch: int = field(default_factory=lambda: env_int("FERRY_STATUS_BATCH", 32))
    settle: float = field(default_factory=lambda: env_float("FERRY_STATUS_SETTLE", 0.2))
