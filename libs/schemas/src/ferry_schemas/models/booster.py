"""ModelBooster (``workload.serving.volcano.sh/v1alpha1``): one model, deployed in one step.

The superset of Kthena's generations (``spec/booster.md`` §1 and §8, design §1): ``backend`` or
``backends``, ``replicas`` or ``minReplicas``/``maxReplicas``, model- and backend-level
``autoscalingPolicy``, LoRA adapters, ``routeWeight``, ``modelMatch``; status with conditions and the
aggregated counts of seed 004. The webhook rules that CEL can express are CEL rules on the types below
(``spec/booster.md`` §2.3, §8.1, §8.3).

Webhook rules the CRD does NOT check (the converter must, setting ``Failed`` with the message):

* engine port (§2.3 rule 4): ``workers[].config.port`` of server/prefill/decode workers parses as an
  integer 1..65535 and all agree (``config`` is free-form JSON, invisible to CEL);
* KV connector (§2.3 rule 6, §3.7): ``kv-transfer-config`` is a JSON string with a supported
  ``kv_connector`` and a ``kv_role`` allowed for the worker type; prefill and decode use the same one;
* PVC reachability (§2.3 rule 5d): the POSIX-cleaned ``pvc://`` model path lies under the cacheURI claim
  mount (needs path cleaning; rules 5a-5c are CEL);
* LoRA (§8.3): an adapter name differs from the model name (a root rule reading ``metadata.name`` next to
  every adapter exceeds the API server's CEL cost budget).

Seed-era rules deliberately NOT enforced (examples Ferry must accept break them):

* without ``autoscalingPolicy`` Gen B required ``minReplicas == maxReplicas`` (seed 000's example has
  1 and 2): the converter serves ``minReplicas`` serving groups;
* Gen A required ``minReplicas >= 1`` with a backend-level policy and ``sum(minReplicas) >= 1`` with a
  model-level one (Kthena's own v0.1.0 converter inputs use 0: scale to zero);
* Gen A's mutator defaulted ``scaleToZeroGracePeriod`` (30s) and ``costExpansionRatePercent`` (200) when a
  model-level policy is set, then required them and ``scalingCost``: the converter applies those defaults
  (and cost 0) instead.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from .autoscaling import WORKLOAD_GROUP, BoosterAutoscalingPolicy
from .meta import (
    CONDITIONS_LIST,
    DNS1123_LABEL,
    FREE_FORM,
    Condition,
    KubeModel,
    KubeObject,
    cel,
    crd_default,
    free_form_list,
    replace_schema,
    validations,
)
from .route import ModelMatch

MAX_REPLICAS = 1_000_000
MAX_BACKENDS = 16
MAX_WORKERS = 16
MAX_LORA_ADAPTERS = 64
MAX_IMAGE_LENGTH = 1024

BackendType = Literal["vLLM", "vLLMDisaggregated", "SGLang", "MindIE", "MindIEDisaggregated"]
WorkerType = Literal["server", "prefill", "decode", "controller", "coordinator"]

GO_DURATION = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"

CONVERTER_CHECKS: tuple[str, ...] = (
    "spec.backend(s).workers[].config.port: every server/prefill/decode worker's port parses as 1..65535 "
    "and all agree (config is free-form JSON, invisible to CEL)",
    "spec.backend(s).workers[].config.kv-transfer-config: JSON string with a supported kv_connector "
    "and a kv_role "
    "allowed for the worker type; prefill and decode configure the same connector (booster.md §3.7)",
    "spec.backend(s).modelURI with pvc://: the POSIX-cleaned source path is reachable via the cacheURI "
    "claim mount (booster.md §2.3 rule 5d; needs path cleaning)",
    "spec.backend(s).loraAdapters[].name must differ from the model name (metadata.name): a rule on the "
    "root reading metadata.name next to every adapter exceeds the API server's CEL cost budget",
)
"""ModelBooster webhook rules CEL cannot express; the converter checks them and sets ``Failed``."""


class LoraAdapter(KubeModel):
    name: str = Field(max_length=63, pattern=DNS1123_LABEL)
    """Adapter name, also a model name clients can request."""
    artifact_url: str = Field(alias="artifactURL", max_length=2048, pattern=r"^(hf://|s3://|pvc://).+")
    """Where to download the adapter from."""


def _image_rules() -> dict[str, Any]:
    return validations(
        cel(
            "!self.matches('^\\\\s+$')",
            "invalid container image reference: image cannot be empty or whitespace only",
        ),
        cel(
            "self.matches('^\\\\s+$') || !self.matches('\\\\s')",
            "invalid container image reference: image cannot contain whitespace",
        ),
    )


class ModelWorker(KubeModel):
    """One kind of pod of a backend (an engine server, a prefill or a decode instance, …)."""

    type: WorkerType | None = Field(None, json_schema_extra=crd_default("server"))
    """Role of the worker."""
    image: str | None = Field(None, max_length=MAX_IMAGE_LENGTH, json_schema_extra=_image_rules())
    """Engine container image."""
    replicas: int | None = Field(None, ge=0, le=MAX_REPLICAS)
    """Instances of this worker per serving group."""
    pods: int | None = Field(None, ge=0, le=MAX_REPLICAS)
    """Pods per instance; more than one runs the engine multi-node (Ray)."""
    resources: dict[str, Any] | None = Field(None, json_schema_extra=replace_schema(FREE_FORM))
    """Engine container resources (``core/v1 ResourceRequirements``)."""
    affinity: dict[str, Any] | None = Field(None, json_schema_extra=replace_schema(FREE_FORM))
    """Pod affinity (``core/v1 Affinity``)."""
    tolerations: list[dict[str, Any]] | None = Field(None, json_schema_extra=replace_schema(free_form_list()))
    """Pod tolerations (``core/v1 Toleration``)."""
    config: Any = Field(
        None, json_schema_extra=replace_schema({"x-kubernetes-preserve-unknown-fields": True})
    )
    """Engine arguments (free-form JSON)."""


def _backend_rules() -> dict[str, Any]:
    single = "['vLLM', 'SGLang', 'MindIE']"
    return validations(
        cel(
            "!(has(self.replicas) && (has(self.minReplicas) || has(self.maxReplicas)))",
            "replicas cannot be set together with minReplicas/maxReplicas",
            field_path=".replicas",
        ),
        cel(
            "has(self.replicas) || (has(self.minReplicas) && has(self.maxReplicas))",
            "either replicas or both minReplicas and maxReplicas must be set",
        ),
        cel(
            "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
            "minReplicas cannot be greater than maxReplicas",
            field_path=".minReplicas",
        ),
        cel(
            f"!(self.type in {single}) || size(self.workers) == 1",
            message_expression=(
                '"workers: if backend type is \'" + self.type + "\', there must be exactly one worker"'
            ),
            field_path=".workers",
        ),
        cel(
            f"!(self.type in {single}) || size(self.workers) != 1 || !has(self.workers[0].type) "
            "|| self.workers[0].type == 'server'",
            message_expression=(
                '"workers[0].type: if backend type is \'" + self.type + "\', the worker type must '
                "be 'server'\""
            ),
            field_path=".workers",
        ),
        cel(
            "self.type != 'vLLMDisaggregated' || self.workers.all(w, has(w.type) && w.type in "
            "['prefill', 'decode'])",
            "workers: if backend type is 'vLLMDisaggregated', all workers must be type 'prefill' or 'decode'",
            field_path=".workers",
        ),
        cel(
            "self.type != 'MindIEDisaggregated' || self.workers.all(w, has(w.type) && "
            "w.type in ['prefill', 'decode', 'controller', 'coordinator'])",
            "workers: if backend type is 'MindIEDisaggregated', all workers must be type 'prefill', "
            "'decode', "
            "'controller', or 'coordinator' (not 'server')",
            field_path=".workers",
        ),
        cel(
            "self.workers.filter(w, has(w.type) && w.type == 'prefill').size() <= 1",
            "workers: found more than one prefill worker, expected at most 1; duplicate prefill "
            "workers are not supported",
            field_path=".workers",
        ),
        cel(
            "self.workers.filter(w, has(w.type) && w.type == 'decode').size() <= 1",
            "workers: found more than one decode worker, expected at most 1; duplicate decode "
            "workers are not supported",
            field_path=".workers",
        ),
        cel(
            "!self.modelURI.startsWith('pvc://') || (has(self.cacheURI) && "
            "self.cacheURI.startsWith('pvc://'))",
            "cacheURI: when modelURI uses pvc://, cacheURI must also use pvc://",
            field_path=".cacheURI",
        ),
        cel(
            "!self.modelURI.startsWith('pvc://') || !self.modelURI.matches('^pvc://(.*/)?\\\\.\\\\.(/.*)?$')",
            "modelURI: pvc:// modelURI must not contain '..' path segments",
            field_path=".modelURI",
        ),
        cel(
            "!has(self.cacheURI) || !self.cacheURI.startsWith('pvc://') || "
            "self.cacheURI.matches('^pvc:///*[^/]+/*$')",
            "cacheURI: pvc:// cacheURI must contain a single PVC claim name with no path separator "
            "(claim names cannot contain '/')",
            field_path=".cacheURI",
        ),
    )


class ModelBackend(KubeModel):
    """One inference backend: an engine type, a model source and its workers."""

    model_config = ConfigDict(json_schema_extra=_backend_rules())

    name: str = Field(max_length=63, pattern=DNS1123_LABEL)
    """Backend name; part of the generated object names (``<booster>-<backend>``)."""
    type: BackendType
    """Inference engine of the backend."""
    model_uri: str = Field(alias="modelURI", max_length=2048, pattern=r"^(hf://|s3://|obs://|pvc://|ms://).+")
    """Where the model is downloaded from."""
    cache_uri: str | None = Field(None, alias="cacheURI", max_length=2048, pattern=r"^(hostpath://|pvc://).+")
    """Where the model is cached."""
    env_from: list[dict[str, Any]] | None = Field(None, json_schema_extra=replace_schema(free_form_list()))
    """Sources of environment variables for the downloader and engine containers."""
    env: list[dict[str, Any]] | None = Field(
        None, json_schema_extra=replace_schema(free_form_list(key="name"))
    )
    """Environment of the engine containers; some names are interpreted (RUNTIME_PORT, …)."""
    replicas: int | None = Field(None, ge=0, le=MAX_REPLICAS)
    """Serving groups (current Kthena); exclusive with minReplicas/maxReplicas."""
    min_replicas: int | None = Field(None, ge=0, le=MAX_REPLICAS)
    """Lower bound of serving groups (seed era)."""
    max_replicas: int | None = Field(None, ge=1, le=MAX_REPLICAS)
    """Upper bound of serving groups (seed era)."""
    workers: list[ModelWorker] = Field(min_length=1, max_length=MAX_WORKERS)
    """The backend's workers (1 to 16)."""
    scheduler_name: str | None = Field(None, max_length=253)
    """Scheduler of the generated pods."""
    runtime_class_name: str | None = Field(None, max_length=253)
    """RuntimeClass of the generated pods."""
    autoscaling_policy: BoosterAutoscalingPolicy | None = None
    """Backend-level autoscaling (generates ``<booster>-<backend>`` policy and binding)."""
    route_weight: int | None = Field(None, ge=0, le=100, json_schema_extra=crd_default(100))
    """Share of the model's traffic for this backend."""
    scaling_cost: int | None = Field(None, ge=0)
    """Relative cost of one instance, for model-level (cost-optimised) autoscaling."""
    scale_to_zero_grace_period: str | None = Field(
        None,
        max_length=32,
        pattern=GO_DURATION,
        json_schema_extra=validations(
            cel(
                "!self.matches('"
                + GO_DURATION.replace("\\", "\\\\")
                + "') || duration(self) <= duration('1800s')",
                "scaleToZeroGracePeriod cannot exceed 1800s",
            )
        ),
    )
    lora_adapters: list[LoraAdapter] | None = Field(
        None,
        max_length=MAX_LORA_ADAPTERS,
        json_schema_extra=validations(
            cel(
                "self.all(x, self.exists_one(y, y.name == x.name))",
                "loraAdapters: adapter names must be unique within a backend",
            )
        ),
    )
    """LoRA adapters loaded by this backend (seed era)."""


