"""Applier settings from the environment (defaults work on the local stack)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ferry_schemas.runtime.settings import ServiceSettings, env_float, env_int, env_str


@dataclass(frozen=True)
class ApplierSettings(ServiceSettings):
    """``FERRY_*`` service settings plus:

    ``KUBECONFIG`` (else in-cluster), ``FERRY_APPLIER_DESIRED_CONSUMER`` / ``..._PODS_CONSUMER`` /
    ``..._PODGROUPS_CONSUMER`` (durable names shared by replicas),
    ``FERRY_APPLIER_CONCURRENCY`` (reconciles in flight),
    ``FERRY_APPLIER_BATCH``, ``FERRY_APPLIER_BACKOFF`` / ``..._BACKOFF_MAX`` (nack delays, seconds),
    ``FERRY_APPLIER_KUBE_TIMEOUT`` (seconds per API call), ``FERRY_APPLIER_NAMESPACE`` (else
    ``FERRY_WATCH_NAMESPACE``: only reconcile owners in this namespace; empty = every namespace).
    """

    service: str = "ferry-applier"
    kubeconfig: str = field(default_factory=lambda: env_str("KUBECONFIG", ""))
    desired_consumer: str = field(
        default_factory=lambda: env_str("FERRY_APPLIER_DESIRED_CONSUMER", "applier-desired")
    )
    podgroups_consumer: str = field(
        default_factory=lambda: env_str("FERRY_APPLIER_PODGROUPS_CONSUMER", "applier-podgroups")
    )
    pods_consumer: str = field(default_factory=lambda: env_str("FERRY_APPLIER_PODS_CONSUMER", "applier-pods"))
    concurrency: int = field(default_factory=lambda: env_int("FERRY_APPLIER_CONCURRENCY", 8))
    batch: int = field(default_factory=lambda: env_int("FERRY_APPLIER_BATCH", 16))
    backoff: float = field(default_factory=lambda: env_float("FERRY_APPLIER_BACKOFF", 0.5))
    backoff_max: float = field(default_factory=lambda: env_float("FERRY_APPLIER_BACKOFF_MAX", 30.0))
    namespace: str = field(
        default_factory=lambda: env_str("FERRY_APPLIER_NAMESPACE", "") or env_str("FERRY_WATCH_NAMESPACE", "")
    )
    kube_timeout: float = field(default_factory=lambda: env_float("FERRY_APPLIER_KUBE_TIMEOUT", 30.0))
