"""Compiled, immutable views of ModelRoutes, ModelServers and Pods as the router uses them.

Objects arrive as whole Kubernetes dicts (camelCase, design rule 1). On arrival each one is
validated by the shared ``ferry_schemas.models`` and compiled once into these small frozen records
(regexes compiled, durations parsed), so the request path never parses manifests. An object that
cannot be compiled raises ``ValueError`` naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ferry_schemas import models
from ferry_schemas.models import ModelRoute, ModelServer
from ferry_schemas.selection import selects
from pydantic import BaseModel, ValidationError

from ferry_router.durations import parse_duration

M = TypeVar("M", bound=BaseModel)

ENGINE_DEFAULT_PORT = {"vllm": 8000, "sglang": 30000}


@dataclass(frozen=True, slots=True)
class StringMatch:
    """``exact`` > ``prefix`` > ``regex`` (the first one set decides; none set matches anything)."""

    exact: str | None = None
    prefix: str | None = None
    regex: re.Pattern[str] | None = None

    def matches(self, value: str | None) -> bool:
        if self.exact is not None:
            return value is not None and value == self.exact
        if self.prefix is not None:
            return value is not None and value.startswith(self.prefix)
        if self.regex is not None:
            return value is not None and self.regex.search(value) is not None
        return True


@dataclass(frozen=True, slots=True)
class Target:
    server: str | None  # ModelServer name (same namespace as the route)
    provider: str | None  # ExternalModelProvider name
    weight: int


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    headers: tuple[tuple[str, StringMatch], ...]  # lower-cased header names
    uri: StringMatch | None
    body_model: str | None
    has_match: bool
    targets: tuple[Target, ...]
    total_weight: int

    def matches(self, model: str, path: str, headers: Any) -> bool:
        if not self.has_match:
            return True
        if self.body_model is not None and self.body_model != model:
            return False
        for name, matcher in self.headers:
            if not matcher.matches(headers.get(name)):
                return False
        return self.uri is None or self.uri.matches(path)


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    input_per_unit: int | None
    output_per_unit: int | None
    unit_seconds: float
    unit: str
    is_global: bool


UNIT_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0, "month": 30 * 86400.0}


@dataclass(frozen=True, slots=True)
class Route:
    namespace: str
    name: str
    model_name: str
    lora_adapters: tuple[str, ...]
    rules: tuple[Rule, ...]
    rate_limit: RateLimitSpec | None
    created: str  # RFC 3339 creationTimestamp (sortable as a string)
    spec: dict[str, Any] = field(compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def age_key(self) -> tuple[str, str, str]:
        """Oldest first; ties by namespace/name (deterministic, unlike resourceVersion strings)."""
        return (self.created or "9999", self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class PDGroup:
    group_key: str
    prefill_labels: tuple[tuple[str, str], ...]
    decode_labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Server:
    namespace: str
    name: str
    model: str | None
    engine: str  # "vllm" | "sglang" (lower-cased)
    match_labels: tuple[tuple[str, str], ...]
    pd_group: PDGroup | None
    port: int
    scheme: str
    timeout: float | None
    retry_attempts: int | None
    retry_interval: float
    kv_connector: str | None
    spec: dict[str, Any] = field(compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selects(self, labels: dict[str, str]) -> bool:
        return selects(self.match_labels, labels)

    @property
    def connector(self) -> str:
        """PD connector: explicit ``kvConnector.type``, else ``sglang`` for SGLang, else ``http``."""
        if self.kv_connector:
            return self.kv_connector
        return "sglang" if self.engine == "sglang" else "http"


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    ip: str
    labels: dict[str, str] = field(hash=False)
    ready: bool
    node: str = ""
    phase: str = ""
    start_time: str = ""
    key: str = field(init=False, compare=False, repr=False)  # "namespace/name", read per request

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")


# --------------------------------------------------------------------------- parsing


def _meta(obj: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta["name"]), meta


def _validated(model: type[M], obj: dict[str, Any]) -> M:
    """The typed object, or ``ValueError`` naming the first bad fields (pydantic's own detail)."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()[:3]
        )
        raise ValueError(problems) from None


def parse_route(obj: dict[str, Any]) -> Route:
    namespace, name, meta = _meta(obj)
    spec = _validated(ModelRoute, obj).spec
    model_name = spec.model_name or ""
    loras = tuple(spec.lora_adapters or ())
    if not model_name and not loras:
        raise ValueError("spec: modelName and loraAdapters cannot both be empty")
    if any(not x for x in loras):
        raise ValueError("spec.loraAdapters: lora adapter name cannot be an empty string")
    if not spec.rules:
        raise ValueError("spec.rules: at least one rule is required")
    rules = tuple(_compile_rule(r, f"spec.rules[{i}]") for i, r in enumerate(spec.rules))
    return Route(
        namespace=namespace,
        name=name,
        model_name=model_name,
        lora_adapters=loras,
        rules=rules,
        rate_limit=_compile_rate_limit(spec.rate_limit),
        created=str(meta.get("creationTimestamp") or ""),
        spec=obj.get("spec") or {},
    )


