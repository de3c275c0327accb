"""Scale from zero: hold a request for a model server with no ready endpoint until one is Ready.

A request whose ModelServer has no ready endpoint (the autoscaler scaled it to zero, or it is still
starting) is *held* instead of refused at once: it waits in a bounded per-server queue (at most
``max_waiting`` requests, each at most ``timeout`` seconds) while the router publishes a
:class:`~ferry_schemas.autoscaling.Demand` on ``ferry.demand.<ns>.<server>`` (again every
``republish`` seconds while requests wait, so a demand lost during an autoscaler failover is
repeated). The autoscaler scales the target 0 → 1 at once; the held request proceeds the moment an
endpoint appears in the routing table (woken by the table's endpoint listener, not by polling).
When the wait runs out, or the queue is full, the answer is 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

from ferry_schemas.autoscaling import Demand, demand_subject
from prometheus_client import Counter, Gauge, Histogram

from ferry_router import errors
from ferry_router.errors import RouterError
from ferry_router.state.resources import Server
from ferry_router.state.table import Endpoint, RoutingTable

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]

HELD = Gauge("ferry_router_cold_start_waiting", "Requests held for a model server with no ready endpoint.")
HOLD_SECONDS = Histogram(
    "ferry_router_cold_start_hold_seconds",
    "How long a held request waited for a ready endpoint, by outcome.",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
DEMANDS = Counter("ferry_router_demand_published_total", "Demand messages published for held requests.")


def cold_start_unavailable(key: str, detail: str, retry_after: float) -> RouterError:
    return errors.no_endpoints(key, detail, retry_after)


class ColdStartHold:
    def __init__(
        self,
        table: RoutingTable,
        publish: Publish | None,
        *,
        max_waiting: int,
        timeout: float,
        republish: float = 2.0,
    ) -> None:
        self._table = table
        self._publish = publish
        self.max_waiting = max_waiting
        self.timeout = timeout
        self.republish = republish
        self._waiting: dict[str, int] = defaultdict(int)
        self._changed = asyncio.Event()
        table.endpoint_added.append(self._on_endpoint)

    def _on_endpoint(self, _: Endpoint) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def ready(self, server: Server, pd: bool | None = None) -> bool:
        """Whether ``server`` has an endpoint to send to (``pd`` overrides whether it is served
        prefill/decode: an InferencePool is only when its pods carry those roles)."""
        if server.pd_group is not None if pd is None else pd:
            sets = self._table.pd.get(server.key)
            return sets is not None and bool(sets.decode)
        return bool(self._table.server_endpoints(server.key))

    async def hold(self, server: Server, model: str) -> None:
        """Return once ``server`` has a ready endpoint; raise a 503 with ``Retry-After`` otherwise."""
        key = server.key
        if self.timeout <= 0 or self.max_waiting <= 0:
            raise cold_start_unavailable(key, "holding requests is disabled", 1)
        if self._waiting[key] >= self.max_waiting:
            raise cold_start_unavailable(
                key, f"{self.max_waiting} requests already wait for it", self.timeout
            )
        self._waiting[key] += 1
        HELD.inc()
        started = time.monotonic()
        deadline = started + self.timeout
        next_demand = started
        outcome = "timeout"
        try:
            while not self.ready(server):
                now = time.monotonic()
                if now >= deadline:
                    raise cold_start_unavailable(
                        key, f"none became ready within {self.timeout:g}s", self.timeout
                    )
                if now >= next_demand:
                    await self._demand(server, model)
                    next_demand = now + self.republish
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=max(0.0, min(deadline, next_demand) - now))
            outcome = "ready"
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]
            HELD.dec()
            HOLD_SECONDS.labels(outcome).observe(time.monotonic() - started)

    async def _demand(self, server: Server, model: str) -> None:
        if self._publish is None:
            return
        demand = Demand(
            namespace=server.namespace,
            server=server.name,
            model=model,
            selector=dict(server.match_labels),
            waiting=self._waiting[server.key],
        )
        try:
            await self._publish(demand_subject(server.namespace, server.name), demand.to_bytes())
            DEMANDS.inc()
        except Exception as exc:  # NATS down: keep waiting, the next republish may get through
            log.warning("demand for %s not published: %s", server.key, exc)
