"""Common building blocks of every Ferry kind: the wire model base, object metadata, conditions.

Every model is camelCase on the wire and snake_case in Python, keeps unknown fields
(``extra="allow"``) and has no Python-side defaults, so ``dump(load(x)) == x``. Defaults that
Kthena's CRDs apply live in the CRD schema only (``crd_default``), where the API server applies them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

JsonSchema = dict[str, Any]
IntOrString = int | str
"""Kubernetes ``IntOrString`` (``x-kubernetes-int-or-string`` in the CRD)."""

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


class KubeModel(BaseModel):
    """Base of every nested API type: camelCase aliases, unknown fields kept, no Python defaults."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="allow",
        protected_namespaces=(),
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server wants it (camelCase, no ``null``)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        return cls.model_validate(data)


# --------------------------------------------------------------------------- CRD schema helpers


def crd_default(value: Any) -> JsonSchema:
    """``json_schema_extra`` that puts a default into the CRD only (the model keeps ``None``)."""
    return {"default": value}


def cel(
    rule: str,
    message: str | None = None,
    *,
    message_expression: str | None = None,
    field_path: str | None = None,
    reason: str | None = None,
) -> JsonSchema:
    """One ``x-kubernetes-validations`` entry."""
    entry: JsonSchema = {"rule": rule}
    if message is not None:
        entry["message"] = message
    if message_expression is not None:
        entry["messageExpression"] = message_expression
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


def validations(*rules: JsonSchema, **extra: Any) -> JsonSchema:
    """``json_schema_extra`` holding CEL rules (plus any other CRD keywords given as ``extra``)."""
    return {"x-kubernetes-validations": list(rules), **extra}


def replace_schema(schema: JsonSchema) -> Callable[[JsonSchema], None]:
    """``json_schema_extra`` that replaces the generated schema of a field with ``schema``."""

    def apply(generated: JsonSchema) -> None:
        generated.clear()
        generated.update(schema)

    return apply


FREE_FORM: JsonSchema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
"""Schema of an embedded Kubernetes type Ferry does not model (affinity, resources, …)."""


def free_form_list(*, key: str | None = None, max_items: int | None = None) -> JsonSchema:
    """Schema of a list of embedded Kubernetes objects; ``key`` makes it a list-map keyed by it."""
    item: JsonSchema = dict(FREE_FORM)
    schema: JsonSchema = {"type": "array", "items": item}
    if key is not None:
        item["required"] = [key]
        item["properties"] = {key: {"type": "string"}}
        schema["x-kubernetes-list-type"] = "map"
        schema["x-kubernetes-list-map-keys"] = [key]
    else:
        schema["x-kubernetes-list-type"] = "atomic"
    if max_items is not None:
        schema["maxItems"] = max_items
    return schema


# --------------------------------------------------------------------------- metadata


class OwnerReference(KubeModel):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(KubeModel):
    """The subset of ``metav1.ObjectMeta`` Ferry reads; every other key is kept as an extra."""

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    owner_references: list[OwnerReference] | None = None
    finalizers: list[str] | None = None


class Condition(KubeModel):
    """A standard ``metav1.Condition``."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    """Type of the condition, in CamelCase."""
    status: Literal["True", "False", "Unknown"]
    """Status of the condition."""
    reason: str = Field(max_length=1024, min_length=1, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    """Programmatic identifier of the reason for the last transition, in CamelCase."""
    message: str = Field(max_length=32768)
    """Human-readable message about the transition."""
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    """When the status last changed (RFC 3339)."""
    observed_generation: int | None = Field(None, ge=0)
    """``metadata.generation`` the condition was set for."""


CONDITIONS_LIST: JsonSchema = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


# --------------------------------------------------------------------------- objects


class KubeObject(KubeModel):
    """A top-level Kubernetes object. Subclasses declare ``spec``/``status`` and the identity below."""

    GROUP: ClassVar[str]
    VERSION: ClassVar[str] = "v1alpha1"
    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()
    CATEGORIES: ClassVar[tuple[str, ...]] = ()

    api_version: str | None = None
    kind: str | None = None
    metadata: ObjectMeta | None = None

    def model_post_init(self, context: Any, /) -> None:
        # Identity is filled in for objects built in code; a loaded object keeps what it had.
        if self.api_version is None:
            self.api_version = self.api_version_str()
        if self.kind is None:
            self.kind = self.KIND

    @classmethod
    def api_version_str(cls) -> str:
        return f"{cls.GROUP}/{cls.VERSION}"

    @property
    def name(self) -> str:
        return self.metadata.name or "" if self.metadata else ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "" if self.metadata else ""
