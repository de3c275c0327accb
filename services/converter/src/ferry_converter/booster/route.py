"""ModelBooster → ModelRoute (``spec/booster.md`` §3.13; several backends and LoRA rules per §8.3)."""

from __future__ import annotations

import copy
from typing import Any

from ferry_schemas import labels as L

from ferry_converter.booster.backends import Backend
from ferry_converter.booster.meta import BoosterRef, child, revision_of, stamp_revision


def route_model_name(ref: BoosterRef, spec: dict[str, Any]) -> str:
    """``spec.name`` when set (Kthena HEAD), else the booster's name."""
    name = spec.get("name")
    return name if isinstance(name, str) and name else ref.name


def _match_for(model_match: Any, model: str) -> dict[str, Any]:
    match = copy.deepcopy(model_match) if isinstance(model_match, dict) else {}
    body = match.get("body")
    match["body"] = {**(body if isinstance(body, dict) else {}), "model": model}
    return match


def _target(ref: BoosterRef, backend: Backend, weighted: bool) -> dict[str, Any]:
    target: dict[str, Any] = {"modelServerName": L.booster_child_name(ref.name, backend.name)}
    if weighted:
        target["weight"] = backend.route_weight
    return target


def build_model_route(ref: BoosterRef, spec: dict[str, Any], backends: list[Backend]) -> dict[str, Any]:
    model_name = route_model_name(ref, spec)
    model_match = spec.get("modelMatch")
    loras = sorted({name for backend in backends for name in backend.lora_names})
    route_spec: dict[str, Any] = {"modelName": model_name}
    if loras:
        route_spec["loraAdapters"] = loras
    if len(backends) == 1:
        rule: dict[str, Any] = {"name": "default"}
        if isinstance(model_match, dict):
            rule["modelMatch"] = copy.deepcopy(model_match)
        rule["targetModels"] = [_target(ref, backends[0], weighted=False)]
        route_spec["rules"] = [rule]
    else:
        rules = [
            {
                "name": "default",
                "modelMatch": _match_for(model_match, model_name),
                "targetModels": [_target(ref, backend, weighted=True) for backend in backends],
            }
        ]
        for lora in loras:
            rules.append(
                {
                    "name": lora,
                    "modelMatch": _match_for(model_match, lora),
                    "targetModels": [
                        _target(ref, backend, weighted=True)
                        for backend in backends
                        if lora in backend.lora_names
                    ],
                }
            )
        route_spec["rules"] = rules
    obj = child(L.NETWORKING_API_VERSION, "ModelRoute", ref.name, ref, "", route_spec)
    stamp_revision(obj, revision_of(route_spec))
    return obj
