"""The routing table as Prometheus gauges, read at scrape time (nothing is kept up to date in between).

* ``ferry_router_model_ready_endpoints{namespace, model}``: ready endpoints behind each model name
  (the ModelRoute's targets' members); 0 means requests for it fail — the alert rule's input.
* ``ferry_router_endpoint_*{namespace, pod, model_server}``: per-endpoint load as the router sees it
  (requests it has in flight there, and the engine's waiting/running requests, KV-cache usage and
  TTFT from the last scrape) — the dashboard's per-endpoint panels;
  ``ferry_router_endpoint_load_age_seconds{..., source}``: how old that load is and whether the
  sidecar pushed it or the router scraped it (-1: never measured), and
  ``ferry_router_endpoint_load_stale``: 1 when it aged out and reads as unknown. Only the first
  ``max_endpoints`` (``FERRY_ROUTER_METRICS_MAX_ENDPOINTS``, default 1,000) endpoints of the table
  get these series (seven each: 20,000 endpoints made 140,000 samples and a 2 s render);
  ``ferry_router_endpoint_series_omitted`` counts the rest.
* ``ferry_router_endpoints{load_source, load_state}``: every endpoint counted by where its load
  comes from (``push``, ``scrape``, ``none``) and whether it is ``fresh`` or ``stale`` -- stale load
  stays visible at any fleet size.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from ferry_router.state.table import RoutingTable

ENDPOINT_LABELS = ["namespace", "pod", "model_server"]
ENDPOINT_FAMILIES = {
    "inflight": ("inflight_requests", "Requests the router has in flight there."),
    "waiting": ("waiting_requests", "The engine's waiting requests (scraped)."),
    "running": ("running_requests", "The engine's running requests (scraped)."),
    "kv": ("kv_cache_usage_ratio", "The engine's KV-cache usage, 0-1 (scraped)."),
    "ttft": ("ttft_seconds", "The engine's mean time to first token over the last interval (scraped)."),
}


DEFAULT_MAX_ENDPOINTS = 1000


class TableCollector(Collector):
    def __init__(
        self, table: RoutingTable | None = None, *, max_endpoints: int = DEFAULT_MAX_ENDPOINTS
    ) -> None:
        self.table = table
        self.max_endpoints = max_endpoints

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.table is None:
            return
        yield from self._collect(self.table)

    def _collect(self, table: RoutingTable) -> Iterator[GaugeMetricFamily]:
        ready = GaugeMetricFamily(
            "ferry_router_model_ready_endpoints",
            "Ready endpoints the router can send a model's requests to (0: its requests fail).",
            labels=["namespace", "model"],
        )
        for route in list(table.routes.values()):
            servers = {t.server for rule in route.rules for t in rule.targets if t.server and t.weight > 0}
            count = sum(len(table.members.get(f"{route.namespace}/{s}", {})) for s in servers)
            for model in {route.model_name, *route.lora_adapters} - {""}:
                ready.add_metric([route.namespace, model], count)
        yield ready

        families = {
            k: (f"ferry_router_endpoint_{suffix}", doc) for k, (suffix, doc) in ENDPOINT_FAMILIES.items()
        }
        gauges = {
            k: GaugeMetricFamily(name, doc, labels=ENDPOINT_LABELS) for k, (name, doc) in families.items()
        }
        age = GaugeMetricFamily(
            "ferry_router_endpoint_load_age_seconds",
            "Age of the engine load the router schedules on (-1: never measured).",
            labels=[*ENDPOINT_LABELS, "source"],
        )
        stale = GaugeMetricFamily(
            "ferry_router_endpoint_load_stale",
            "1 when the engine's load aged out and reads as unknown.",
            labels=ENDPOINT_LABELS,
        )
        counts: dict[tuple[str, str], int] = {}
        omitted, room = 0, self.max_endpoints
        now = time.monotonic()
        for endpoint in list(table.endpoints.values()):
            m = endpoint.metrics
            state = "stale" if m.stale or not m.updated else "fresh"
            counts[m.source or "none", state] = counts.get((m.source or "none", state), 0) + 1
        for key, members in list(table.members.items()):
            server = key.split("/", 1)[1]
            if room <= 0:
                omitted += len(members)
                continue
            for endpoint in list(members.values()):
                if room <= 0:
                    omitted += 1
                    continue
                room -= 1
                labels = [endpoint.pod.namespace, endpoint.pod.name, server]
                m = endpoint.metrics
                gauges["inflight"].add_metric(labels, endpoint.inflight)
                gauges["waiting"].add_metric(labels, m.waiting)
                gauges["running"].add_metric(labels, m.running)
                gauges["kv"].add_metric(labels, m.kv_cache_usage)
                gauges["ttft"].add_metric(labels, m.ttft)
                age.add_metric([*labels, m.source or "none"], now - m.updated if m.updated else -1.0)
                stale.add_metric(labels, 1.0 if m.stale or not m.updated else 0.0)
        by_load = GaugeMetricFamily(
            "ferry_router_endpoints",
            "Endpoints by where their load comes from (push, scrape, none) and whether it is fresh.",
            labels=["load_source", "load_state"],
        )
        for (source, state), count in sorted(counts.items()):
            by_load.add_metric([source, state], count)
        yield by_load
        yield GaugeMetricFamily(
            "ferry_router_endpoint_series_omitted",
            "Endpoints without per-endpoint series (beyond FERRY_ROUTER_METRICS_MAX_ENDPOINTS).",
            value=omitted,
        )
        yield from gauges.values()
        yield age
        yield stale


_COLLECTOR = TableCollector()
REGISTRY.register(_COLLECTOR)


def expose(table: RoutingTable, max_endpoints: int = DEFAULT_MAX_ENDPOINTS) -> None:
    """Report ``table`` (the process's router; a later call, e.g. in a test, replaces it)."""
    _COLLECTOR.table = table
    _COLLECTOR.max_endpoints = max_endpoints
