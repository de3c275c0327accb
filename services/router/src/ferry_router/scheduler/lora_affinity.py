"""``lora-affinity``: keep endpoints whose ``/v1/models`` lists the model the engine will be asked for.

Kthena compares the *request* name, which filters out every endpoint when a route renames the
model; Ferry compares the upstream name (the LoRA name for LoRA requests, ``spec.model`` otherwise).
"""

from __future__ import annotations

from typing import Any

from ferry_router.scheduler.framework import SchedulingContext
from ferry_router.state.table import Endpoint


class LoraAffinity:
    name = "lora-affinity"

    def __init__(self, args: dict[str, Any] | None = None) -> None:
        del args

    def filter(self, ctx: SchedulingContext, endpoints: list[Endpoint]) -> list[Endpoint]:
        wanted = ctx.upstream_model
        return [e for e in endpoints if e.metrics.models is not None and wanted in e.metrics.models]
