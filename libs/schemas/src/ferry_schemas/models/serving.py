"""ModelServing (``workload.serving.volcano.sh/v1alpha1``): groups of role pods, gang-scheduled.

Shape: ``spec/serving.md`` §1.1 to §1.7. The webhook rules of §1.8 that CEL can express are on the
types below (all of them; the pod templates beyond container images stay free-form).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from .autoscaling import WORKLOAD_GROUP
from .booster import MAX_IMAGE_LENGTH
from .meta import (
    CONDITIONS_LIST,
    Condition,
    IntOrString,
    KubeModel,
    KubeObject,
    cel,
    crd_default,
    replace_schema,
    validations,
)

MAX_ROLES = 4
MAX_CONTAINERS = 64
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
INT_OR_PERCENT_RULE = "type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')"

CONVERTER_CHECKS: tuple[str, ...] = ()
"""ModelServing webhook rules (§1.8) CEL cannot express: none; every one is a CEL rule or schema keyword."""


def _containers_schema() -> dict[str, Any]:
    image = {
        "type": "string",
        "maxLength": MAX_IMAGE_LENGTH,
        "x-kubernetes-validations": [
            cel(
                "!self.matches('^\\\\s+$')",
                "invalid container image reference: image cannot be empty or whitespace only",
            ),
            cel(
                "self.matches('^\\\\s+$') || !self.contains(' ')",
                "invalid container image reference: image cannot contain spaces",
            ),
        ],
    }
    return {
        "type": "array",
        "maxItems": MAX_CONTAINERS,
        "items": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"name": {"type": "string", "maxLength": 253}, "image": image},
        },
    }


POD_TEMPLATE: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "metadata": {
            "type": "object",
            "properties": {
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"containers": _containers_schema(), "initContainers": _containers_schema()},
        },
    },
}
"""A ``core/v1 PodTemplateSpec``: containers' images are checked, the rest is kept as given."""


def _int_or_percent(field: str) -> dict[str, Any]:
    return {
        "x-kubernetes-int-or-string": True,
        "x-kubernetes-validations": [
            cel(
                INT_OR_PERCENT_RULE,
                f"{field} must be a non-negative integer or a percentage between 0% and 100%",
            )
        ],
    }


def _scaled(value: str, total: str) -> str:
    """CEL: an int-or-percent ``value`` scaled against ``total``, rounded down."""
    return f"(type({value}) == int ? {value} : int({value}.replace('%', '')) * {total} / 100)"


class Role(KubeModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.workerReplicas == 0 || has(self.workerTemplate)",
                "workerTemplate is required when workerReplicas is greater than 0",
                field_path=".workerTemplate",
                reason="FieldValueRequired",
            )
        )
    )

    name: str = Field(
        max_length=12,
        pattern=r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$",
        json_schema_extra=validations(
            cel(
                f"self.matches('{DNS1035_LABEL}')",
                "role name must be a valid DNS-1035 label: lower case alphanumerics or '-', starting with a "
                "letter and ending with an alphanumeric",
            )
        ),
    )
    """Role name (at most 12 characters, a DNS-1035 label)."""
    replicas: int | None = Field(None, ge=0, le=1_000_000, json_schema_extra=crd_default(1))
    """Role instances per serving group."""
    entry_template: dict[str, Any] = Field(json_schema_extra=replace_schema(POD_TEMPLATE))
    """Template of the entry (leader) pod of each role instance."""
    worker_replicas: int = Field(ge=0, le=1_000_000)
    """Worker pods per role instance."""
    worker_template: dict[str, Any] | None = Field(None, json_schema_extra=replace_schema(POD_TEMPLATE))
    max_unavailable: IntOrString | None = Field(
        None, json_schema_extra=replace_schema({**_int_or_percent("maxUnavailable"), "default": 1})
    )
    """Role instances that may be down during a role rolling update (int or percent)."""
    partition: IntOrString | None = Field(
        None, json_schema_extra=replace_schema(_int_or_percent("partition"))
    )
    """Role instances (from ordinal 0) kept at the old revision during a role rolling update."""


class GangPolicy(KubeModel):
    min_role_replicas: dict[str, int] | None = Field(
        None,
        json_schema_extra={
            "additionalProperties": {"type": "integer", "format": "int32", "minimum": 0},
            "maxProperties": MAX_ROLES,
            "x-kubernetes-validations": [cel("self == oldSelf", "minRoleReplicas is immutable")],
        },
    )
    """Minimum instances per role for the gang to be scheduled."""


class NetworkTopologySpec(KubeModel):
    mode: Literal["hard", "soft"] | None = Field(None, json_schema_extra=crd_default("hard"))
    """`hard` requires the topology constraint, `soft` prefers it."""
    highest_tier_allowed: int | None = Field(None, ge=0)
    """Highest network tier the pods may span."""
    highest_tier_name: str | None = Field(None, max_length=253)
    """Name of the highest network tier the pods may span."""


