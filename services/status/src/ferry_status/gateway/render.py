"""The ``status`` Ferry writes on Gateway API objects, as pure functions of the shared resolution
(:mod:`ferry_schemas.gateway.view`) and of what the router replicas report they serve.

Conditions keep ``lastTransitionTime`` unless their status flips (:func:`merge_condition`), carry
the object's ``observedGeneration``, and use the reasons of the Gateway API specification. Entries
of other controllers in ``status.parents`` are kept untouched.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ferry_schemas.gateway.view import GatewayState, ListenerState, RouteState, Verdict

from ferry_status.conditions import Condition, condition, find, merge_condition

JSON = dict[str, Any]


@dataclass(frozen=True)
class Served:
    """What the live router replicas report: their addresses and, per port, whether any replica
    bound it (``True``), or the errors every replica hit."""

    addresses: tuple[str, ...] = ()
    bound: frozenset[int] = frozenset()
    errors: dict[int, str] = field(default_factory=dict)


def _conditions(existing: list[Condition], new: list[Condition], generation: int, at: str) -> list[Condition]:
    out = list(existing)
    for item in new:
        out = merge_condition(out, {**item, "observedGeneration": generation}, at=at)
    wanted = {c["type"] for c in new}
    return [c for c in out if c.get("type") in wanted]


def _verdict(type_: str, verdict: Verdict) -> Condition:
    return condition(type_, verdict.ok, verdict.reason, verdict.message)


def address_entry(value: str) -> JSON:
    try:
        ipaddress.ip_address(value)
        return {"type": "IPAddress", "value": value}
    except ValueError:
        return {"type": "Hostname", "value": value}


def gateway_class_status(current: JSON, verdict: Verdict, generation: int, at: str) -> JSON:
    existing = list((current or {}).get("conditions") or [])
    return {
        **(current or {}),
        "conditions": _conditions(existing, [_verdict("Accepted", verdict)], generation, at),
    }


def _listener_status(
    state: ListenerState, served: Served, current: JSON | None, generation: int, at: str
) -> JSON:
    port = state.listener.port
    accepted = state.accepted
    if accepted.ok and port not in served.bound and port in served.errors:
        accepted = Verdict(False, "PortUnavailable", served.errors[port])
    if not state.serving or not accepted.ok:
        programmed = Verdict(
            False, "Invalid", "the listener is not served (see Accepted, ResolvedRefs, Conflicted)"
        )
    elif port in served.bound:
        programmed = Verdict(True, "Programmed", f"served by the router on port {port}")
    else:
        programmed = Verdict(False, "Pending", f"no router replica reports serving port {port} yet")
    conflicted = state.conflicted or Verdict(False, "NoConflicts", "no conflicts")
    new = [
        _verdict("Accepted", accepted),
        _verdict("Programmed", programmed),
        _verdict("ResolvedRefs", state.resolved_refs),
        condition("Conflicted", conflicted.ok, conflicted.reason, conflicted.message),
    ]
    return {
        "name": state.listener.name,
        "supportedKinds": [{"group": k.group, "kind": k.kind} for k in state.supported_kinds],
        "attachedRoutes": state.attached_routes,
        "conditions": _conditions(list((current or {}).get("conditions") or []), new, generation, at),
    }


def gateway_status(current: JSON, state: GatewayState, served: Served, generation: int, at: str) -> JSON:
    current = current or {}
    old_listeners = {x.get("name"): x for x in current.get("listeners") or []}
    listeners = [
        _listener_status(x, served, old_listeners.get(x.listener.name), generation, at)
        for x in state.listeners
    ]
    programmed_any = any(
        find(x["conditions"], "Programmed") and find(x["conditions"], "Programmed")["status"] == "True"  # type: ignore[index]
        for x in listeners
    )
    if not state.accepted.ok:
        programmed = Verdict(False, "Invalid", "the Gateway is not accepted")
    elif programmed_any and served.addresses:
        programmed = Verdict(True, "Programmed", "the router serves this Gateway")
    else:
        programmed = Verdict(False, "Pending", "no router replica serves a listener of this Gateway yet")
    new = [_verdict("Accepted", state.accepted), _verdict("Programmed", programmed)]
    status: JSON = {
        "conditions": _conditions(list(current.get("conditions") or []), new, generation, at),
        "listeners": listeners,
    }
    if programmed.ok:
        status["addresses"] = [address_entry(a) for a in served.addresses]
    return status


def _same_parent(a: JSON, b: JSON) -> bool:
    keys = ("group", "kind", "namespace", "name", "sectionName", "port")
    return all(a.get(k) == b.get(k) for k in keys)


def route_status(current: JSON, state: RouteState, controller: str, generation: int, at: str) -> JSON:
    current = current or {}
    others = [p for p in current.get("parents") or [] if p.get("controllerName") != controller]
    mine_before = [p for p in current.get("parents") or [] if p.get("controllerName") == controller]
    parents = []
    for parent in state.parents:
        ref = parent.parent.wire()
        old: JSON = next((p for p in mine_before if _same_parent(p.get("parentRef") or {}, ref)), {})
        new = [_verdict("Accepted", parent.accepted), _verdict("ResolvedRefs", state.resolved_refs)]
        parents.append(
            {
                "parentRef": ref,
                "controllerName": controller,
                "conditions": _conditions(list(old.get("conditions") or []), new, generation, at),
            }
        )
    return {**current, "parents": others + parents}


def pool_status(current: JSON, gateways: list[str], controller: str, generation: int, at: str) -> JSON:
    current = current or {}
    others = [p for p in current.get("parents") or [] if p.get("controllerName") not in (controller, None)]
    mine_before = [p for p in current.get("parents") or [] if p.get("controllerName") in (controller, None)]
    parents = []
    for key in gateways:
        namespace, name = key.split("/", 1)
        ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": namespace, "name": name}
        old: JSON = next((p for p in mine_before if _same_parent(p.get("parentRef") or {}, ref)), {})
        new = [
            condition("Accepted", True, "Accepted", f"referenced by an HTTPRoute accepted by Gateway {key}"),
            condition(
                "ResolvedRefs",
                True,
                "ResolvedRefs",
                "endpoints are picked by Ferry's router (no endpoint picker)",
            ),
        ]
        parents.append(
            {
                "parentRef": ref,
                "controllerName": controller,
                "conditions": _conditions(list(old.get("conditions") or []), new, generation, at),
            }
        )
    return {**current, "parents": others + parents}
