"""A periodic, jittered resync: re-drive every owner so that nothing depends on one event arriving.

Like controller-runtime's ``SyncPeriod``: every ``period`` seconds (± ``jitter`` of it, so replicas
and services do not resync in step) ``action`` runs — typically "queue every owner named in the
``FERRY_DESIRED`` snapshot" (:func:`~ferry_schemas.runtime.jetstream.last_subjects`). A failed
resync is logged and tried again at the next period.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

log = logging.getLogger(__name__)

RESYNCS = Counter("ferry_resyncs_total", "Periodic resyncs, by outcome.", ["service", "outcome"])


class Resync:
    def __init__(
        self, service: str, period: float, action: Callable[[], Awaitable[int]], *, jitter: float = 0.1
    ) -> None:
        self.service = service
        self.period = period
        self.jitter = jitter
        self._action = action

    def next_delay(self) -> float:
        return self.period * (1.0 + self.jitter * (2 * random.random() - 1))

    async def run(self) -> None:
        """Resync every period until cancelled (a period ≤ 0 turns resync off)."""
        if self.period <= 0:
            return
        while True:
            await asyncio.sleep(self.next_delay())
            try:
                count = await self._action()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                RESYNCS.labels(self.service, "error").inc()
                log.warning("%s: resync failed, next one in about %.0fs: %s", self.service, self.period, exc)
            else:
                RESYNCS.labels(self.service, "ok").inc()
                log.info("%s: resync queued %d owners", self.service, count)
