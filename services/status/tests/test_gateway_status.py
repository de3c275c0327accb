"""Gateway API status rendering (pure): Programmed from what routers report, other controllers kept."""

from __future__ import annotations

from typing import Any

from ferry_schemas.bus import Resource
from ferry_schemas.gateway.view import GatewayWorld
from ferry_status.conditions import without_times
from ferry_status.gateway.render import Served, gateway_status, route_status

CONTROLLER = "volcano.sh/kthena-router"
AT = "2026-01-01T00:00:00Z"


def world() -> GatewayWorld:
    w = GatewayWorld(CONTROLLER)
    meta: dict[str, Any] = {"name": "c"}
    w.apply(Resource.GATEWAY_CLASSES, "c", {"metadata": meta, "spec": {"controllerName": CONTROLLER}})
    listeners = [
        {"name": "http", "port": 8081, "protocol": "HTTP"},
        {"name": "tls", "port": 8443, "protocol": "HTTPS"},
    ]
    w.apply(
        Resource.GATEWAYS,
        "ns/gw",
        {
            "metadata": {"name": "gw", "namespace": "ns"},
            "spec": {"gatewayClassName": "c", "listeners": listeners},
        },
    )
    route = {
        "parentRefs": [{"name": "gw"}],
        "rules": [{"backendRefs": [{"kind": "Service", "name": "missing", "port": 80}]}],
    }
    w.apply(Resource.HTTP_ROUTES, "ns/r", {"metadata": {"name": "r", "namespace": "ns"}, "spec": route})
    return w


def conditions(items: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in items}


def test_gateway_programmed_only_while_a_router_serves_a_listener() -> None:
    state = world().resolve().gateways["ns/gw"]
    pending = gateway_status({}, state, Served(), 3, AT)
    assert conditions(pending["conditions"]) == {
        "Accepted": ("True", "Accepted"),
        "Programmed": ("False", "Pending"),
    }
    assert "addresses" not in pending
    served = gateway_status(pending, state, Served(("10.0.0.7",), frozenset({8081})), 3, AT)
    assert conditions(served["conditions"])["Programmed"] == ("True", "Programmed")
    assert served["addresses"] == [{"type": "IPAddress", "value": "10.0.0.7"}]
    http, tls = served["listeners"]
    assert conditions(http["conditions"])["Programmed"] == ("True", "Programmed")
    assert http["attachedRoutes"] == 1
    assert conditions(tls["conditions"])["Accepted"] == ("False", "UnsupportedProtocol")
    assert all(c["observedGeneration"] == 3 for c in served["conditions"])
    # a port every replica failed to bind is reported on the listener
    failed = gateway_status({}, state, Served(("10.0.0.7",), frozenset(), {8081: "port 8081 in use"}), 3, AT)
    assert conditions(failed["listeners"][0]["conditions"])["Accepted"] == ("False", "PortUnavailable")


def test_route_status_keeps_other_controllers_and_transition_times() -> None:
    state = world().resolve().routes["ns/r"]
    other = {"parentRef": {"name": "x"}, "controllerName": "example.com/other", "conditions": []}
    first = route_status({"parents": [other]}, state, CONTROLLER, 1, AT)
    assert first["parents"][0] == other
    mine = first["parents"][1]
    assert mine["controllerName"] == CONTROLLER
    assert conditions(mine["conditions"]) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("False", "BackendNotFound"),
    }
    again = route_status(first, state, CONTROLLER, 1, "2026-02-02T00:00:00Z")
    assert again == first  # nothing flipped: the same times, so nothing is written
    assert without_times(again) == without_times(first)