def _spec_rules() -> dict[str, Any]:
    no_backend_policy = (
        "(!has(self.backend) || !has(self.backend.autoscalingPolicy)) && "
        "(!has(self.backends) || self.backends.all(b, !has(b.autoscalingPolicy)))"
    )
    return validations(
        cel(
            "has(self.backend) != has(self.backends)", "spec: exactly one of backend or backends must be set"
        ),
        cel(
            f"!has(self.autoscalingPolicy) || ({no_backend_policy})",
            "autoscalingPolicy: cannot be set at both the model level and the backend level",
            field_path=".autoscalingPolicy",
        ),
        cel(
            "has(self.autoscalingPolicy) || !has(self.costExpansionRatePercent)",
            "costExpansionRatePercent: only allowed with a model-level autoscalingPolicy",
            field_path=".costExpansionRatePercent",
        ),
        cel(
            "has(self.autoscalingPolicy) || ((!has(self.backend) || (!has(self.backend.scalingCost) && "
            "!has(self.backend.scaleToZeroGracePeriod))) && (!has(self.backends) || self.backends.all(b, "
            "!has(b.scalingCost) && !has(b.scaleToZeroGracePeriod))))",
            "scalingCost and scaleToZeroGracePeriod are only allowed with a model-level autoscalingPolicy",
        ),
        cel(
            "!has(self.backends) || self.backends.map(b, has(b.maxReplicas) ? b.maxReplicas : "
            "(has(b.replicas) ? b.replicas : 0)).sum() <= 1000000",
            "backends: the sum of maxReplicas across all backends cannot exceed 1000000",
            field_path=".backends",
        ),
        cel(
            "!has(self.backends) || self.backends.map(b, has(b.routeWeight) ? b.routeWeight : 100).sum() > 0",
            "backends: the sum of routeWeight must be greater than 0",
            field_path=".backends",
        ),
    )


