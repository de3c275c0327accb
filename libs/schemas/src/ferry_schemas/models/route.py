"""ModelRoute (``networking.serving.volcano.sh/v1alpha1``): which ModelServers serve a model name.

Shape and rules: ``spec/router.md`` §1.1 and §1.4. ``ModelMatch`` is shared with ModelBooster.
The one webhook rule CEL cannot express: header/uri ``regex`` values must compile as Go RE2
(:data:`ROUTER_CHECKS`; the router and the converter check it).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field

from .meta import KubeModel, KubeObject, cel, crd_default, validations

NETWORKING_GROUP = "networking.serving.volcano.sh"

MAX_RULES = 16
MAX_TARGETS = 16
MAX_LORA_ADAPTERS = 10
MAX_HEADER_MATCHES = 32

ROUTER_CHECKS: tuple[str, ...] = (
    "spec.rules[].modelMatch.headers{}.regex / uri.regex: must compile as a Go RE2 regular expression",
)
"""ModelRoute webhook rules CEL cannot express."""


class StringMatch(KubeModel):
    """How a string is matched; the first of ``exact``, ``prefix``, ``regex`` that is set is used."""

    exact: str | None = Field(None, max_length=1024)
    """The whole string."""
    prefix: str | None = Field(None, max_length=1024)
    """A prefix of the string."""
    regex: str | None = Field(None, max_length=1024)
    """A Go RE2 regular expression."""


class BodyMatch(KubeModel):
    model: str | None = None
    """Exact value of the request body's ``model``."""


class ModelMatch(KubeModel):
    """Request conditions, all ANDed; an absent condition matches everything."""

    headers: dict[str, StringMatch] | None = Field(
        None, json_schema_extra={"maxProperties": MAX_HEADER_MATCHES}
    )
    """Request headers by name."""
    uri: StringMatch | None = None
    """The request path."""
    body: BodyMatch | None = None
    """Fields of the request body."""


class TargetModel(KubeModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "(has(self.modelServerName) && self.modelServerName != '') != "
                "(has(self.externalModelProviderName) && self.externalModelProviderName != '')",
                "exactly one of modelServerName or externalModelProviderName must be set",
            )
        )
    )

    model_server_name: str | None = Field(None, max_length=253)
    """A ModelServer in the route's namespace."""
    external_model_provider_name: str | None = Field(None, max_length=253)
    """An ExternalModelProvider in the route's namespace."""
    weight: int | None = Field(None, ge=0, le=100, json_schema_extra=crd_default(100))
    """Relative weight of this target within its rule (0..100)."""


class Rule(KubeModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.targetModels.map(t, has(t.weight) ? t.weight : 100).sum() > 0",
                "targetModels: the sum of weights must be greater than 0",
                field_path=".targetModels",
            )
        )
    )

    name: str | None = Field(None, max_length=253)
    """Name of the rule (for logs)."""
    model_match: ModelMatch | None = None
    """Conditions a request must meet; absent matches every request."""
    target_models: list[TargetModel] = Field(min_length=1, max_length=MAX_TARGETS)
    """Where matching requests go, split by weight."""


class RedisConfig(KubeModel):
    address: str = Field(min_length=1, max_length=253)
    """``host:port`` of the Redis server holding shared counters."""


class GlobalRateLimit(KubeModel):
    redis: RedisConfig | None = None
    """The Redis server holding the shared counters."""


class RateLimit(KubeModel):
    input_tokens_per_unit: int | None = Field(None, ge=1, le=4294967295)
    """Prompt tokens allowed per unit of time."""
    output_tokens_per_unit: int | None = Field(None, ge=1, le=4294967295)
    """Completion tokens allowed per unit of time."""
    unit: Literal["second", "minute", "hour", "day", "month"] = Field(json_schema_extra=crd_default("second"))
    """The time unit of the token budgets."""
    global_: GlobalRateLimit | None = Field(None, alias="global")
    """When set, limits are shared by all router replicas."""


class ParentReference(KubeModel):
    """A Gateway API ``ParentReference``."""

    group: str | None = Field(
        None,
        max_length=253,
        pattern=r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        json_schema_extra=crd_default("gateway.networking.k8s.io"),
    )
    """API group of the parent."""
    kind: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        pattern=r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$",
        json_schema_extra=crd_default("Gateway"),
    )
    """Kind of the parent."""
    namespace: str | None = Field(
        None, min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )
    """Namespace of the parent (defaults to the route's)."""
    name: str = Field(min_length=1, max_length=253)
    """Name of the parent."""
    section_name: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    )
    """Listener of the parent."""
    port: int | None = Field(None, ge=1, le=65535)
    """Port of the parent's listener."""


class ModelRouteSpec(KubeModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "(has(self.modelName) && self.modelName != '') || "
                "(has(self.loraAdapters) && size(self.loraAdapters) > 0)",
                "spec: modelName and loraAdapters cannot both be empty",
            ),
            cel(
                "!has(self.loraAdapters) || size(self.loraAdapters) == 0 || self.rules.all(r, "
                "r.targetModels.all(t, !has(t.externalModelProviderName) || "
                "t.externalModelProviderName == ''))",
                "rules: lora routes must target modelServerName, not externalModelProviderName",
                field_path=".rules",
            ),
        )
    )

    model_name: str | None = Field(
        None,
        max_length=256,
        json_schema_extra=validations(cel("self == oldSelf", "modelName is immutable")),
    )
    """Model name matched against the request body's ``model``."""
    lora_adapters: list[str] | None = Field(
        None,
        max_length=MAX_LORA_ADAPTERS,
        json_schema_extra={
            "items": {
                "type": "string",
                "maxLength": 256,
                "x-kubernetes-validations": [
                    cel("self != ''", "lora adapter name cannot be an empty string")
                ],
            }
        },
    )
    """LoRA adapter names also served by this route."""
    parent_refs: list[ParentReference] | None = Field(None, max_length=32)
    """Gateways this route attaches to."""
    rules: list[Rule] = Field(max_length=MAX_RULES)
    """Ordered rules; the first match wins."""
    rate_limit: RateLimit | None = None
    """Token rate limits; absent means unlimited."""


class ModelRouteStatus(KubeModel):
    pass


class ModelRoute(KubeObject):
    GROUP: ClassVar[str] = NETWORKING_GROUP
    KIND: ClassVar[str] = "ModelRoute"
    PLURAL: ClassVar[str] = "modelroutes"

    spec: ModelRouteSpec
    status: ModelRouteStatus | None = None
