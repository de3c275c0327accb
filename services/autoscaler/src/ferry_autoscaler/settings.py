"""Autoscaler settings from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field

from ferry_schemas.runtime.settings import ServiceSettings, env_float, env_int


@dataclass(frozen=True)
class AutoscalerSettings(ServiceSettings):
    """``FERRY_AUTOSCALER_SYNC_PERIOD``: seconds between scaling cycles (Kthena's
    ``--autoscaling-sync-period-seconds``, default 15, ≤0 means 15); ``FERRY_AUTOSCALER_SCRAPE_TIMEOUT``:
    per-pod scrape and Prometheus query timeout; ``FERRY_AUTOSCALER_LEASE_TTL``: how long a replica's
    claim on a policy lasts without renewal (default three sync periods); ``FERRY_AUTOSCALER_WORKERS``:
    policies evaluated at once."""

    service: str = "ferry-autoscaler"
    sync_period_raw: float = field(default_factory=lambda: env_float("FERRY_AUTOSCALER_SYNC_PERIOD", 15.0))
    scrape_timeout: float = field(default_factory=lambda: env_float("FERRY_AUTOSCALER_SCRAPE_TIMEOUT", 3.0))
    lease_ttl_raw: float = field(default_factory=lambda: env_float("FERRY_AUTOSCALER_LEASE_TTL", 0.0))
    workers: int = field(default_factory=lambda: env_int("FERRY_AUTOSCALER_WORKERS", 8))

    @property
    def sync_period(self) -> float:
        return sync_period(self.sync_period_raw)

    @property
    def lease_ttl(self) -> float:
        return self.lease_ttl_raw if self.lease_ttl_raw > 0 else 3 * self.sync_period


def sync_period(seconds: float) -> float:
    """Kthena: a period ≤ 0 means the default 15 s."""
    return seconds if seconds > 0 else 15.0
