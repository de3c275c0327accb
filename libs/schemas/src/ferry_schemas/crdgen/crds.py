"""One CustomResourceDefinition per Ferry kind, generated from the models.

Names, printer columns and subresources follow Kthena's CRDs (``reference/kthena/head/crds``) and,
for PodGroup, Volcano's. Output is deterministic: same models, same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ferry_schemas.models import (
    KINDS,
    AutoscalingPolicy,
    AutoscalingPolicyBinding,
    ExternalModelProvider,
    KubeObject,
    ModelBooster,
    ModelRoute,
    ModelServer,
    ModelServing,
    PodGroup,
)
from ferry_schemas.models.meta import JsonSchema

from .structural import to_structural

GENERATOR_ANNOTATION = "ferry.serving.volcano.sh/generated-by"
AGE_COLUMN: JsonSchema = {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"}


@dataclass(frozen=True)
class KindInfo:
    """What a CRD says about a kind beyond its schema."""

    description: str
    columns: list[JsonSchema] = field(default_factory=lambda: [AGE_COLUMN])
    subresources: JsonSchema = field(default_factory=lambda: {"status": {}})


def _column(name: str, path: str, type_: str, description: str, priority: int | None = None) -> JsonSchema:
    column: JsonSchema = {"name": name, "jsonPath": path, "type": type_, "description": description}
    if priority is not None:
        column["priority"] = priority
    return column


KIND_INFO: dict[type[KubeObject], KindInfo] = {
    ModelBooster: KindInfo(
        "ModelBooster deploys one model in one step: Ferry generates its ModelServing, ModelServer, "
        "ModelRoute and (when autoscaling is set) AutoscalingPolicy and AutoscalingPolicyBinding.",
        columns=[
            _column(
                "Active",
                ".status.conditions[?(@.type=='Active')].status",
                "string",
                "Whether the model booster is active",
            ),
            AGE_COLUMN,
        ],
    ),
    ModelServing: KindInfo(
        "ModelServing runs serving groups of role pods (entry and workers), gang-scheduled, with "
        "rolling updates.",
        columns=[
            _column("Replicas", ".status.replicas", "integer", "Total number of serving groups"),
            _column(
                "Available", ".status.availableReplicas", "integer", "Number of serving groups that are ready"
            ),
            _column(
                "Updated",
                ".status.updatedReplicas",
                "integer",
                "Number of serving groups updated to the latest revision",
            ),
            AGE_COLUMN,
        ],
        subresources={
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.labelSelector",
            },
        },
    ),
    ModelServer: KindInfo(
        "ModelServer tells the router which pods serve a model and how to reach them.",
        columns=[
            _column("Engine", ".spec.inferenceEngine", "string", "Inference engine used to serve the model"),
            _column("Port", ".spec.workloadPort.port", "integer", "Model server port"),
            _column("Protocol", ".spec.workloadPort.protocol", "string", "Model server protocol"),
            AGE_COLUMN,
        ],
    ),
    ModelRoute: KindInfo("ModelRoute maps a requested model name to ModelServers, by rules and weights."),
    ExternalModelProvider: KindInfo(
        "ExternalModelProvider is an OpenAI- or Anthropic-compatible third-party API a ModelRoute can target."
    ),
    AutoscalingPolicy: KindInfo(
        "AutoscalingPolicy says how a ModelServing (or its roles) is scaled by metrics."
    ),
    AutoscalingPolicyBinding: KindInfo("AutoscalingPolicyBinding binds an AutoscalingPolicy to its targets."),
    PodGroup: KindInfo(
        "PodGroup is Volcano's gang of pods scheduled together (shipped for clusters without Volcano).",
        columns=[
            _column("Status", ".status.phase", "string", "Phase of the pod group"),
            _column("MinMember", ".spec.minMember", "integer", "Pods that must be scheduled together"),
            _column("Runnings", ".status.running", "integer", "Running pods"),
            AGE_COLUMN,
            _column("Queue", ".spec.queue", "string", "Volcano queue", priority=1),
        ],
    ),
}


def _tidy_descriptions(node: Any) -> Any:
    """Docstrings use reST literals (````x````); CRDs read better with plain backticks."""
    if isinstance(node, dict):
        return {
            k: (v.replace("``", "`") if k == "description" and isinstance(v, str) else _tidy_descriptions(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_tidy_descriptions(v) for v in node]
    return node


def openapi_schema(kind: type[KubeObject]) -> JsonSchema:
    """The structural ``openAPIV3Schema`` of one kind."""
    generated = kind.model_json_schema(by_alias=True, mode="validation")
    schema = to_structural(generated, generated.get("$defs", {}))
    properties = schema["properties"]
    properties["apiVersion"] = {
        "type": "string",
        "description": "APIVersion defines the versioned schema of this representation of an object.",
    }
    properties["kind"] = {
        "type": "string",
        "description": "Kind is a string value representing the REST resource.",
    }
    # Only name/generateName may be constrained here; the bound keeps CEL rules that read the name cheap.
    properties["metadata"] = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 253}},
    }
    schema["description"] = KIND_INFO[kind].description
    schema.pop("x-kubernetes-preserve-unknown-fields", None)
    return dict(_tidy_descriptions(schema))


def crd(kind: type[KubeObject]) -> JsonSchema:
    """The CustomResourceDefinition of one kind."""
    info = KIND_INFO[kind]
    names: JsonSchema = {
        "kind": kind.KIND,
        "listKind": f"{kind.KIND}List",
        "plural": kind.PLURAL,
        "singular": kind.KIND.lower(),
    }
    if kind.SHORT_NAMES:
        names["shortNames"] = list(kind.SHORT_NAMES)
    if kind.CATEGORIES:
        names["categories"] = list(kind.CATEGORIES)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.PLURAL}.{kind.GROUP}",
            "annotations": {GENERATOR_ANNOTATION: "ferry_schemas.crdgen"},
        },
        "spec": {
            "group": kind.GROUP,
            "names": names,
            "scope": "Namespaced",
            "versions": [
                {
                    "name": kind.VERSION,
                    "served": True,
                    "storage": True,
                    "additionalPrinterColumns": info.columns,
                    "subresources": info.subresources,
                    "schema": {"openAPIV3Schema": openapi_schema(kind)},
                }
            ],
        },
    }


def file_name(kind: type[KubeObject]) -> str:
    return f"{kind.GROUP}_{kind.PLURAL}.yaml"


def render(document: JsonSchema) -> str:
    """Deterministic YAML (sorted keys, no line folding)."""
    body = yaml.safe_dump(
        document, sort_keys=True, width=10_000, allow_unicode=True, default_flow_style=False
    )
    return (
        "# Generated by `uv run python -m ferry_schemas.crdgen deploy/crds` from ferry_schemas.models.\n"
        "# Do not edit by hand.\n---\n" + body
    )


def generate() -> dict[str, str]:
    """File name → content, for every kind."""
    return {file_name(kind): render(crd(kind)) for kind in KINDS}
