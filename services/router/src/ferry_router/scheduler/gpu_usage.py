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
        return [float(int((1.0 - min(max(e.metrics.kv_cache_usage, 0.0), 1.0)) * 100)) for e in endpoints]
