"""ModelServer (``networking.serving.volcano.sh/v1alpha1``): the pods that serve one model.

Shape and rules: ``spec/router.md`` §1.2 and §1.4.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from .meta import KubeModel, KubeObject, cel, crd_default, replace_schema
from .route import NETWORKING_GROUP

LABEL_KEY_RULE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$"
)
LABEL_VALUE_RULE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
MAX_SELECTOR_LABELS = 32


def label_selector_schema(field: str, *, required: bool) -> dict[str, Any]:
    """A ``map[string]string`` of label selector terms, checked like ``metav1.LabelSelector``."""
    rules = [
        cel(
            "self.all(k, size(k) <= 317 && k.matches('" + LABEL_KEY_RULE.replace("\\", "\\\\") + "'))",
            f"{field}: every key must be a valid label key (an optional DNS subdomain prefix and '/', "
            "then up to 63 alphanumerics, '-', '_' or '.')",
        ),
        cel(
            "self.all(k, size(self[k]) <= 63 && self[k].matches('"
            + LABEL_VALUE_RULE.replace("\\", "\\\\")
            + "'))",
            f"{field}: every value must be a valid label value (at most 63 alphanumerics, '-', '_' or '.')",
        ),
    ]
    if required:
        rules.insert(0, cel("size(self) > 0", f"{field}: at least one label is required"))
    return {
        "type": "object",
        "additionalProperties": {"type": "string", "maxLength": 63},
        "maxProperties": MAX_SELECTOR_LABELS,
        "x-kubernetes-validations": rules,
    }


class PDGroup(KubeModel):
    """How prefill and decode pods of one group are told apart."""

    group_key: str = Field(
        max_length=317,
        json_schema_extra={"x-kubernetes-validations": [cel("self != ''", "groupKey must not be empty")]},
    )
    """Label key whose value identifies a prefill/decode group."""
    prefill_labels: dict[str, str] = Field(
        json_schema_extra=replace_schema(label_selector_schema("prefillLabels", required=True))
    )
    """Labels of the prefill pods."""
    decode_labels: dict[str, str] = Field(
        json_schema_extra=replace_schema(label_selector_schema("decodeLabels", required=True))
    )
    """Labels of the decode pods."""


class WorkloadSelector(KubeModel):
    match_labels: dict[str, str] | None = Field(
        None, json_schema_extra=replace_schema(label_selector_schema("matchLabels", required=True))
    )
    """Pods in the ModelServer's namespace matching all these labels belong to it."""
    pd_group: PDGroup | None = None
    """Set for prefill/decode disaggregated serving."""


class WorkloadPort(KubeModel):
    port: int = Field(ge=1, le=65535)
    """Port of the engine (inference, `/metrics`, `/v1/models`)."""
    protocol: Literal["http", "https"] | None = Field(None, json_schema_extra=crd_default("http"))
    """`http` or `https`."""


class Retry(KubeModel):
    attempts: int | None = Field(None, ge=0, le=2147483647)
    """Upstream attempts (kept for compatibility)."""
    retry_interval: str | None = Field(None, json_schema_extra=crd_default("100ms"))
    """Pause between attempts (a Go duration)."""


class TrafficPolicy(KubeModel):
    timeout: str | None = None
    """Bound on connect+send+response headers of an upstream call (a Go duration)."""
    retry: Retry | None = None
    """Retries of upstream calls."""


class KVConnector(KubeModel):
    type: Literal["http", "lmcache", "nixl", "mooncake"] | None = Field(
        None, json_schema_extra=crd_default("http")
    )
    """How KV cache moves from prefill to decode pods."""


class ModelServerSpec(KubeModel):
    model: str | None = Field(None, max_length=256)
    """When set, replaces the request body's ``model`` (except for LoRA requests)."""
    inference_engine: Literal["vLLM", "SGLang"]
    """The engine the pods run."""
    workload_selector: WorkloadSelector = Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.matchLabels)",
                    "workloadSelector.matchLabels is required",
                    field_path=".matchLabels",
                )
            ]
        }
    )
    """Which pods serve the model."""
    workload_port: WorkloadPort
    """Where the pods listen."""
    traffic_policy: TrafficPolicy | None = None
    """Timeouts and retries towards the pods."""
    kv_connector: KVConnector | None = None
    """KV-cache transfer for prefill/decode serving."""


class ModelServerStatus(KubeModel):
    pass


class ModelServer(KubeObject):
    GROUP: ClassVar[str] = NETWORKING_GROUP
    KIND: ClassVar[str] = "ModelServer"
    PLURAL: ClassVar[str] = "modelservers"

    spec: ModelServerSpec
    status: ModelServerStatus | None = None
