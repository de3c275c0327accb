"""``random``: a uniform integer in [0, 100] per endpoint."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ferry_router.scheduler.framework import SchedulingContext
from ferry_router.state.table import Endpoint


class RandomScore:
    name = "random"

    def __init__(self, args: dict[str, Any] | None = None, rng: random.Random | None = None) -> None:
        del args
        self._rng = rng or random.Random()

    def score(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> list[float]:
        return [float(self._rng.randint(0, 100)) for _ in endpoints]
