"""Scaling state that survives a restart or a takeover: each policy's windows and panic deadline.

Kthena keeps them in the leader's memory, so a restart or a leader change forgets the
stabilisation windows and may scale down at once. Ferry's decider saves the state after every cycle
in the leases bucket (key ``state.<lease key>``), and the next decider — the same process after a
restart, or another replica that took the lease over — continues from it. Times are wall-clock
seconds, so they mean the same in every process.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from ferry_autoscaler.leases import lease_key

log = logging.getLogger(__name__)


def state_key(plan_key: str) -> str:
    return f"state.{lease_key(plan_key)}"


class StateStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def load(self, plan_key: str) -> dict[str, Any] | None:
        try:
            entry = await self._kv.get(state_key(plan_key))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        try:
            data = json.loads(entry.value or b"{}")
        except ValueError:
            log.warning("unreadable scaling state for %s ignored", plan_key)
            return None
        return data if isinstance(data, dict) else None

    async def save(self, plan_key: str, data: dict[str, Any]) -> None:
        await self._kv.put(state_key(plan_key), json.dumps(data, separators=(",", ":")).encode())

    async def delete(self, plan_key: str) -> None:
        with contextlib.suppress(KeyNotFoundError, KeyDeletedError):
            await self._kv.delete(state_key(plan_key))
