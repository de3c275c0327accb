"""Invalid manifests, one per validation rule, and what the API server must say about each.

Every case is a valid base object of one kind plus a JSON merge patch (RFC 7386: ``None`` deletes a
key, lists are replaced whole) that breaks exactly one rule: Kthena's webhook rules (expressed as
CEL in Ferry's CRDs) and the schema's own (enums, patterns, required fields, bounds).
``expect`` holds fragments that must all appear in ``kubectl apply``'s error: the field and the problem.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

WORKLOAD = "workload.serving.volcano.sh/v1alpha1"
NETWORKING = "networking.serving.volcano.sh/v1alpha1"


@dataclass(frozen=True)
class Replace:
    """In a patch: put ``value`` here verbatim (a merge patch cannot say "set to ``{}``")."""

    value: Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (plus :class:`Replace`)."""
    if isinstance(patch, Replace):
        return copy.deepcopy(patch.value)
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _worker(type_: str = "server", **extra: Any) -> dict[str, Any]:
    return {"type": type_, "image": "vllm/vllm-openai:latest", "replicas": 1, "pods": 1, **extra}


def _backend(**extra: Any) -> dict[str, Any]:
    backend = {
        "name": "main",
        "type": "vLLM",
        "modelURI": "hf://Qwen/Qwen2.5-0.5B-Instruct",
        "cacheURI": "hostpath://tmp/cache",
        "replicas": 1,
        "workers": [_worker()],
    }
    return {**backend, **extra}


def _pod_template(image: str = "vllm/vllm-openai:latest") -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "engine", "image": image}]}}


def _role(name: str = "leader", **extra: Any) -> dict[str, Any]:
    return {"name": name, "replicas": 1, "entryTemplate": _pod_template(), "workerReplicas": 0, **extra}


POLICY = {"metrics": [{"metricName": "kthena:num_requests_waiting", "targetValue": 10}]}

BASES: dict[str, dict[str, Any]] = {
    "ModelBooster": {
        "apiVersion": WORKLOAD,
        "kind": "ModelBooster",
        "metadata": {"name": "bad-booster"},
        "spec": {"backend": _backend()},
    },
    "ModelServing": {
        "apiVersion": WORKLOAD,
        "kind": "ModelServing",
        "metadata": {"name": "bad-serving"},
        "spec": {"replicas": 1, "template": {"roles": [_role()]}},
    },
    "ModelServer": {
        "apiVersion": NETWORKING,
        "kind": "ModelServer",
        "metadata": {"name": "bad-server"},
        "spec": {
            "inferenceEngine": "vLLM",
            "workloadSelector": {"matchLabels": {"app": "qwen"}},
            "workloadPort": {"port": 8000},
        },
    },
    "ModelRoute": {
        "apiVersion": NETWORKING,
        "kind": "ModelRoute",
        "metadata": {"name": "bad-route"},
        "spec": {
            "modelName": "qwen",
            "rules": [{"name": "default", "targetModels": [{"modelServerName": "qwen"}]}],
        },
    },
    "ExternalModelProvider": {
        "apiVersion": NETWORKING,
        "kind": "ExternalModelProvider",
        "metadata": {"name": "bad-provider"},
        "spec": {
            "baseURL": "https://api.deepseek.com",
            "auth": {"secretRef": {"name": "deepseek", "key": "apiKey"}},
        },
    },
    "AutoscalingPolicy": {
        "apiVersion": WORKLOAD,
        "kind": "AutoscalingPolicy",
        "metadata": {"name": "bad-policy"},
        "spec": {"metrics": [{"name": "rps", "targetValue": "0.5"}]},
    },
    "AutoscalingPolicyBinding": {
        "apiVersion": WORKLOAD,
        "kind": "AutoscalingPolicyBinding",
        "metadata": {"name": "bad-binding"},
        "spec": {
            "policyRef": {"name": "p"},
            "homogeneousTarget": {
                "minReplicas": 1,
                "maxReplicas": 2,
                "target": {"targetRef": {"name": "ms"}},
            },
        },
    },
    "PodGroup": {
        "apiVersion": "scheduling.volcano.sh/v1beta1",
        "kind": "PodGroup",
        "metadata": {"name": "bad-podgroup"},
        "spec": {"minMember": 1},
    },
}

PLURALS = {
    "ModelBooster": "modelboosters.workload.serving.volcano.sh",
    "ModelServing": "modelservings.workload.serving.volcano.sh",
    "ModelServer": "modelservers.networking.serving.volcano.sh",
    "ModelRoute": "modelroutes.networking.serving.volcano.sh",
    "ExternalModelProvider": "externalmodelproviders.networking.serving.volcano.sh",
    "AutoscalingPolicy": "autoscalingpolicies.workload.serving.volcano.sh",
    "AutoscalingPolicyBinding": "autoscalingpolicybindings.workload.serving.volcano.sh",
    "PodGroup": "podgroups.scheduling.volcano.sh",
}


_HOMOGENEOUS: dict[str, Any] = {"minReplicas": 1, "maxReplicas": 2, "target": {"targetRef": {"name": "ms"}}}
_SOURCES: dict[str, Any] = {"rps": {"pod": {"name": "rps"}}}


