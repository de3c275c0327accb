"""The routing table as gauges: ready endpoints per model (the no-endpoints alert) and per-endpoint load."""

from __future__ import annotations

import time

from ferry_router.state.table import RoutingTable
from ferry_router.table_metrics import TableCollector
from prometheus_client import CollectorRegistry, generate_latest

from .objects import pod, route, server


def scrape(table: RoutingTable, max_endpoints: int = 1000) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(TableCollector(table, max_endpoints=max_endpoints))
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_ready_endpoints_per_model_and_endpoint_load() -> None:
    table = RoutingTable()
    table.apply_server("default/srv", server("srv", {"app": "m"}))
    table.apply_route("default/r", route("r", "m", loras=["lora-a"]))
    table.apply_route("default/empty", route("empty", "nobody", server="missing"))
    table.apply_pod("default/p0", pod("p0", {"app": "m"}, "127.0.0.2"))
    table.apply_pod("default/p1", pod("p1", {"app": "m"}, "127.0.0.3", ready=False))
    endpoint = table.endpoints["default/p0"]
    endpoint.inflight, endpoint.metrics.waiting, endpoint.metrics.ttft = 3, 2.0, 0.25

    samples = scrape(table)
    assert samples['ferry_router_model_ready_endpoints{model="m",namespace="default"}'] == 1
    assert samples['ferry_router_model_ready_endpoints{model="lora-a",namespace="default"}'] == 1
    assert samples['ferry_router_model_ready_endpoints{model="nobody",namespace="default"}'] == 0
    labels = '{model_server="srv",namespace="default",pod="p0"}'
    assert samples[f"ferry_router_endpoint_inflight_requests{labels}"] == 3
    assert samples[f"ferry_router_endpoint_waiting_requests{labels}"] == 2
    assert samples[f"ferry_router_endpoint_ttft_seconds{labels}"] == 0.25
    assert not any('pod="p1"' in name for name in samples)  # not ready: not an endpoint


def test_an_empty_collector_reports_nothing() -> None:
    registry = CollectorRegistry()
    registry.register(TableCollector())
    assert generate_latest(registry) == b""


def test_per_endpoint_series_are_capped_and_every_endpoint_is_counted_by_load() -> None:
    table = RoutingTable()
    table.apply_server("default/srv", server("srv", {"app": "m"}))
    for i in range(5):
        table.apply_pod(f"default/p{i}", pod(f"p{i}", {"app": "m"}, f"127.0.0.{i + 2}"))
    pushed, scraped = table.endpoints["default/p0"].metrics, table.endpoints["default/p1"].metrics
    pushed.source, pushed.updated = "push", time.monotonic()
    scraped.source, scraped.updated, scraped.stale = "scrape", time.monotonic(), True

    samples = scrape(table, max_endpoints=2)
    assert sum(1 for name in samples if name.startswith("ferry_router_endpoint_waiting_requests{")) == 2
    assert sum(1 for name in samples if name.startswith("ferry_router_endpoint_load_age_seconds{")) == 2
    assert samples["ferry_router_endpoint_series_omitted"] == 3
    assert samples['ferry_router_endpoints{load_source="push",load_state="fresh"}'] == 1
    assert samples['ferry_router_endpoints{load_source="scrape",load_state="stale"}'] == 1
    assert samples['ferry_router_endpoints{load_source="none",load_state="stale"}'] == 3
