"""``gpu-usage``: prefer endpoints with free KV cache: ``int((1 - usage)*100)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ferry_router.scheduler.framework import SchedulingContext
from ferry_router.state.table import Endpoint


class GPUUsage:
    name = "gpu-usage"

    def __init__(self, args: dict[str, Any] | None = None) -> None:
        del args

    def score(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> list[float]:
        usages = [e.metrics.kv_cache_usage for e in endpoints]
        return [float(int((1.0 - (0.0 if u < 0.0 else 1.0 if u > 1.0 else u)) * 100)) for u in usages]