def _role_scaling(low: int, high: int, **extra: Any) -> dict[str, Any]:
    return {"minReplicas": low, "maxReplicas": high, "metricSources": _SOURCES, **extra}


def _ratio(num: str, den: str, low: str, high: str) -> dict[str, Any]:
    return {"numeratorRole": num, "denominatorRole": den, "minRatio": low, "maxRatio": high}


def _pd(roles: dict[str, Any], ratio: dict[str, Any] | None = None) -> dict[str, Any]:
    """A policy patch with a disaggregated target over ``roles`` (the base's spec.metrics inherited)."""
    target: dict[str, Any] = {"targetRef": {"name": "ms"}, "roles": roles}
    if ratio:
        target["ratioConstraint"] = ratio
    return {"spec": {"disaggregatedTarget": target}}


@dataclass(frozen=True)
class InvalidCase:
    id: str
    kind: str
    patch: dict[str, Any]
    expect: tuple[str, ...]

    def manifest(self) -> dict[str, Any]:
        result: dict[str, Any] = merge_patch(BASES[self.kind], self.patch)
        return result

    @property
    def name(self) -> str:
        return str(self.manifest()["metadata"]["name"])


def _mb(id_: str, spec: dict[str, Any], *expect: str) -> InvalidCase:
    return InvalidCase(id_, "ModelBooster", {"spec": spec}, expect)


def _mbb(id_: str, backend: dict[str, Any], *expect: str) -> InvalidCase:
    return _mb(id_, {"backend": backend}, *expect)


def _ms(id_: str, spec: dict[str, Any], *expect: str, metadata: dict[str, Any] | None = None) -> InvalidCase:
    patch: dict[str, Any] = {"spec": spec}
    if metadata:
        patch["metadata"] = metadata
    return InvalidCase(id_, "ModelServing", patch, expect)


def _roles(*roles: dict[str, Any]) -> dict[str, Any]:
    return {"template": {"roles": list(roles)}}


def _srv(id_: str, spec: dict[str, Any], *expect: str) -> InvalidCase:
    return InvalidCase(id_, "ModelServer", {"spec": spec}, expect)


def _rt(id_: str, spec: dict[str, Any], *expect: str) -> InvalidCase:
    return InvalidCase(id_, "ModelRoute", {"spec": spec}, expect)


def _targets(*targets: dict[str, Any]) -> dict[str, Any]:
    return {"rules": [{"name": "default", "targetModels": list(targets)}]}


PD_WORKERS = [_worker("prefill"), _worker("decode")]
TWO_BACKENDS = [
    _backend(name="a", minReplicas=1, maxReplicas=2, replicas=None),
    _backend(name="b", replicas=1),
]

