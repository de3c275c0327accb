"""Pydantic JSON schema → Kubernetes structural OpenAPI v3 schema.

Every ``$ref`` is inlined, ``anyOf [X, null]`` becomes ``X`` (unset fields are simply absent, as in
Kthena's CRDs), ``int | str`` becomes ``x-kubernetes-int-or-string``, free-form values get
``x-kubernetes-preserve-unknown-fields``, and pydantic-only keywords (``title``, ``default: null``,
``additionalProperties: true`` from ``extra="allow"``) are dropped. The result has no ``$defs``.
"""

from __future__ import annotations

from typing import Any

from ferry_schemas.models.meta import JsonSchema

_DROPPED = frozenset({"title", "$defs", "discriminator"})
_MERGED_LISTS = frozenset({"x-kubernetes-validations", "required"})


class NotStructuralError(ValueError):
    """The model uses a shape a structural schema cannot express."""


def _merge(base: JsonSchema, override: JsonSchema) -> JsonSchema:
    """``base`` (a referenced type) refined by ``override`` (the field's own keywords)."""
    merged = dict(base)
    for key, value in override.items():
        if key in _MERGED_LISTS and key in merged:
            merged[key] = [*merged[key], *[v for v in value if v not in merged[key]]]
        else:
            merged[key] = value
    return merged


def _is_null(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "null"


def _is_int_or_string(branches: list[JsonSchema]) -> bool:
    return sorted(str(b.get("type")) for b in branches) == ["integer", "string"] and all(
        set(b) <= {"type"} for b in branches
    )


def to_structural(node: JsonSchema, defs: dict[str, JsonSchema], path: str = "") -> JsonSchema:
    """Convert one pydantic schema node (and everything below it)."""
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        return to_structural(_merge(defs[name], node), defs, path)
    if "allOf" in node and len(node["allOf"]) == 1:
        (inner,) = node.pop("allOf")
        return to_structural(_merge(inner, node), defs, path)
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if not _is_null(b)]
        if len(branches) == 1:
            return to_structural(_merge(branches[0], node), defs, path)
        if _is_int_or_string(branches):
            node["x-kubernetes-int-or-string"] = True
        else:
            raise NotStructuralError(f"{path or '<root>'}: a union other than int|string: {branches}")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("default", 0) is None:
        del node["default"]
    for key in _DROPPED:
        node.pop(key, None)

    out: JsonSchema = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: to_structural(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items" and isinstance(value, dict):
            out[key] = to_structural(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if isinstance(value, dict) and value:
                out[key] = to_structural(value, defs, f"{path}{{}}")
            elif "properties" not in node and node.get("type") == "object":
                out["x-kubernetes-preserve-unknown-fields"] = True
        else:
            out[key] = value
    if not out or set(out) <= {"description", "default"}:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def find_refs(node: Any) -> list[str]:
    """Every ``$ref``/``anyOf``-with-``$ref`` left in a schema (empty for a structural one)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$defs"):
                found.append(key)
            found.extend(find_refs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(find_refs(value))
    return found
