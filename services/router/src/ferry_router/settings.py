"""Router settings from environment variables (defaults work on the local stack)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ferry_schemas.bus import LOAD_STALE_SECONDS, OBJECTS_STREAM
from ferry_schemas.runtime.settings import env_float, env_int, env_str, gateway_controller_name, gateway_mode

from ferry_router.durations import parse_duration

KTHENA_CONFIG_PATH = "/etc/config/routerConfiguration.yaml"


def _duration_env(name: str, default: float, *, zero_ok: bool = False) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = parse_duration(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}: {exc}") from exc
    if value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"environment variable {name} must be positive, got {raw!r}")
    return value


def _config_path() -> str:
    explicit = os.environ.get("FERRY_ROUTER_CONFIG")
    if explicit is not None:
        return explicit
    return KTHENA_CONFIG_PATH if Path(KTHENA_CONFIG_PATH).is_file() else ""


@dataclass(frozen=True)
class RouterSettings:
    """``FERRY_ROUTER_*`` plus Kthena's own names where they exist (``METRICS_SCRAPE_INTERVAL``…)."""

    host: str = field(default_factory=lambda: env_str("FERRY_ROUTER_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: env_int("FERRY_ROUTER_PORT", 8080))
    metrics_host: str = field(default_factory=lambda: env_str("FERRY_PROBE_HOST", "127.0.0.1"))
    metrics_port: int = field(default_factory=lambda: env_int("FERRY_ROUTER_METRICS_PORT", 9090))
    debug_port: int = field(default_factory=lambda: env_int("FERRY_ROUTER_DEBUG_PORT", 15000))
    config_path: str = field(default_factory=_config_path)
    objects_stream: str = field(default_factory=lambda: env_str("FERRY_OBJECTS_STREAM", OBJECTS_STREAM))
    scrape_interval: float = field(default_factory=lambda: _duration_env("METRICS_SCRAPE_INTERVAL", 1.0))
    scrape_timeout: float = field(default_factory=lambda: env_float("FERRY_ROUTER_SCRAPE_TIMEOUT", 2.0))
    scrape_concurrency: int = field(default_factory=lambda: env_int("FERRY_ROUTER_SCRAPE_CONCURRENCY", 128))
    """Scrapes in flight at most (hung engines hold a slot for the timeout, once per back-off)."""
    scrape_max_backoff: float = field(
        default_factory=lambda: _duration_env("FERRY_ROUTER_SCRAPE_MAX_BACKOFF", 60.0)
    )
    """A failing engine is scraped again after interval x 2^failures, at most this long."""
    load_stale: float = field(
        default_factory=lambda: _duration_env("FERRY_ROUTER_LOAD_STALE_AFTER", LOAD_STALE_SECONDS)
    )
    """Pushed or scraped load older than this is unknown (the sidecar stopped: scraping takes over)."""
    metrics_max_endpoints: int = field(
        default_factory=lambda: env_int("FERRY_ROUTER_METRICS_MAX_ENDPOINTS", 1000)
    )
    """Endpoints with per-endpoint series on ``/metrics`` (the rest are only counted)."""
    max_body_bytes: int = field(
        default_factory=lambda: env_int("FERRY_ROUTER_MAX_BODY_BYTES", 8 * 1024 * 1024)
    )
    connect_timeout: float = field(default_factory=lambda: env_float("FERRY_ROUTER_CONNECT_TIMEOUT", 5.0))
    upstream_timeout: float = field(default_factory=lambda: env_float("FERRY_ROUTER_UPSTREAM_TIMEOUT", 600.0))
    idle_timeout: float = field(default_factory=lambda: _duration_env("FERRY_ROUTER_IDLE_TIMEOUT", 120.0))
    max_connections: int = field(default_factory=lambda: env_int("FERRY_ROUTER_MAX_CONNECTIONS", 4096))
    max_connections_per_host: int = field(
        default_factory=lambda: env_int("FERRY_ROUTER_MAX_CONNECTIONS_PER_HOST", 1024)
    )
    workers: int = field(default_factory=lambda: env_int("FERRY_ROUTER_WORKERS", 1))
    """Processes sharing the inference port (SO_REUSEPORT), each reading the bus itself."""
    worker_index: int = field(default_factory=lambda: env_int("FERRY_ROUTER_WORKER_INDEX", 0))
    drain_period: float = field(
        default_factory=lambda: _duration_env("FERRY_ROUTER_DRAIN_PERIOD", 5.0, zero_ok=True)
    )
    """After SIGTERM: unready but still serving, so load balancers stop sending first."""
    drain_timeout: float = field(default_factory=lambda: _duration_env("DRAIN_TIMEOUT", 300.0))
    """Then: listeners closed, in-flight requests get this long to finish before they are cut."""
    hold_timeout: float = field(
        default_factory=lambda: parse_duration(os.environ.get("FERRY_ROUTER_HOLD_TIMEOUT") or "30s")
    )
    """Scale from zero: how long a request waits for a model server with no ready endpoint (0: never)."""
    hold_queue: int = field(default_factory=lambda: env_int("FERRY_ROUTER_HOLD_QUEUE", 256))
    """Scale from zero: requests held per model server at most (more get 503 + Retry-After at once)."""
    native_apis: frozenset[str] = field(
        default_factory=lambda: frozenset(
            p.strip() for p in env_str("FERRY_ROUTER_NATIVE_APIS", "").split(",") if p.strip()
        )
    )
    """Paths of client APIs (``/v1/responses``, ``/v1/messages``) the engines serve themselves: proxied
    as they are instead of translated to chat completions."""
    gateway_mode: bool = field(default_factory=gateway_mode)
    """``FERRY_GATEWAY_API``: serve Gateway listeners and HTTPRoutes (off by default, as in Kthena)."""
    gateway_controller: str = field(default_factory=gateway_controller_name)
    advertise_address: str = field(default_factory=lambda: env_str("FERRY_ROUTER_ADVERTISE_ADDRESS", ""))
    """The address written to Gateway ``status.addresses`` (the router Service's; default: the bind
    host, or 127.0.0.1 when that is 0.0.0.0)."""