class NetworkTopology(KubeModel):
    group_policy: NetworkTopologySpec | None = None
    """Topology of a whole serving group (copied into its PodGroup)."""
    role_policy: NetworkTopologySpec | None = None
    """Topology of each role instance (PodGroup sub-groups)."""


def _template_rules() -> dict[str, Any]:
    mrr = "self.gangPolicy.minRoleReplicas"
    has_mrr = "has(self.gangPolicy) && has(self.gangPolicy.minRoleReplicas)"
    return validations(
        cel("!has(oldSelf.gangPolicy) || has(self.gangPolicy)", "gangPolicy is required once set"),
        cel(
            f"!({has_mrr}) || {mrr}.all(k, self.roles.exists(r, r.name == k))",
            message_expression=(
                f"'gangPolicy.minRoleReplicas: role ' + {mrr}.filter(k, !self.roles.exists(r, r.name "
                "== k))[0]"
                " + ' does not exist in template.roles'"
            ),
            field_path=".gangPolicy.minRoleReplicas",
        ),
        cel(
            f"!({has_mrr}) || self.roles.all(r, !(r.name in {mrr}) || "
            f"{mrr}[r.name] <= (has(r.replicas) ? r.replicas : 1))",
            "gangPolicy.minRoleReplicas: the value for a role cannot exceed that role's replicas",
            field_path=".gangPolicy.minRoleReplicas",
        ),
    )


class ServingGroup(KubeModel):
    model_config = ConfigDict(json_schema_extra=_template_rules())

    restart_grace_period_seconds: int | None = Field(None, ge=0, json_schema_extra=crd_default(0))
    """How long a failed pod may recover before it is recreated."""
    gang_policy: GangPolicy | None = None
    """Gang scheduling of the group's pods."""
    network_topology: NetworkTopology | None = None
    """Volcano network-topology constraints."""
    roles: list[Role] = Field(
        min_length=1,
        max_length=MAX_ROLES,
        json_schema_extra=validations(
            cel("self.all(x, self.exists_one(y, y.name == x.name))", "roles name must be unique"),
            **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    )
    """The roles of a serving group (1 to 4, unique names). A map-list keyed by name, so server-side
    apply tracks each role's fields apart: the autoscaler can own one role's ``replicas``."""


class RollingUpdateConfiguration(KubeModel):
    max_unavailable: IntOrString | None = Field(
        None, json_schema_extra=replace_schema({**_int_or_percent("maxUnavailable"), "default": 1})
    )
    """Serving groups that may be unavailable during the update (int or percent, rounded down)."""
    partition: IntOrString | None = Field(
        None, json_schema_extra=replace_schema(_int_or_percent("partition"))
    )
    """Serving groups (from ordinal 0) kept at the old revision (int or percent, rounded up)."""


class RolloutStrategy(KubeModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.rollingUpdateConfiguration) || self.type != 'RoleRollingUpdate'",
                "rollingUpdateConfiguration is only valid when rolloutStrategy.type is "
                "ServingGroupRollingUpdate",
                field_path=".rollingUpdateConfiguration",
                reason="FieldValueForbidden",
            )
        )
    )

    type: Literal["ServingGroupRollingUpdate", "RoleRollingUpdate"] = Field(
        json_schema_extra=crd_default("ServingGroupRollingUpdate")
    )
    """Whether whole serving groups or single roles are rolled."""
    rolling_update_configuration: RollingUpdateConfiguration | None = None
    """Bounds of a serving-group rolling update."""


class PluginScope(KubeModel):
    roles: list[str] | None = Field(None, max_length=MAX_ROLES)
    """Roles the plugin applies to; empty means all."""
    target: str | None = None
    """`All`, `Entry` or `Worker` pods; empty means all."""


class PluginSpec(KubeModel):
    name: str = Field(min_length=1, max_length=253)
    """A built-in plugin (`demo-pod-tweaks`, `lws-standard-labels`)."""
    type: Literal["BuiltIn"] = Field(json_schema_extra=crd_default("BuiltIn"))
    """Plugin kind; only `BuiltIn`."""
    config: Any = Field(
        None, json_schema_extra=replace_schema({"x-kubernetes-preserve-unknown-fields": True})
    )
    """Plugin configuration (free-form JSON)."""
    scope: PluginScope | None = None
    """Which pods the plugin mutates."""


