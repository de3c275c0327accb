"""Status service settings from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ferry_schemas.runtime.settings import (
    ServiceSettings,
    env_float,
    env_int,
    env_str,
    gateway_controller_name,
    gateway_mode,
)


@dataclass(frozen=True)
class StatusSettings(ServiceSettings):
    """``FERRY_STATUS_WORKERS``: reconciles in flight; ``FERRY_STATUS_SETTLE``: seconds a reconcile
    waits for more changes of the same object; ``FERRY_STATUS_FIRST_WRITE_HOLD`` and ``_MAX``: see
    ``first_write_hold``; ``FERRY_RESYNC_PERIOD``: seconds between resyncs of every status (as the
    applier's)."""

    service: str = "ferry-status"
    workers: int = field(default_factory=lambda: env_int("FERRY_STATUS_WORKERS", 32))
    settle: float = field(default_factory=lambda: env_float("FERRY_STATUS_SETTLE", 0.2))
    resync_period: float = field(default_factory=lambda: env_float("FERRY_RESYNC_PERIOD", 600.0))
    first_write_hold: float = field(default_factory=lambda: env_float("FERRY_STATUS_FIRST_WRITE_HOLD", 5.0))
    """Seconds after its last step through the pipeline (creation, desired set, apply result) a new
    object's first status waits for its apply result and what it created (then written complete at
    once; 0 writes an interim status first); extended while the pipeline works through a backlog."""
    first_write_hold_max: float = field(
        default_factory=lambda: env_float("FERRY_STATUS_FIRST_WRITE_HOLD_MAX", 120.0)
    )
    """``FERRY_STATUS_FIRST_WRITE_HOLD_MAX``: the bound of that wait, however far behind the pipeline
    is (a failure is never held)."""
    gateway_mode: bool = field(default_factory=gateway_mode)
    """``FERRY_GATEWAY_API``: also write Gateway API / InferencePool status and ensure the defaults."""
    gateway_controller: str = field(default_factory=gateway_controller_name)
    gateway_class: str = field(default_factory=lambda: env_str("FERRY_GATEWAY_CLASS", "kthena-router"))
    """The GatewayClass created at start (Kthena's name)."""
    gateway_namespace: str = field(
        default_factory=lambda: (
            os.environ.get("FERRY_GATEWAY_NAMESPACE") or os.environ.get("POD_NAMESPACE") or "kthena-system"
        )
    )
    """Where the ``default`` Gateway is created (Kthena: the router's namespace)."""
    gateway_port: int = field(
        default_factory=lambda: env_int("FERRY_GATEWAY_DEFAULT_PORT", env_int("FERRY_ROUTER_PORT", 8080))
    )
    """The port of the ``default`` Gateway's listener: the router's own port."""
    provider_probe_interval: float = field(
        default_factory=lambda: env_float("FERRY_STATUS_PROVIDER_PROBE_INTERVAL", 30.0)
    )
    """Seconds between reachability probes (TCP + TLS handshake) of each ExternalModelProvider."""
