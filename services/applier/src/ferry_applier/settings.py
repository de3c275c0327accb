"""Applier settings from the environment (defaults work on the local stack)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ferry_schemas.runtime.settings import ServiceSettings, env_bool, env_float, env_int, env_str


@dataclass(frozen=True)
class ApplierSettings(ServiceSettings):
    """``FERRY_*`` service settings plus:

    ``KUBECONFIG`` (else in-cluster), ``FERRY_APPLIER_DESIRED_CONSUMER`` (the desired sets' durable
    name, shared by replicas), ``FERRY_APPLIER_CONCURRENCY`` (reconciles in flight),
    ``FERRY_APPLIER_BATCH``, ``FERRY_APPLIER_BACKOFF`` / ``..._BACKOFF_MAX`` (retry back-off of a
    failed reconcile, seconds; retried forever), ``FERRY_RESYNC_PERIOD`` (seconds between resyncs of
    every owner, jittered ±10 %; 0 = off), ``FERRY_APPLIER_VIEW_WAIT`` (seconds a reconcile waits for
    the view to show the previous reconcile's writes),
    ``FERRY_APPLIER_KUBE_TIMEOUT`` (seconds per API call), ``FERRY_APPLIER_NAMESPACE`` (else
    ``FERRY_WATCH_NAMESPACE``: only reconcile owners in this namespace; empty = every namespace),
    ``FERRY_APPLIER_LEGACY_LEASE`` (also take the previous release's lease on every reconcile, not
    only while one of its replicas runs: set it before rolling back to that release, README).
    """

    service: str = "ferry-applier"
    kubeconfig: str = field(default_factory=lambda: env_str("KUBECONFIG", ""))
    desired_consumer: str = field(
        default_factory=lambda: env_str("FERRY_APPLIER_DESIRED_CONSUMER", "applier-desired")
    )
    resync_period: float = field(default_factory=lambda: env_float("FERRY_RESYNC_PERIOD", 600.0))
    view_wait: float = field(default_factory=lambda: env_float("FERRY_APPLIER_VIEW_WAIT", 2.0))
    concurrency: int = field(default_factory=lambda: env_int("FERRY_APPLIER_CONCURRENCY", 32))
    batch: int = field(default_factory=lambda: env_int("FERRY_APPLIER_BATCH", 16))
    backoff: float = field(default_factory=lambda: env_float("FERRY_APPLIER_BACKOFF", 0.5))
    backoff_max: float = field(default_factory=lambda: env_float("FERRY_APPLIER_BACKOFF_MAX", 30.0))
    namespace: str = field(
        default_factory=lambda: env_str("FERRY_APPLIER_NAMESPACE", "") or env_str("FERRY_WATCH_NAMESPACE", "")
    )
    kube_timeout: float = field(default_factory=lambda: env_float("FERRY_APPLIER_KUBE_TIMEOUT", 30.0))
    legacy_lease: bool = field(default_factory=lambda: env_bool("FERRY_APPLIER_LEGACY_LEASE", False))
