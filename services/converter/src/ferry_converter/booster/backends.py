"""The backends of a ModelBooster, whichever API generation the manifest uses (design §1).

``spec.backend`` (Kthena HEAD) and ``spec.backends[]`` (v0.1.0) both become a list of
:class:`Backend` views carrying their field path, so every error can name the field to fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ferry_converter.errors import ConversionFailure
from ferry_converter.values import as_int

VLLM = "vLLM"
VLLM_DISAGGREGATED = "vLLMDisaggregated"
SUPPORTED_TYPES = (VLLM, VLLM_DISAGGREGATED)
DEFAULT_ROUTE_WEIGHT = 100


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


@dataclass(frozen=True)
class Backend:
    """One backend as the converter reads it (wire-form dicts for everything pod-shaped)."""

    path: str
    raw: dict[str, Any]
    name: str
    type: str
    model_uri: str
    cache_uri: str
    env: list[dict[str, Any]] = field(default_factory=list)
    env_from: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    scheduler_name: str = ""
    runtime_class_name: str | None = None
    route_weight: int = DEFAULT_ROUTE_WEIGHT
    scaling_cost: int = 0
    lora_adapters: list[dict[str, Any]] = field(default_factory=list)
    autoscaling_policy: dict[str, Any] | None = None

    @property
    def serving_replicas(self) -> int:
        """``replicas`` (HEAD), else ``minReplicas`` (v0.1.0-v0.4.0), else 0."""
        if self.replicas is not None:
            return self.replicas
        return self.min_replicas if self.min_replicas is not None else 0

    @property
    def lora_names(self) -> list[str]:
        return [str(adapter.get("name")) for adapter in self.lora_adapters if adapter.get("name")]


def _backend(path: str, raw: Any) -> Backend:
    if not isinstance(raw, dict):
        raise ConversionFailure(path, "a backend must be an object")
    runtime_class = raw.get("runtimeClassName")
    policy = raw.get("autoscalingPolicy")
    weight = as_int(raw.get("routeWeight"))
    return Backend(
        path=path,
        raw=raw,
        name=str(raw.get("name") or ""),
        type=str(raw.get("type") or ""),
        model_uri=str(raw.get("modelURI") or ""),
        cache_uri=str(raw.get("cacheURI") or ""),
        env=[item for item in _list(raw.get("env")) if isinstance(item, dict)],
        env_from=[item for item in _list(raw.get("envFrom")) if isinstance(item, dict)],
        workers=[item if isinstance(item, dict) else {} for item in _list(raw.get("workers"))],
        replicas=as_int(raw.get("replicas")),
        min_replicas=as_int(raw.get("minReplicas")),
        max_replicas=as_int(raw.get("maxReplicas")),
        scheduler_name=str(raw.get("schedulerName") or ""),
        runtime_class_name=runtime_class if isinstance(runtime_class, str) else None,
        route_weight=DEFAULT_ROUTE_WEIGHT if weight is None else weight,
        scaling_cost=as_int(raw.get("scalingCost")) or 0,
        lora_adapters=[item for item in _list(raw.get("loraAdapters")) if isinstance(item, dict)],
        autoscaling_policy=policy if isinstance(policy, dict) else None,
    )


def backends_of(spec: dict[str, Any]) -> list[Backend]:
    """The booster's backends; exactly one of ``spec.backend`` / ``spec.backends`` must be set."""
    single = spec.get("backend")
    many = spec.get("backends")
    if single is not None and many is not None:
        raise ConversionFailure(
            "spec.backends", "set either spec.backend or spec.backends, not both; move every backend into one"
        )
    if single is not None:
        return [_backend("spec.backend", single)]
    if not isinstance(many, list) or not many:
        raise ConversionFailure(
            "spec.backend", "a ModelBooster needs spec.backend (or a non-empty spec.backends)"
        )
    backends = [_backend(f"spec.backends[{index}]", item) for index, item in enumerate(many)]
    seen: dict[str, str] = {}
    for backend in backends:
        if backend.name in seen:
            raise ConversionFailure(
                f"{backend.path}.name",
                f'backend name "{backend.name}" is already used by {seen[backend.name]}; '
                "backend names must be unique",
            )
        seen[backend.name] = backend.path
    return backends
