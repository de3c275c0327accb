"""Settings from environment variables, with defaults that work on the local stack (design rule 7)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from exc


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be a number, got {raw!r}") from exc


def env_bool(name: str, default: bool) -> bool:
    """``true/1/yes/on`` or ``false/0/no/off`` (any case); anything else is an error naming the variable."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"environment variable {name} must be true or false, got {raw!r}")


GATEWAY_MODE_ENV = "FERRY_GATEWAY_API"
"""Gateway mode (Kthena's ``--enable-gateway-api`` plus ``--enable-gateway-api-inference-extension``):
the watcher publishes Gateway API and InferencePool objects, the router serves Gateway listeners
and HTTPRoutes, the status service writes their status. Off by default, as in Kthena."""


def gateway_mode() -> bool:
    return env_bool(GATEWAY_MODE_ENV, False)


DEFAULT_GATEWAY_CONTROLLER = "volcano.sh/kthena-router"
"""Kthena's controllerName, so manifests naming ``gatewayClassName: kthena-router`` keep working."""


def gateway_controller_name() -> str:
    """``FERRY_GATEWAY_CONTROLLER_NAME``: the GatewayClass ``controllerName`` whose Gateways Ferry serves."""
    return env_str("FERRY_GATEWAY_CONTROLLER_NAME", DEFAULT_GATEWAY_CONTROLLER)


MAX_ACK_PENDING = 256
"""Each message in flight holds its bytes, a task, coroutines, a span and an in-progress timer until
its reconcile is done (about 300 Python allocations per message in the status service, by a ``gc``
census at 500 boosters); a burst of 2000 boosters filled the old 1000 per consumer (status has five
consumers), which set the services' peak memory. The rest of a burst waits in the stream, where it
costs nothing; 256 still keeps far more keys queued than the 32 reconciles a service runs at once."""


@dataclass(frozen=True)
class ServiceSettings:
    """What every service reads: where NATS is, where to serve probes, how to log.

    ``FERRY_NATS_URL`` (or ``NATS_URL``), ``FERRY_PROBE_HOST``/``FERRY_PROBE_PORT`` (``/healthz``,
    ``/readyz``, ``/metrics``), ``FERRY_LOG_LEVEL``, ``FERRY_MAX_DELIVER``, ``FERRY_ACK_WAIT``,
    ``FERRY_MAX_ACK_PENDING``, ``FERRY_MEMBER_TTL``.
    """

    service: str
    nats_url: str = field(
        default_factory=lambda: (
            os.environ.get("FERRY_NATS_URL") or os.environ.get("NATS_URL") or "nats://127.0.0.1:4222"
        )
    )
    probe_host: str = field(default_factory=lambda: env_str("FERRY_PROBE_HOST", "127.0.0.1"))
    probe_port: int = field(default_factory=lambda: env_int("FERRY_PROBE_PORT", 0))
    log_level: str = field(default_factory=lambda: env_str("FERRY_LOG_LEVEL", "INFO"))
    max_deliver: int = field(default_factory=lambda: env_int("FERRY_MAX_DELIVER", 8))
    ack_wait: float = field(default_factory=lambda: env_float("FERRY_ACK_WAIT", 30.0))
    max_ack_pending: int = field(default_factory=lambda: env_int("FERRY_MAX_ACK_PENDING", MAX_ACK_PENDING))
    """Messages of one durable consumer in flight at once (fetched, not yet acked)."""
    member_ttl: float = field(default_factory=lambda: env_float("FERRY_MEMBER_TTL", 15.0))
    """Seconds after its last heartbeat a replica counts as gone and its keys move to the others
    (:mod:`ferry_schemas.runtime.members`; a replica that stops leaves at once). 15 s, as
    controller-runtime's leader-election lease: a replica whose event loop is busy for seconds in a
    burst must not be dropped (every drop and return runs a resync on each replica)."""
