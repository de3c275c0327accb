"""ModelBooster → its complete set of children (pure; failures are returned, never raised)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ferry_schemas import labels as L
from ferry_schemas.bus import ConversionError

from ferry_converter.booster import validate
from ferry_converter.booster.autoscaling import build_autoscaling
from ferry_converter.booster.backends import backends_of
from ferry_converter.booster.meta import BoosterRef
from ferry_converter.booster.options import RenderOptions
from ferry_converter.booster.route import build_model_route
from ferry_converter.booster.server import build_model_server
from ferry_converter.booster.serving import build_model_serving
from ferry_converter.errors import ConversionFailure
from ferry_converter.serving.convert import name_errors

MANAGED_KINDS = ["ModelServing", "ModelServer", "ModelRoute", "AutoscalingPolicy", "AutoscalingPolicyBinding"]


@dataclass
class BoosterConversion:
    """The children (empty when anything failed) and every failure found."""

    ref: BoosterRef
    children: list[dict[str, Any]] = field(default_factory=list)
    errors: list[ConversionError] = field(default_factory=list)


def _check_name(field_path: str, kind: str, name: str) -> list[ConversionError]:
    if L.is_dns1123_label(name):
        return []
    reason = (
        f"is {len(name)} characters, more than {L.DNS1123_LABEL_MAX}"
        if len(name) > L.DNS1123_LABEL_MAX
        else "is not a DNS-1123 label (lower-case letters, digits and '-')"
    )
    return [
        ConversionError(
            field=field_path,
            message=f'generated {kind} name "{name}" {reason}; shorten the ModelBooster or backend name',
        )
    ]


def _attempt(
    errors: list[ConversionError], build: Callable[[], dict[str, Any] | list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Run one child builder; a failure becomes an error value and no children."""
    try:
        made = build()
    except ConversionFailure as failure:
        errors.append(failure.to_error())
        return []
    return made if isinstance(made, list) else [made]


def convert_booster(obj: dict[str, Any], options: RenderOptions | None = None) -> BoosterConversion:
    """Every child of one ModelBooster (wire-form dict), or every reason it cannot be converted."""
    options = options or RenderOptions()
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    ref = BoosterRef(
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        uid=str(meta.get("uid") or ""),
    )
    result = BoosterConversion(ref=ref)
    errors = result.errors
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errors.append(ConversionError(field="spec", message="a ModelBooster needs a spec with a backend"))
        return result
    try:
        backends = backends_of(spec)
    except ConversionFailure as failure:
        errors.append(failure.to_error())
        return result
    errors += _check_name("metadata.name", "ModelRoute", ref.name)
    children: list[dict[str, Any]] = []
    for backend in backends:
        backend_errors = validate.backend_errors(backend)
        ms_name = L.booster_child_name(ref.name, backend.name)
        backend_errors += _check_name(f"{backend.path}.name", "ModelServing/ModelServer", ms_name)
        if backend_errors:
            errors += backend_errors
            continue
        servings = _attempt(errors, partial(build_model_serving, ref, backend, options))
        for serving in servings:
            for error in name_errors(ms_name, serving["spec"]):
                # The ModelServing name is generated: point at the name the user can change.
                field = "metadata.name" if not ref.name[:1].isalpha() else f"{backend.path}.name"
                message = error.message.replace("the ModelServing", "the ModelBooster or backend")
                errors.append(ConversionError(field=field, message=message, reason=error.reason))
        children += servings
        children += _attempt(errors, partial(build_model_server, ref, backend))
    children += _attempt(errors, partial(build_model_route, ref, spec, backends))
    children += _attempt(errors, partial(build_autoscaling, ref, spec, backends, legacy="backends" in spec))
    if not errors:
        result.children = children
    return result