class ModelBoosterSpec(KubeModel):
    model_config = ConfigDict(json_schema_extra=_spec_rules())

    name: str | None = Field(None, max_length=64, pattern=DNS1123_LABEL)
    """Model name clients request (defaults to ``metadata.name``)."""
    owner: str | None = None
    """Free-text owner of the model."""
    backend: ModelBackend | None = None
    """The single backend (current Kthena); exclusive with ``backends``."""
    backends: list[ModelBackend] | None = Field(
        None,
        min_length=1,
        max_length=MAX_BACKENDS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Several backends sharing the model's traffic by ``routeWeight`` (seed era)."""
    model_match: ModelMatch | None = None
    """Extra request conditions for the generated ModelRoute."""
    autoscaling_policy: BoosterAutoscalingPolicy | None = None
    """Model-level autoscaling (generates a ``<booster>`` policy and binding)."""
    cost_expansion_rate_percent: int | None = Field(None, ge=0, le=1000)
    """How far cost-optimised autoscaling may exceed the cheapest plan (percent)."""


class BackendStatus(KubeModel):
    name: str
    """The backend's ModelServing."""
    replicas: int
    """Its serving groups."""


class ModelBoosterStatus(KubeModel):
    conditions: list[Condition] | None = Field(None, json_schema_extra=CONDITIONS_LIST)
    """``Initialized``, ``Active``, ``Failed`` and, for prefill/decode backends, ``Disaggregated``."""
    observed_generation: int | None = None
    """The `metadata.generation` this status describes."""
    replicas: int | None = None
    """Serving groups over all backends."""
    available_replicas: int | None = None
    """Ready serving groups over all backends."""
    updated_replicas: int | None = None
    """Serving groups at the latest revision."""
    current_replicas: int | None = None
    """Serving groups at the current revision."""
    backend_statuses: list[BackendStatus] | None = Field(
        None, json_schema_extra={"x-kubernetes-list-type": "atomic"}
    )
    """Per-backend serving groups (seed era)."""


class ModelBooster(KubeObject):
    GROUP: ClassVar[str] = WORKLOAD_GROUP
    KIND: ClassVar[str] = "ModelBooster"
    PLURAL: ClassVar[str] = "modelboosters"

    spec: ModelBoosterSpec
    status: ModelBoosterStatus | None = None

    def backend_list(self) -> list[ModelBackend]:
        """``spec.backends``, or ``[spec.backend]``: every backend whichever form was used."""
        if self.spec.backends:
            return list(self.spec.backends)
        return [self.spec.backend] if self.spec.backend is not None else []
