"""Routing-table tests (spec §18.2 store/ordering/PD group cases), level-triggered semantics."""

from __future__ import annotations

import itertools

import pytest
from ferry_router.state.table import RoutingTable

from .objects import pod, server

APP = {"app": "m"}
PD = {
    "groupKey": "modelserving.volcano.sh/group-name",
    "prefillLabels": {"modelserving.volcano.sh/rolename": "P-instance"},
    "decodeLabels": {"modelserving.volcano.sh/rolename": "D-instance"},
}


def names(table: RoutingTable, server_key: str = "default/srv") -> list[str]:
    return sorted(e.name for e in table.server_endpoints(server_key))


def test_server_then_pod_and_pod_then_server_converge() -> None:
    a, b = RoutingTable(), RoutingTable()
    a.apply_server("default/srv", server("srv", APP))
    a.apply_pod("default/p1", pod("p1", APP))
    b.apply_pod("default/p1", pod("p1", APP))
    b.apply_server("default/srv", server("srv", APP))
    assert names(a) == names(b) == ["p1"]


@pytest.mark.parametrize(
    ("kwargs", "member"),
    [
        ({}, True),
        ({"ready": False}, False),
        ({"phase": "Pending"}, False),
        ({"deleting": True}, False),
        ({"ip": ""}, False),
    ],
)
def test_only_running_ready_pods_with_an_ip_are_endpoints(kwargs: dict, member: bool) -> None:
    table = RoutingTable()
    table.apply_server("default/srv", server("srv", APP))
    table.apply_pod("default/p", pod("p", APP, **kwargs))
    assert names(table) == (["p"] if member else [])


def test_selector_namespace_and_labels() -> None:
    table = RoutingTable()
    table.apply_server("default/srv", server("srv", {"app": "m", "version": "v1"}))
    table.apply_pod("default/v1", pod("v1", {"app": "m", "version": "v1"}))
    table.apply_pod("default/v2", pod("v2", {"app": "m", "version": "v2"}))
    table.apply_pod("other/v1", pod("v1", {"app": "m", "version": "v1"}, namespace="other"))
    assert names(table) == ["v1"]


def test_tombstone_and_unready_remove_at_once_and_metrics_survive_updates() -> None:
    table = RoutingTable()
    removed: list[str] = []
    table.endpoint_removed.append(lambda e: removed.append(e.key))
    table.apply_server("default/srv", server("srv", APP))
    table.apply_pod("default/p", pod("p", APP))
    table.endpoints["default/p"].metrics.waiting = 7
    table.apply_pod("default/p", pod("p", {**APP, "extra": "x"}))  # label change keeps metrics
    assert table.endpoints["default/p"].metrics.waiting == 7
    table.apply_pod("default/p", pod("p", APP, ready=False))
    assert names(table) == []
    assert removed == ["default/p"]
    table.apply_pod("default/p", pod("p", APP))
    table.apply_pod("default/p", None)
    assert names(table) == []
    assert "default/p" not in table.endpoints


def test_pod_shared_by_two_servers_is_one_endpoint() -> None:
    table = RoutingTable()
    table.apply_server("default/a", server("a", APP))
    table.apply_server("default/b", server("b", APP))
    table.apply_pod("default/p", pod("p", APP))
    ea, eb = table.server_endpoints("default/a")[0], table.server_endpoints("default/b")[0]
    assert ea is eb
    assert ea.servers == {"default/a", "default/b"}
    table.apply_server("default/a", None)
    assert table.server_endpoints("default/b")[0].servers == {"default/b"}
    table.apply_server("default/b", None)
    assert not table.endpoints


def test_server_selector_change_drops_pods_it_no_longer_selects() -> None:
    table = RoutingTable()
    table.apply_pod("default/p", pod("p", APP))
    table.apply_server("default/srv", server("srv", APP))
    table.apply_server("default/srv", server("srv", {"app": "other"}))
    assert names(table) == []  # Kthena keeps the previous non-empty set; Ferry follows the selector