def _spec_rules() -> dict[str, Any]:
    role_rolling = "has(self.rolloutStrategy) && self.rolloutStrategy.type == 'RoleRollingUpdate'"
    ruc = "self.rolloutStrategy.rollingUpdateConfiguration"
    mu = f"{ruc}.maxUnavailable"
    return validations(
        cel(
            "!(has(self.recoveryPolicy) && self.recoveryPolicy == 'ServingGroupRecreate' && "
            + role_rolling
            + ")",
            "rolloutStrategy.type: incompatible recoveryPolicy and rolloutStrategy.type after "
            "applying defaults: "
            "recoveryPolicy ServingGroupRecreate cannot be used with rolloutStrategy.type RoleRollingUpdate",
            field_path=".rolloutStrategy.type",
        ),
        cel(
            f"({role_rolling}) || self.template.roles.all(r, !has(r.partition))",
            "template.roles[].partition: partition is only valid when rolloutStrategy.type is "
            "RoleRollingUpdate",
            field_path=".template.roles",
            reason="FieldValueForbidden",
        ),
        cel(
            f"!has(self.rolloutStrategy) || !has({ruc}) || !has({mu}) || !has(self.replicas) || "
            f"(type({mu}) == string && !{mu}.matches('^[0-9]+%$')) || {_scaled(mu, 'self.replicas')} != 0",
            "rolloutStrategy.rollingUpdateConfiguration: maxUnavailable cannot be 0",
            field_path=".rolloutStrategy.rollingUpdateConfiguration.maxUnavailable",
        ),
        cel(
            f"!({role_rolling}) || self.template.roles.all(r, !has(r.maxUnavailable) || "
            "(type(r.maxUnavailable) == string && !r.maxUnavailable.matches('^[0-9]+%$')) || "
            f"{_scaled('r.maxUnavailable', '(has(r.replicas) ? r.replicas : 1)')} != 0)",
            "template.roles[].maxUnavailable: maxUnavailable cannot be 0",
            field_path=".template.roles",
        ),
        cel(
            f"!({role_rolling}) || self.template.roles.all(r, !has(r.maxUnavailable) || "
            "(type(r.maxUnavailable) == string && !r.maxUnavailable.matches('^[0-9]+%$')) || "
            f"{_scaled('r.maxUnavailable', '(has(r.replicas) ? r.replicas : 1)')} <= "
            "(has(r.replicas) ? r.replicas : 1))",
            "template.roles[].maxUnavailable: maxUnavailable cannot be greater than the role's replicas",
            field_path=".template.roles",
        ),
    )


class ModelServingSpec(KubeModel):
    model_config = ConfigDict(json_schema_extra=_spec_rules())

    replicas: int | None = Field(None, ge=0, le=1_000_000, json_schema_extra=crd_default(1))
    """Number of serving groups."""
    scheduler_name: str | None = Field(None, max_length=253, json_schema_extra=crd_default("volcano"))
    """Scheduler of every pod; PodGroups are created only for ``volcano``."""
    plugins: list[PluginSpec] | None = Field(None, max_length=16)
    """Ordered chain of pod mutators."""
    template: ServingGroup
    """Template of every serving group."""
    rollout_strategy: RolloutStrategy | None = None
    """How template changes roll out."""
    recovery_policy: Literal["ServingGroupRecreate", "RoleRecreate", "None"] | None = Field(
        None, json_schema_extra=crd_default("RoleRecreate")
    )
    """What is recreated when a pod fails: the group, the role instance, or nothing."""


class ModelServingStatus(KubeModel):
    observed_generation: int | None = None
    """The `metadata.generation` this status describes."""
    replicas: int | None = None
    """Serving groups, including those being deleted."""
    current_replicas: int | None = None
    """Serving groups still at the current revision."""
    updated_replicas: int | None = None
    """Serving groups at the update revision."""
    available_replicas: int | None = None
    """Serving groups whose pods are all ready."""
    current_revision: str | None = None
    """Revision of the groups not yet updated."""
    update_revision: str | None = None
    """Revision of the current template."""
    conditions: list[Condition] | None = Field(None, json_schema_extra=CONDITIONS_LIST)
    """`Available`, `Progressing`, `UpdateInProgress`."""
    label_selector: str | None = None
    """Selector of the entry pods, for the ``scale`` subresource."""


def _root_rules() -> dict[str, Any]:
    generated_size = (
        "size(self.metadata.name) + size(string(has(self.spec.replicas) ? self.spec.replicas : 1)) + "
        "size(r.name) "
        "+ size(string(has(r.replicas) ? r.replicas : 1)) + size(string(r.workerReplicas)) + 4"
    )
    return validations(
        cel(
            f"self.spec.template.roles.all(r, {generated_size} <= 63)",
            "metadata.name: invalid name: the generated pod name '<name>-<replicas>-<role>-<roleReplicas>-"
            "<workerReplicas>' must be no more than 63 characters",
        ),
        cel(
            "self.metadata.name.matches('^[a-z][-a-z0-9]*$')",
            "metadata.name: invalid name: must start with a letter and contain only lower case "
            "alphanumerics or "
            "'-', since the generated pod names must be DNS-1035 labels",
        ),
    )


class ModelServing(KubeObject):
    model_config = ConfigDict(json_schema_extra=_root_rules())

    GROUP: ClassVar[str] = WORKLOAD_GROUP
    KIND: ClassVar[str] = "ModelServing"
    PLURAL: ClassVar[str] = "modelservings"

    spec: ModelServingSpec
    status: ModelServingStatus | None = None
