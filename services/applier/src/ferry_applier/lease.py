"""Per-owner leases in a JetStream KV bucket: one reconcile of an owner at a time across replicas.

Replicas share the durable consumers, so a desired set and a pod event of the same ModelServing
can reach two replicas at once; two concurrent rolling-update steps could then take more than
``maxUnavailable`` groups down. A lease is ``kv.create`` of the owner's key (compare-and-set);
an expired lease (a replica died holding it) is taken over with ``kv.update(last=revision)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ferry_applier.errors import TransientError

LEASES_BUCKET = "ferry_applier_leases"
WRONG_LAST_SEQUENCE = 10071


class LeaseBusy(TransientError):
    """Another replica holds the owner's lease for longer than we may wait."""


class OwnerLeases:
    def __init__(self, kv: KeyValue, holder: str, *, ttl: float, poll: float = 0.05) -> None:
        self._kv = kv
        self.holder = holder
        self.ttl = ttl
        self.poll = poll

    @contextlib.asynccontextmanager
    async def hold(self, key: str, *, wait: float) -> AsyncIterator[None]:
        revision = await self.acquire(key, wait=wait)
        try:
            yield
        finally:
            await self.release(key, revision)

    async def acquire(self, key: str, *, wait: float) -> int:
        """The lease's KV revision once it is ours; LeaseBusy after ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            now = time.time()
            value = json.dumps({"holder": self.holder, "until": now + self.ttl}).encode()
            try:
                return int(await self._kv.create(key, value))
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:  # released meanwhile (also KeyDeletedError): try again at once
                continue
            if _expired(entry.value, now):
                try:
                    return int(await self._kv.update(key, value, last=entry.revision))
                except KeyWrongLastSequenceError:
                    continue
            if time.monotonic() >= deadline:
                raise LeaseBusy(f"the lease on {key} is held by another replica")
            await asyncio.sleep(self.poll)

    async def release(self, key: str, revision: int) -> None:
        """Give the lease back, unless someone took it over after it expired."""
        try:
            await self._kv.delete(key, last=revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            pass
        except BadRequestError as exc:  # delete reports a stale ``last`` as a plain 400 (10071)
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise


def _expired(raw: bytes | None, now: float) -> bool:
    try:
        return float(json.loads(raw or b"{}")["until"]) < now
    except (ValueError, KeyError, TypeError):
        return True  # unreadable: nobody can be holding it meaningfully