def compile_string_match(raw: models.StringMatch, where: str) -> StringMatch:
    compiled = None
    if raw.regex is not None:
        try:
            compiled = re.compile(raw.regex)
        except re.error as exc:
            raise ValueError(f"{where}.regex: invalid regular expression {raw.regex!r}: {exc}") from exc
    return StringMatch(exact=raw.exact, prefix=raw.prefix, regex=compiled)


def _compile_rule(raw: models.Rule, where: str) -> Rule:
    match = raw.model_match
    headers: tuple[tuple[str, StringMatch], ...] = ()
    uri = None
    body_model = None
    if match is not None:
        headers = tuple(
            (h.lower(), compile_string_match(m, f"{where}.modelMatch.headers.{h}"))
            for h, m in (match.headers or {}).items()
        )
        if match.uri is not None:
            uri = compile_string_match(match.uri, f"{where}.modelMatch.uri")
        if match.body is not None:
            body_model = match.body.model
    if not raw.target_models:
        raise ValueError(f"{where}.targetModels: at least one target is required")
    targets = []
    for j, t in enumerate(raw.target_models):
        if bool(t.model_server_name) == bool(t.external_model_provider_name):
            raise ValueError(
                f"{where}.targetModels[{j}]: exactly one of modelServerName and externalModelProviderName"
            )
        weight = 100 if t.weight is None else t.weight
        targets.append(
            Target(server=t.model_server_name, provider=t.external_model_provider_name, weight=weight)
        )
    return Rule(
        name=raw.name or "",
        headers=headers,
        uri=uri,
        body_model=body_model,
        has_match=match is not None,
        targets=tuple(targets),
        total_weight=sum(t.weight for t in targets),
    )


def _compile_rate_limit(raw: models.RateLimit | None) -> RateLimitSpec | None:
    if raw is None or (raw.input_tokens_per_unit is None and raw.output_tokens_per_unit is None):
        return None
    return RateLimitSpec(
        input_per_unit=raw.input_tokens_per_unit,
        output_per_unit=raw.output_tokens_per_unit,
        unit_seconds=UNIT_SECONDS[raw.unit],
        unit=raw.unit,
        is_global=raw.global_ is not None,
    )


def parse_server(obj: dict[str, Any]) -> Server:
    namespace, name, _ = _meta(obj)
    spec = _validated(ModelServer, obj).spec
    engine = spec.inference_engine.lower()
    selector = spec.workload_selector
    match_labels = tuple(sorted((selector.match_labels or {}).items()))
    if not match_labels:
        raise ValueError("spec.workloadSelector.matchLabels: at least one label is required")
    pd_group = None
    if selector.pd_group is not None:
        pd = selector.pd_group
        pd_group = PDGroup(
            group_key=pd.group_key,
            prefill_labels=tuple(sorted(pd.prefill_labels.items())),
            decode_labels=tuple(sorted(pd.decode_labels.items())),
        )
        if not (pd_group.group_key and pd_group.prefill_labels and pd_group.decode_labels):
            raise ValueError(
                "spec.workloadSelector.pdGroup: groupKey, prefillLabels and decodeLabels are required"
            )
    policy = spec.traffic_policy
    retry = policy.retry if policy is not None else None
    timeout = parse_duration(policy.timeout) if policy is not None and policy.timeout else None
    connector = None
    if spec.kv_connector is not None:
        connector = spec.kv_connector.type or "http"  # the CRD default whenever the object is present
    return Server(
        namespace=namespace,
        name=name,
        model=spec.model or None,
        engine=engine,
        match_labels=match_labels,
        pd_group=pd_group,
        port=spec.workload_port.port or ENGINE_DEFAULT_PORT[engine],
        scheme="https" if spec.workload_port.protocol == "https" else "http",
        timeout=timeout or None,
        retry_attempts=retry.attempts if retry is not None else None,
        retry_interval=parse_duration(retry.retry_interval or "0") if retry is not None else 0.0,
        kv_connector=connector,
        spec=obj.get("spec") or {},
    )


def parse_pod(obj: dict[str, Any]) -> Pod:
    namespace, name, meta = _meta(obj)
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    ready_condition = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    phase = str(status.get("phase") or "")
    ip = str(status.get("podIP") or "")
    ready = phase == "Running" and ready_condition and not meta.get("deletionTimestamp") and bool(ip)
    return Pod(
        namespace=namespace,
        name=name,
        ip=ip,
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        ready=ready,
        node=str((obj.get("spec") or {}).get("nodeName") or ""),
        phase=phase,
        start_time=str(status.get("startTime") or ""),
    )
