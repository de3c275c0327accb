"""Compiled, immutable views of ModelRoutes, ModelServers and Pods as the router uses them.

Objects arrive as whole Kubernetes dicts (camelCase, design rule 1). They are turned once, on
arrival, into these small frozen records (regexes compiled, durations parsed) so the request path
never parses manifests. A manifest that cannot be compiled raises ``ValueError`` with the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ferry_router.durations import parse_duration

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

    @classmethod
    def parse(cls, raw: Any, where: str) -> StringMatch:
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected an object with exact, prefix or regex")
        regex = raw.get("regex")
        compiled = None
        if regex is not None:
            try:
                compiled = re.compile(str(regex))
            except re.error as exc:
                raise ValueError(f"{where}.regex: invalid regular expression {regex!r}: {exc}") from exc
        exact, prefix = raw.get("exact"), raw.get("prefix")
        return cls(
            exact=None if exact is None else str(exact),
            prefix=None if prefix is None else str(prefix),
            regex=compiled,
        )


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
        return bool(self.match_labels) and all(labels.get(k) == v for k, v in self.match_labels)

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

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


# --------------------------------------------------------------------------- parsing


def _meta(obj: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta["name"]), meta


def _labels(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a map of labels")
    return tuple(sorted((str(k), str(v)) for k, v in raw.items()))


def parse_route(obj: dict[str, Any]) -> Route:
    namespace, name, meta = _meta(obj)
    spec = obj.get("spec") or {}
    model_name = str(spec.get("modelName") or "")
    loras = tuple(str(x) for x in (spec.get("loraAdapters") or []))
    if not model_name and not loras:
        raise ValueError("spec: modelName and loraAdapters cannot both be empty")
    if any(not x for x in loras):
        raise ValueError("spec.loraAdapters: lora adapter name cannot be an empty string")
    raw_rules = spec.get("rules") or []
    if not raw_rules:
        raise ValueError("spec.rules: at least one rule is required")
    rules = tuple(_parse_rule(r, f"spec.rules[{i}]") for i, r in enumerate(raw_rules))
    return Route(
        namespace=namespace,
        name=name,
        model_name=model_name,
        lora_adapters=loras,
        rules=rules,
        rate_limit=_parse_rate_limit(spec.get("rateLimit")),
        created=str(meta.get("creationTimestamp") or ""),
        spec=spec,
    )


def _parse_rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected an object")
    match = raw.get("modelMatch")
    headers: tuple[tuple[str, StringMatch], ...] = ()
    uri = None
    body_model = None
    if match is not None:
        if not isinstance(match, dict):
            raise ValueError(f"{where}.modelMatch: expected an object")
        headers = tuple(
            (str(h).lower(), StringMatch.parse(m, f"{where}.modelMatch.headers.{h}"))
            for h, m in (match.get("headers") or {}).items()
        )
        if match.get("uri") is not None:
            uri = StringMatch.parse(match["uri"], f"{where}.modelMatch.uri")
        body = match.get("body") or {}
        if body.get("model") is not None:
            body_model = str(body["model"])
    raw_targets = raw.get("targetModels") or []
    if not raw_targets:
        raise ValueError(f"{where}.targetModels: at least one target is required")
    targets = []
    for j, t in enumerate(raw_targets):
        server, provider = t.get("modelServerName"), t.get("externalModelProviderName")
        if bool(server) == bool(provider):
            raise ValueError(
                f"{where}.targetModels[{j}]: exactly one of modelServerName and externalModelProviderName"
            )
        weight = t.get("weight")
        weight = 100 if weight is None else int(weight)
        if not 0 <= weight <= 100:
            raise ValueError(f"{where}.targetModels[{j}].weight: must be within 0..100, got {weight}")
        targets.append(Target(server=server, provider=provider, weight=weight))
    total = sum(t.weight for t in targets)
    return Rule(
        name=str(raw.get("name") or ""),
        headers=headers,
        uri=uri,
        body_model=body_model,
        has_match=match is not None,
        targets=tuple(targets),
        total_weight=total,
    )


def _parse_rate_limit(raw: Any) -> RateLimitSpec | None:
    if not raw:
        return None
    unit = str(raw.get("unit") or "second")
    if unit not in UNIT_SECONDS:
        raise ValueError(f"spec.rateLimit.unit: {unit!r} is not one of {sorted(UNIT_SECONDS)}")
    inp, out = raw.get("inputTokensPerUnit"), raw.get("outputTokensPerUnit")
    for label, value in (("inputTokensPerUnit", inp), ("outputTokensPerUnit", out)):
        if value is not None and int(value) < 1:
            raise ValueError(f"spec.rateLimit.{label}: must be at least 1")
    if inp is None and out is None:
        return None
    return RateLimitSpec(
        input_per_unit=None if inp is None else int(inp),
        output_per_unit=None if out is None else int(out),
        unit_seconds=UNIT_SECONDS[unit],
        unit=unit,
        is_global=raw.get("global") is not None,
    )


def parse_server(obj: dict[str, Any]) -> Server:
    namespace, name, _ = _meta(obj)
    spec = obj.get("spec") or {}
    engine = str(spec.get("inferenceEngine") or "vLLM").lower()
    if engine not in ENGINE_DEFAULT_PORT:
        raise ValueError(f"spec.inferenceEngine: {spec.get('inferenceEngine')!r} is not vLLM or SGLang")
    selector = spec.get("workloadSelector") or {}
    match_labels = _labels(selector.get("matchLabels"), "spec.workloadSelector.matchLabels")
    if not match_labels:
        raise ValueError("spec.workloadSelector.matchLabels: at least one label is required")
    pd = selector.get("pdGroup")
    pd_group = None
    if pd:
        pd_group = PDGroup(
            group_key=str(pd.get("groupKey") or ""),
            prefill_labels=_labels(pd.get("prefillLabels"), "spec.workloadSelector.pdGroup.prefillLabels"),
            decode_labels=_labels(pd.get("decodeLabels"), "spec.workloadSelector.pdGroup.decodeLabels"),
        )
        if not (pd_group.group_key and pd_group.prefill_labels and pd_group.decode_labels):
            raise ValueError(
                "spec.workloadSelector.pdGroup: groupKey, prefillLabels and decodeLabels are required"
            )
    port_spec = spec.get("workloadPort") or {}
    port = int(port_spec.get("port") or 0) or ENGINE_DEFAULT_PORT[engine]
    policy = spec.get("trafficPolicy") or {}
    retry = policy.get("retry") or {}
    timeout = parse_duration(str(policy["timeout"])) if policy.get("timeout") else None
    connector = (spec.get("kvConnector") or {}).get("type")
    if spec.get("kvConnector") is not None and not connector:
        connector = "http"  # the CRD default whenever the object is present
    return Server(
        namespace=namespace,
        name=name,
        model=spec.get("model") or None,
        engine=engine,
        match_labels=match_labels,
        pd_group=pd_group,
        port=port,
        scheme="https" if str(port_spec.get("protocol") or "http").lower() == "https" else "http",
        timeout=timeout or None,
        retry_attempts=int(retry["attempts"]) if retry.get("attempts") is not None else None,
        retry_interval=parse_duration(str(retry.get("retryInterval") or "0")) if retry else 0.0,
        kv_connector=str(connector).lower() if connector else None,
        spec=spec,
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