def test_server_event_finds_pods_by_label_and_the_index_follows_relabels_and_deletes() -> None:
    table = RoutingTable()
    table.apply_pod("default/a", pod("a", {"app": "m", "tier": "x"}))
    table.apply_pod("default/b", pod("b", {"app": "m", "tier": "y"}))
    table.apply_pod("default/c", pod("c", {"app": "n", "tier": "x"}))
    table.apply_server("default/srv", server("srv", {"app": "m", "tier": "x"}))
    assert names(table) == ["a"]  # every matchLabel must hold, whichever posting list is read
    table.apply_pod("default/a", pod("a", {"app": "n", "tier": "x"}))
    table.apply_pod("default/b", pod("b", {"app": "m", "tier": "x"}))
    table.apply_server("default/srv", server("srv", {"app": "m", "tier": "x"}))
    assert names(table) == ["b"]
    for key in ("default/a", "default/b", "default/c"):
        table.apply_pod(key, None)
    assert table.pods_by_label == {}  # no posting outlives its pods


def test_pod_labels_that_stop_matching_detach_it() -> None:
    table = RoutingTable()
    table.apply_server("default/srv", server("srv", APP))
    table.apply_pod("default/p", pod("p", APP))
    table.apply_pod("default/p", pod("p", {"app": "else"}))
    assert names(table) == []


def test_pd_groups_categorise_decode_first_and_group_by_key() -> None:
    table = RoutingTable()
    table.apply_server("default/srv", server("srv", APP, pd=PD))
    roles = {
        "p0": ("g0", "P-instance"),
        "d0": ("g0", "D-instance"),
        "p1": ("g1", "P-instance"),
        "d1": ("g1", "D-instance"),
        "x": ("g1", "other"),
    }
    for name, (group, role) in roles.items():
        labels = {**APP, PD["groupKey"]: group, "modelserving.volcano.sh/rolename": role}
        table.apply_pod(f"default/{name}", pod(name, labels))
    table.apply_pod(
        "default/nogroup", pod("nogroup", {**APP, "modelserving.volcano.sh/rolename": "D-instance"})
    )
    sets = table.pd["default/srv"]
    assert [e.name for e in sets.decode] == ["d0", "d1"]
    assert [e.name for e in sets.prefill_for(sets.decode[0])] == ["p0"]
    assert [e.name for e in sets.prefill_for(sets.decode[1])] == ["p1"]
    table.apply_pod("default/p1", None)
    assert table.pd["default/srv"].prefill_for(table.pd["default/srv"].decode[1]) == []


def test_any_order_of_the_same_events_gives_the_same_table() -> None:
    events = [
        ("server", "default/srv", server("srv", APP)),
        ("pod", "default/p1", pod("p1", APP)),
        ("pod", "default/p2", pod("p2", APP)),
        ("pod", "default/p3", pod("p3", APP, ready=False)),
    ]
    results = set()
    for order in itertools.permutations(events):
        table = RoutingTable()
        for kind, key, obj in order:
            (table.apply_server if kind == "server" else table.apply_pod)(key, obj)
        results.add(tuple(names(table)))
    assert results == {("p1", "p2")}


def test_invalid_server_is_refused_and_recorded() -> None:
    table = RoutingTable()
    bad = server("srv", {})
    table.apply_server("default/srv", bad)
    assert "default/srv" not in table.servers
    assert "matchLabels" in table.invalid["modelservers/default/srv"]


def test_server_fields() -> None:
    table = RoutingTable()
    table.apply_server(
        "default/s",
        server(
            "s",
            APP,
            engine="SGLang",
            port=30000,
            timeout="1m30s",
            retry={"attempts": 2, "retryInterval": "250ms"},
        ),
    )
    s = table.servers["default/s"]
    assert (s.engine, s.port, s.timeout, s.retry_attempts, s.retry_interval, s.connector) == (
        "sglang",
        30000,
        90.0,
        2,
        0.25,
        "sglang",
    )
    table.apply_server("default/n", server("n", APP, connector="nixl"))
    assert table.servers["default/n"].connector == "nixl"
    table.apply_server("default/bad", server("bad", APP, port=0))
    assert "workloadPort.port" in table.invalid["modelservers/default/bad"]
    table.apply_server("default/bad", server("bad", APP, engine="TGI"))
    assert "inferenceEngine" in table.invalid["modelservers/default/bad"]