CASES: tuple[InvalidCase, ...] = (
    # ------------------------------------------------------------ ModelBooster: schema
    _mbb("mb-type-enum", {"type": "TensorRT"}, "spec.backend.type", "Unsupported value", "TensorRT"),
    _mbb("mb-model-uri-pattern", {"modelURI": "ftp://models/x"}, "spec.backend.modelURI", "should match"),
    _mbb("mb-cache-uri-pattern", {"cacheURI": "nfs://cache"}, "spec.backend.cacheURI", "should match"),
    _mb("mb-name-pattern", {"name": "Bad_Name"}, "spec.name", "should match"),
    _mb("mb-name-too-long", {"name": "a" * 65}, "spec.name", "Too long"),
    _mbb("mb-backend-name-required", {"name": None}, "spec.backend.name", "Required value"),
    _mbb("mb-model-uri-required", {"modelURI": None}, "spec.backend.modelURI", "Required value"),
    _mbb(
        "mb-replicas-max", {"replicas": 1_000_001}, "spec.backend.replicas", "less than or equal to 1000000"
    ),
    _mbb("mb-replicas-negative", {"replicas": -1}, "spec.backend.replicas", "greater than or equal to 0"),
    _mbb(
        "mb-max-replicas-zero",
        {"replicas": None, "minReplicas": 0, "maxReplicas": 0},
        "spec.backend.maxReplicas",
        "greater than or equal to 1",
    ),
    _mbb("mb-workers-empty", {"workers": []}, "spec.backend.workers", "at least 1 item"),
    _mbb(
        "mb-worker-type-enum",
        {"workers": [_worker("leader")]},
        "spec.backend.workers[0].type",
        "Unsupported value",
    ),
    _mbb(
        "mb-worker-pods-negative",
        {"workers": [_worker(pods=-2)]},
        "spec.backend.workers[0].pods",
        "greater than or equal to 0",
    ),
    _mbb(
        "mb-lora-artifact-pattern",
        {"loraAdapters": [{"name": "sql", "artifactURL": "http://x"}]},
        "spec.backend.loraAdapters[0].artifactURL",
        "should match",
    ),
    _mb(
        "mb-backends-duplicate-name",
        {"backends": [_backend(name="a"), _backend(name="a")]},
        "spec.backends[1]",
        "Duplicate value",
    ),
    _mb(
        "mb-route-weight-max",
        {"backends": [_backend(name="a", routeWeight=101)]},
        "spec.backends[0].routeWeight",
        "less than or equal to 100",
    ),
    # ------------------------------------------------------------ ModelBooster: webhook rules (CEL)
    _mb("mb-no-backend", {"backend": None}, "spec", "exactly one of backend or backends must be set"),
    _mb(
        "mb-backend-and-backends",
        {"backends": [_backend(name="b")]},
        "spec",
        "exactly one of backend or backends must be set",
    ),
    _mbb(
        "mb-replicas-and-min-max",
        {"minReplicas": 1, "maxReplicas": 2},
        "spec.backend.replicas",
        "replicas cannot be set together with minReplicas/maxReplicas",
    ),
    _mbb(
        "mb-no-replicas",
        {"replicas": None, "maxReplicas": 2},
        "spec.backend",
        "either replicas or both minReplicas and maxReplicas must be set",
    ),
    _mbb(
        "mb-min-greater-than-max",
        {"replicas": None, "minReplicas": 3, "maxReplicas": 2},
        "spec.backend.minReplicas",
        "minReplicas cannot be greater than maxReplicas",
    ),
    _mbb(
        "mb-vllm-two-workers",
        {"workers": [_worker(), _worker()]},
        "spec.backend.workers",
        "if backend type is 'vLLM', there must be exactly one worker",
    ),
    _mbb(
        "mb-vllm-prefill-worker",
        {"workers": [_worker("prefill")]},
        "spec.backend.workers",
        "the worker type must be 'server'",
    ),
    _mbb(
        "mb-pd-server-worker",
        {"type": "vLLMDisaggregated", "workers": [_worker("prefill"), _worker("server")]},
        "spec.backend.workers",
        "all workers must be type 'prefill' or 'decode'",
    ),
    _mbb(
        "mb-mindie-pd-server-worker",
        {"type": "MindIEDisaggregated", "workers": [_worker("server")]},
        "spec.backend.workers",
        "'controller', or 'coordinator' (not 'server')",
    ),
    _mbb(
        "mb-pd-duplicate-prefill",
        {"type": "vLLMDisaggregated", "workers": [*PD_WORKERS, _worker("prefill")]},
        "spec.backend.workers",
        "duplicate prefill workers are not supported",
    ),
    _mbb(
        "mb-pd-duplicate-decode",
        {"type": "vLLMDisaggregated", "workers": [*PD_WORKERS, _worker("decode")]},
        "spec.backend.workers",
        "duplicate decode workers are not supported",
    ),
    _mbb(
        "mb-image-whitespace-only",
        {"workers": [_worker(image="   ")]},
        "spec.backend.workers[0].image",
        "image cannot be empty or whitespace only",
    ),
    _mbb(
        "mb-image-contains-space",
        {"workers": [_worker(image="vllm/vllm-openai latest")]},
        "spec.backend.workers[0].image",
        "image cannot contain whitespace",
    ),
    _mbb(
        "mb-pvc-model-needs-pvc-cache",
        {"modelURI": "pvc://models/qwen"},
        "spec.backend.cacheURI",
        "when modelURI uses pvc://, cacheURI must also use pvc://",
    ),
    _mbb(
        "mb-pvc-dotdot",
        {"modelURI": "pvc://models/../etc", "cacheURI": "pvc://models"},
        "spec.backend.modelURI",
        "must not contain '..' path segments",
    ),
    _mbb(
        "mb-pvc-cache-not-single-claim",
        {"modelURI": "pvc://models/qwen", "cacheURI": "pvc://models/sub"},
        "spec.backend.cacheURI",
        "single PVC claim name",
    ),
    _mb(
        "mb-policy-at-both-levels",
        {"autoscalingPolicy": POLICY, "backend": {"autoscalingPolicy": POLICY}},
        "spec.autoscalingPolicy",
        "cannot be set at both the model level and the backend level",
    ),
    _mb(
        "mb-cost-rate-without-policy",
        {"costExpansionRatePercent": 200},
        "spec.costExpansionRatePercent",
        "only allowed with a model-level autoscalingPolicy",
    ),
    _mbb(
        "mb-scaling-cost-without-policy",
        {"scalingCost": 3},
        "spec",
        "scalingCost and scaleToZeroGracePeriod are only allowed with a model-level autoscalingPolicy",
    ),
    _mb(
        "mb-scale-to-zero-too-long",
        {"autoscalingPolicy": POLICY, "backend": {"scaleToZeroGracePeriod": "31m"}},
        "spec.backend.scaleToZeroGracePeriod",
        "cannot exceed 1800s",
    ),
    _mb(
        "mb-scale-to-zero-not-duration",
        {"autoscalingPolicy": POLICY, "backend": {"scaleToZeroGracePeriod": "soon"}},
        "spec.backend.scaleToZeroGracePeriod",
        "should match",
    ),
    _mb(
        "mb-max-replicas-sum",
        {
            "backend": None,
            "backends": [
                _backend(name="a", replicas=None, minReplicas=1, maxReplicas=600_000),
                _backend(name="b", replicas=None, minReplicas=1, maxReplicas=600_000),
            ],
        },
        "spec.backends",
        "the sum of maxReplicas across all backends cannot exceed 1000000",
    ),
    _mb(
        "mb-route-weight-sum-zero",
        {"backend": None, "backends": [_backend(name="a", routeWeight=0), _backend(name="b", routeWeight=0)]},
        "spec.backends",
        "the sum of routeWeight must be greater than 0",
    ),
    _mbb(
        "mb-lora-duplicate-name",
        {
            "loraAdapters": [
                {"name": "sql", "artifactURL": "s3://a"},
                {"name": "sql", "artifactURL": "s3://b"},
            ]
        },
        "spec.backend.loraAdapters",
        "adapter names must be unique within a backend",
    ),
    _mb(
        "mb-policy-metric-both-names",
        {"autoscalingPolicy": {"metrics": [{"name": "a", "metricName": "a", "targetValue": 1}]}},
        "spec.autoscalingPolicy.metrics[0]",
        "exactly one of name or metricName must be set",
    ),
    # ------------------------------------------------------------ ModelServing
    _ms("ms-template-required", {"template": None}, "spec.template", "Required value"),
    _ms("ms-roles-empty", {"template": {"roles": []}}, "spec.template.roles", "at least 1 item"),
    _ms(
        "ms-too-many-roles",
        _roles(*(_role(f"r{i}") for i in range(5))),
        "spec.template.roles",
        "at most 4 items",
    ),
    _ms(
        "ms-roles-not-unique",
        _roles(_role("a"), _role("a")),
        "spec.template.roles",
        "roles name must be unique",
    ),
    _ms("ms-role-name-too-long", _roles(_role("a" * 13)), "spec.template.roles[0].name", "Too long"),
    _ms(
        "ms-role-name-not-dns1035",
        _roles(_role("Prefill")),
        "spec.template.roles[0].name",
        "role name must be a valid DNS-1035 label",
    ),
    _ms(
        "ms-entry-template-required",
        _roles({**_role(), "entryTemplate": None}),
        "spec.template.roles[0].entryTemplate",
        "Required value",
    ),
    _ms(
        "ms-worker-replicas-negative",
        _roles(_role(workerReplicas=-1)),
        "spec.template.roles[0].workerReplicas",
        "greater than or equal to 0",
    ),
    _ms(
        "ms-worker-template-required",
        _roles(_role(workerReplicas=2)),
        "spec.template.roles[0].workerTemplate",
        "workerTemplate is required when workerReplicas is greater than 0",
    ),
    _ms("ms-replicas-negative", {"replicas": -1}, "spec.replicas", "greater than or equal to 0"),
    _ms(
        "ms-role-replicas-negative",
        _roles(_role(replicas=-1)),
        "spec.template.roles[0].replicas",
        "greater than or equal to 0",
    ),
    _ms("ms-recovery-policy-enum", {"recoveryPolicy": "Always"}, "spec.recoveryPolicy", "Unsupported value"),
    _ms(
        "ms-rollout-type-enum",
        {"rolloutStrategy": {"type": "Canary"}},
        "spec.rolloutStrategy.type",
        "Unsupported value",
    ),
    _ms(
        "ms-rolling-config-with-role-rolling",
        {
            "rolloutStrategy": {
                "type": "RoleRollingUpdate",
                "rollingUpdateConfiguration": {"maxUnavailable": 1},
            }
        },
        "spec.rolloutStrategy.rollingUpdateConfiguration",
        "rollingUpdateConfiguration is only valid when rolloutStrategy.type is ServingGroupRollingUpdate",
    ),
    _ms(
        "ms-max-unavailable-zero",
        {
            "rolloutStrategy": {
                "type": "ServingGroupRollingUpdate",
                "rollingUpdateConfiguration": {"maxUnavailable": 0},
            }
        },
        "spec.rolloutStrategy.rollingUpdateConfiguration.maxUnavailable",
        "maxUnavailable cannot be 0",
    ),
    _ms(
        "ms-max-unavailable-percent-rounds-to-zero",
        {
            "replicas": 3,
            "rolloutStrategy": {
                "type": "ServingGroupRollingUpdate",
                "rollingUpdateConfiguration": {"maxUnavailable": "10%"},
            },
        },
        "spec.rolloutStrategy.rollingUpdateConfiguration.maxUnavailable",
        "maxUnavailable cannot be 0",
    ),
    _ms(
        "ms-max-unavailable-bad-percent",
        {
            "rolloutStrategy": {
                "type": "ServingGroupRollingUpdate",
                "rollingUpdateConfiguration": {"maxUnavailable": "150%"},
            }
        },
        "spec.rolloutStrategy.rollingUpdateConfiguration.maxUnavailable",
        "percentage between 0% and 100%",
    ),
    _ms(
        "ms-partition-negative",
        {
            "rolloutStrategy": {
                "type": "ServingGroupRollingUpdate",
                "rollingUpdateConfiguration": {"partition": -1},
            }
        },
        "spec.rolloutStrategy.rollingUpdateConfiguration.partition",
        "non-negative integer or a percentage",
    ),
    _ms(
        "ms-role-partition-without-role-rolling",
        _roles(_role(partition=1)),
        "spec.template.roles",
        "partition is only valid when rolloutStrategy.type is RoleRollingUpdate",
    ),
    _ms(
        "ms-role-max-unavailable-over-replicas",
        {"rolloutStrategy": {"type": "RoleRollingUpdate"}, **_roles(_role(replicas=2, maxUnavailable=3))},
        "spec.template.roles",
        "maxUnavailable cannot be greater than the role's replicas",
    ),
    _ms(
        "ms-role-max-unavailable-zero",
        {"rolloutStrategy": {"type": "RoleRollingUpdate"}, **_roles(_role(replicas=2, maxUnavailable="0%"))},
        "spec.template.roles",
        "maxUnavailable cannot be 0",
    ),
    _ms(
        "ms-recreate-with-role-rolling",
        {"recoveryPolicy": "ServingGroupRecreate", "rolloutStrategy": {"type": "RoleRollingUpdate"}},
        "spec.rolloutStrategy.type",
        "incompatible recoveryPolicy and rolloutStrategy.type",
    ),
    _ms(
        "ms-gang-unknown-role",
        {"template": {"gangPolicy": {"minRoleReplicas": {"ghost": 1}}, "roles": [_role()]}},
        "spec.template.gangPolicy.minRoleReplicas",
        "role ghost does not exist in template.roles",
    ),
    _ms(
        "ms-gang-over-replicas",
        {"template": {"gangPolicy": {"minRoleReplicas": {"leader": 2}}, "roles": [_role()]}},
        "spec.template.gangPolicy.minRoleReplicas",
        "cannot exceed that role's replicas",
    ),
    _ms(
        "ms-gang-negative",
        {"template": {"gangPolicy": {"minRoleReplicas": {"leader": -1}}, "roles": [_role()]}},
        "spec.template.gangPolicy.minRoleReplicas.leader",
        "greater than or equal to 0",
    ),
    _ms(
        "ms-generated-name-too-long",
        {},
        "metadata.name",
        "must be no more than 63 characters",
        metadata={"name": "m" * 56},
    ),
    _ms(
        "ms-name-not-dns1035", {}, "metadata.name", "must start with a letter", metadata={"name": "1serving"}
    ),
    _ms(
        "ms-container-image-space",
        _roles({**_role(), "entryTemplate": _pod_template("vllm latest")}),
        "spec.template.roles[0].entryTemplate.spec.containers[0].image",
        "image cannot contain spaces",
    ),
    _ms(
        "ms-container-image-blank",
        _roles({**_role(), "entryTemplate": _pod_template("  ")}),
        "spec.template.roles[0].entryTemplate.spec.containers[0].image",
        "image cannot be empty or whitespace only",
    ),
    _ms(
        "ms-plugin-type-enum",
        {"plugins": [{"name": "demo-pod-tweaks", "type": "External"}]},
        "spec.plugins[0].type",
        "Unsupported value",
    ),
    _ms(
        "ms-topology-mode-enum",
        {"template": {"networkTopology": {"groupPolicy": {"mode": "strict"}}, "roles": [_role()]}},
        "spec.template.networkTopology.groupPolicy.mode",
        "Unsupported value",
    ),
    # ------------------------------------------------------------ ModelServer
    _srv("srv-engine-enum", {"inferenceEngine": "TGI"}, "spec.inferenceEngine", "Unsupported value"),
    _srv("srv-engine-required", {"inferenceEngine": None}, "spec.inferenceEngine", "Required value"),
    _srv(
        "srv-port-range",
        {"workloadPort": {"port": 70000}},
        "spec.workloadPort.port",
        "less than or equal to 65535",
    ),
    _srv(
        "srv-port-required",
        {"workloadPort": {"port": None, "protocol": "http"}},
        "spec.workloadPort.port",
        "Required value",
    ),
    _srv(
        "srv-protocol-enum",
        {"workloadPort": {"protocol": "grpc"}},
        "spec.workloadPort.protocol",
        "Unsupported value",
    ),
    _srv(
        "srv-kv-connector-enum",
        {"kvConnector": {"type": "rdma"}},
        "spec.kvConnector.type",
        "Unsupported value",
    ),
    _srv("srv-model-too-long", {"model": "m" * 257}, "spec.model", "Too long"),
    _srv(
        "srv-match-labels-missing",
        {"workloadSelector": {"matchLabels": None}},
        "spec.workloadSelector.matchLabels",
        "workloadSelector.matchLabels is required",
    ),
    _srv(
        "srv-match-labels-empty",
        {"workloadSelector": {"matchLabels": Replace({})}},
        "spec.workloadSelector.matchLabels",
        "at least one label is required",
    ),
    _srv(
        "srv-label-value-invalid",
        {"workloadSelector": {"matchLabels": {"app": "not valid!"}}},
        "spec.workloadSelector.matchLabels",
        "every value must be a valid label value",
    ),
    _srv(
        "srv-label-key-invalid",
        {"workloadSelector": {"matchLabels": {"bad key": "x"}}},
        "spec.workloadSelector.matchLabels",
        "every key must be a valid label key",
    ),
    _srv(
        "srv-pd-group-key-required",
        {"workloadSelector": {"pdGroup": {"prefillLabels": {"r": "p"}, "decodeLabels": {"r": "d"}}}},
        "spec.workloadSelector.pdGroup.groupKey",
        "Required value",
    ),
    _srv(
        "srv-pd-group-key-empty",
        {
            "workloadSelector": {
                "pdGroup": {"groupKey": "", "prefillLabels": {"r": "p"}, "decodeLabels": {"r": "d"}}
            }
        },
        "spec.workloadSelector.pdGroup.groupKey",
        "groupKey must not be empty",
    ),
    _srv(
        "srv-pd-prefill-labels-empty",
        {"workloadSelector": {"pdGroup": {"groupKey": "g", "prefillLabels": {}, "decodeLabels": {"r": "d"}}}},
        "spec.workloadSelector.pdGroup.prefillLabels",
        "prefillLabels: at least one label is required",
    ),
    # ------------------------------------------------------------ ModelRoute
    _rt(
        "rt-no-model-name-no-lora",
        {"modelName": None},
        "spec",
        "modelName and loraAdapters cannot both be empty",
    ),
    _rt(
        "rt-empty-lora-name",
        {"loraAdapters": ["a", ""]},
        "spec.loraAdapters[1]",
        "lora adapter name cannot be an empty string",
    ),
    _rt(
        "rt-too-many-lora",
        {"loraAdapters": [f"l{i}" for i in range(11)]},
        "spec.loraAdapters",
        "at most 10 items",
    ),
    _rt("rt-rules-required", {"rules": None}, "spec.rules", "Required value"),
    _rt(
        "rt-targets-empty",
        {"rules": [{"name": "default", "targetModels": []}]},
        "spec.rules[0].targetModels",
        "at least 1 item",
    ),
    _rt(
        "rt-target-both",
        _targets({"modelServerName": "a", "externalModelProviderName": "b"}),
        "spec.rules[0].targetModels[0]",
        "exactly one of modelServerName or externalModelProviderName must be set",
    ),
    _rt(
        "rt-target-neither",
        _targets({"weight": 50}),
        "spec.rules[0].targetModels[0]",
        "exactly one of modelServerName or externalModelProviderName must be set",
    ),
    _rt(
        "rt-weight-over-100",
        _targets({"modelServerName": "a", "weight": 101}),
        "spec.rules[0].targetModels[0].weight",
        "less than or equal to 100",
    ),
    _rt(
        "rt-weight-sum-zero",
        _targets({"modelServerName": "a", "weight": 0}, {"modelServerName": "b", "weight": 0}),
        "spec.rules[0].targetModels",
        "the sum of weights must be greater than 0",
    ),
    _rt(
        "rt-lora-route-external",
        {"loraAdapters": ["sql"], **_targets({"externalModelProviderName": "openai"})},
        "spec.rules",
        "lora routes must target modelServerName",
    ),
    _rt(
        "rt-rate-limit-unit-enum",
        {"rateLimit": {"inputTokensPerUnit": 10, "unit": "week"}},
        "spec.rateLimit.unit",
        "Unsupported value",
    ),
    _rt(
        "rt-rate-limit-zero-tokens",
        {"rateLimit": {"inputTokensPerUnit": 0}},
        "spec.rateLimit.inputTokensPerUnit",
        "greater than or equal to 1",
    ),
    _rt(
        "rt-redis-address-required",
        {"rateLimit": {"inputTokensPerUnit": 5, "global": {"redis": {}}}},
        "spec.rateLimit.global.redis.address",
        "Required value",
    ),
    _rt(
        "rt-parent-ref-port",
        {"parentRefs": [{"name": "gw", "port": 0}]},
        "spec.parentRefs[0].port",
        "greater than or equal to 1",
    ),
    # ------------------------------------------------------------ AutoscalingPolicy / Binding / PodGroup
    InvalidCase(
        "asp-two-targets",
        "AutoscalingPolicy",
        {
            "spec": {
                "homogeneousTarget": {
                    "minReplicas": 1,
                    "maxReplicas": 2,
                    "target": {"targetRef": {"name": "a"}},
                },
                "heterogeneousTarget": {"params": [{"minReplicas": 1, "maxReplicas": 2}]},
            }
        },
        ("spec", "at most one of homogeneousTarget, heterogeneousTarget or disaggregatedTarget"),
    ),
    InvalidCase(
        "asp-tolerance-range",
        "AutoscalingPolicy",
        {"spec": {"tolerancePercent": 101}},
        ("spec.tolerancePercent", "less than or equal to 100"),
    ),
    InvalidCase(
        "asp-select-policy-enum",
        "AutoscalingPolicy",
        {"spec": {"behavior": {"scaleDown": {"selectPolicy": "Xor"}}}},
        ("spec.behavior.scaleDown.selectPolicy", "Unsupported value"),
    ),
    InvalidCase(
        "asp-panic-threshold-min",
        "AutoscalingPolicy",
        {"spec": {"behavior": {"scaleUp": {"panicPolicy": {"period": "1s", "panicThresholdPercent": 100}}}}},
        ("spec.behavior.scaleUp.panicPolicy.panicThresholdPercent", "greater than or equal to 110"),
    ),
    InvalidCase(
        "asp-target-value-quantity",
        "AutoscalingPolicy",
        {"spec": {"metrics": [{"name": "rps", "targetValue": "fast"}]}},
        ("spec.metrics[0].targetValue", "should match"),
    ),
    InvalidCase(
        "asp-ratio-same-role",
        "AutoscalingPolicy",
        {
            "spec": {
                "disaggregatedTarget": {
                    "targetRef": {"name": "ms"},
                    "roles": {
                        "p": {"minReplicas": 1, "maxReplicas": 2},
                        "d": {"minReplicas": 1, "maxReplicas": 2},
                    },
                    "ratioConstraint": {
                        "numeratorRole": "p",
                        "denominatorRole": "p",
                        "minRatio": "1",
                        "maxRatio": "2",
                    },
                }
            }
        },
        ("spec.disaggregatedTarget.ratioConstraint", "numeratorRole and denominatorRole must differ"),
    ),
    InvalidCase(
        "asp-metric-source-empty",
        "AutoscalingPolicy",
        {
            "spec": {
                "homogeneousTarget": {
                    "minReplicas": 1,
                    "maxReplicas": 2,
                    "target": {"targetRef": {"name": "ms"}, "metricSources": {"rps": {}}},
                }
            }
        },
        ("spec.homogeneousTarget.target.metricSources[rps]", "one metric source backend config is required"),
    ),
    InvalidCase(
        "asp-min-greater-than-max",
        "AutoscalingPolicy",
        {
            "spec": {
                "homogeneousTarget": {
                    "minReplicas": 3,
                    "maxReplicas": 2,
                    "target": {"targetRef": {"name": "ms"}},
                }
            }
        },
        ("spec.homogeneousTarget.minReplicas", "minReplicas cannot be greater than maxReplicas"),
    ),
    # Kthena's AutoscalingPolicy webhook (spec/autoscaler.md §1.4), as CEL
    InvalidCase(
        "asp-target-value-zero",
        "AutoscalingPolicy",
        {"spec": {"metrics": [{"name": "rps", "targetValue": 0}]}},
        ("spec.metrics[0].targetValue", "targetValue must be greater than 0"),
    ),
    InvalidCase(
        "asp-target-value-negative",
        "AutoscalingPolicy",
        {"spec": {"metrics": [{"name": "rps", "targetValue": "-1"}]}},
        ("spec.metrics[0].targetValue", "targetValue must be greater than 0"),
    ),
    InvalidCase(
        "asp-duplicate-metric",
        "AutoscalingPolicy",
        {"spec": {"metrics": [{"name": "rps", "targetValue": 1}, {"name": "rps", "targetValue": 2}]}},
        ("spec.metrics", "duplicate metric name"),
    ),
    InvalidCase(
        "asp-target-kind",
        "AutoscalingPolicy",
        {
            "spec": {
                "homogeneousTarget": {
                    **_HOMOGENEOUS,
                    "target": {"targetRef": {"kind": "Deployment", "name": "ms"}},
                }
            }
        },
        ("spec.homogeneousTarget.target.targetRef.kind", "targetRef.kind must be empty or ModelServing"),
    ),
    InvalidCase(
        "asp-target-name",
        "AutoscalingPolicy",
        {"spec": {"homogeneousTarget": {**_HOMOGENEOUS, "target": {"targetRef": {"kind": "ModelServing"}}}}},
        ("spec.homogeneousTarget.target.targetRef.name", "targetRef.name must be set"),
    ),
    InvalidCase(
        "asp-homogeneous-needs-metrics",
        "AutoscalingPolicy",
        {"spec": {"metrics": None, "homogeneousTarget": _HOMOGENEOUS}},
        ("spec.metrics", "metrics must be set for homogeneousTarget and heterogeneousTarget"),
    ),
    InvalidCase(
        "asp-period-negative",
        "AutoscalingPolicy",
        {"spec": {"behavior": {"scaleDown": {"period": "-1m"}}}},
        ("spec.behavior.scaleDown.period", "should match"),
    ),
    InvalidCase(
        "asp-window-too-long",
        "AutoscalingPolicy",
        {"spec": {"behavior": {"scaleUp": {"stablePolicy": {"stabilizationWindow": "35m"}}}}},
        ("spec.behavior.scaleUp.stablePolicy.stabilizationWindow", "between 0s and 30m"),
    ),
    InvalidCase(
        "asp-panic-period-too-long",
        "AutoscalingPolicy",
        {"spec": {"behavior": {"scaleUp": {"panicPolicy": {"period": "35m"}}}}},
        ("spec.behavior.scaleUp.panicPolicy.period", "between 0s and 30m"),
    ),
    InvalidCase(
        "asp-role-min-greater-than-max",
        "AutoscalingPolicy",
        _pd({"p": _role_scaling(9, 8)}),
        ("spec.disaggregatedTarget.roles[p].minReplicas", "minReplicas cannot be greater than maxReplicas"),
    ),
    InvalidCase(
        "asp-role-needs-metrics",
        "AutoscalingPolicy",
        {"spec": {**_pd({"p": _role_scaling(1, 4)})["spec"], "metrics": None}},
        ("spec.disaggregatedTarget.roles", "metrics must be set on every non-fixed role"),
    ),
    InvalidCase(
        "asp-role-needs-sources",
        "AutoscalingPolicy",
        _pd({"p": {"minReplicas": 1, "maxReplicas": 4}}),
        ("spec.disaggregatedTarget.roles", "metricSources must be set on every non-fixed role"),
    ),
    InvalidCase(
        "asp-role-source-key",
        "AutoscalingPolicy",
        _pd(
            {
                "p": {
                    "minReplicas": 1,
                    "maxReplicas": 4,
                    "metrics": [{"name": "rps", "targetValue": 1}],
                    "metricSources": {"other": _SOURCES["rps"]},
                }
            }
        ),
        (
            "spec.disaggregatedTarget.roles[p].metricSources",
            "metricSources key must match an effective metric",
        ),
    ),
    InvalidCase(
        "asp-role-duplicate-metric",
        "AutoscalingPolicy",
        _pd({"p": _role_scaling(1, 4, metrics=[{"name": "rps", "targetValue": 1}] * 2)}),
        ("spec.disaggregatedTarget.roles[p].metrics", "duplicate metric name"),
    ),
    InvalidCase(
        "asp-ratio-role-missing",
        "AutoscalingPolicy",
        _pd({"p": _role_scaling(1, 4), "d": _role_scaling(1, 4)}, _ratio("p", "x", "1", "2")),
        ("spec.disaggregatedTarget.ratioConstraint.denominatorRole", "denominatorRole must exist in roles"),
    ),
    InvalidCase(
        "asp-ratio-min-above-max",
        "AutoscalingPolicy",
        _pd({"p": _role_scaling(1, 4), "d": _role_scaling(1, 4)}, _ratio("p", "d", "2", "1")),
        ("spec.disaggregatedTarget.ratioConstraint.minRatio", "minRatio must be <= maxRatio"),
    ),
    InvalidCase(
        "asp-ratio-max-zero",
        "AutoscalingPolicy",
        _pd({"p": _role_scaling(1, 4), "d": _role_scaling(1, 4)}, _ratio("p", "d", "0", "0")),
        ("spec.disaggregatedTarget.ratioConstraint.maxRatio", "maxRatio must be > 0"),
    ),
    InvalidCase(
        "asp-ratio-zero-together",
        "AutoscalingPolicy",
        _pd({"p": _role_scaling(0, 4), "d": _role_scaling(1, 4)}, _ratio("p", "d", "250m", "4")),
        ("spec.disaggregatedTarget.ratioConstraint", "must both allow scale to zero"),
    ),
    InvalidCase(
        "asp-ratio-infeasible",
        "AutoscalingPolicy",
        _pd({"p": _role_scaling(4, 8), "d": _role_scaling(1, 2)}, _ratio("p", "d", "250m", "1")),
        ("spec.disaggregatedTarget.ratioConstraint.maxRatio", "ratioConstraint is infeasible"),
    ),
    InvalidCase(
        "aspb-no-target",
        "AutoscalingPolicyBinding",
        {"spec": {"homogeneousTarget": None}},
        (
            "spec",
            "exactly one of homogeneousTarget, heterogeneousTarget, scalingConfiguration or "
            "optimizerConfiguration must be set",
        ),
    ),
    InvalidCase(
        "aspb-policy-ref-required",
        "AutoscalingPolicyBinding",
        {"spec": {"policyRef": None}},
        ("spec.policyRef", "Required value"),
    ),
    # ------------------------------------------------------------ ExternalModelProvider (spec §1.4)
    InvalidCase(
        "emp-plain-http",
        "ExternalModelProvider",
        {"spec": {"baseURL": "http://api.deepseek.com"}},
        ("spec.baseURL", "should match '^https://.+'"),
    ),
    InvalidCase(
        "emp-userinfo",
        "ExternalModelProvider",
        {"spec": {"baseURL": "https://user:pw@api.deepseek.com"}},
        ("spec.baseURL", "without userinfo, query or fragment"),
    ),
    InvalidCase(
        "emp-query",
        "ExternalModelProvider",
        {"spec": {"baseURL": "https://api.deepseek.com/v1?x=1"}},
        ("spec.baseURL", "without userinfo, query or fragment"),
    ),
    InvalidCase(
        "emp-provider-type",
        "ExternalModelProvider",
        {"spec": {"providerType": "Gemini"}},
        ("spec.providerType", "Unsupported value"),
    ),
    InvalidCase(
        "emp-auth-scheme",
        "ExternalModelProvider",
        {"spec": {"auth": {"scheme": "Basic"}}},
        ("spec.auth.scheme", "Unsupported value"),
    ),
    InvalidCase(
        "emp-optional-secret",
        "ExternalModelProvider",
        {"spec": {"auth": {"secretRef": {"optional": True}}}},
        ("spec.auth", "secretRef.optional must be false or unset"),
    ),
    InvalidCase(
        "emp-secret-name-empty",
        "ExternalModelProvider",
        {"spec": {"auth": {"secretRef": {"name": ""}}}},
        ("spec.auth.secretRef.name", "secretRef.name is required"),
    ),
    InvalidCase(
        "emp-reserved-header",
        "ExternalModelProvider",
        {"spec": {"headers": {"Authorization": "Bearer leaked"}}},
        ("spec.headers", "credential and hop-by-hop headers are reserved"),
    ),
    InvalidCase(
        "emp-header-name",
        "ExternalModelProvider",
        {"spec": {"headers": {"bad header": "x"}}},
        ("spec.headers", "every name must be a valid HTTP header name"),
    ),
    InvalidCase(
        "emp-header-newline",
        "ExternalModelProvider",
        {"spec": {"headers": {"X-Tenant": "a\r\nX-Injected: 1"}}},
        ("spec.headers", "values must not contain CR or LF"),
    ),
    InvalidCase(
        "pg-min-member-negative",
        "PodGroup",
        {"spec": {"minMember": -1}},
        ("spec.minMember", "greater than or equal to 0"),
    ),
)
