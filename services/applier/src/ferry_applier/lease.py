"""Per-owner leases in a JetStream KV bucket: one reconcile of an owner at a time across replicas.

Replicas share the durable consumers, so a desired set and a pod event of the same ModelServing
can reach two replicas at once; two concurrent rolling-update steps could then take more than
``maxUnavailable`` groups down. A lease is ``kv.create`` of the owner's key (compare-and-set);
an expired lease (a replica died holding it) is taken over with ``kv.update(last=revision)``.

While a reconcile runs, the lease is heart-beaten every ``ttl / 3`` (a compare-and-set that moves
``until`` forward), and the same beat calls ``keepalive`` (the message's ``in_progress()``), so a
reconcile slower than the TTL keeps both its exclusivity and its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ferry_applier.errors import TransientError

log = logging.getLogger(__name__)

LEASES_BUCKET = "ferry_applier_leases"
WRONG_LAST_SEQUENCE = 10071
Keepalive = Callable[[], Awaitable[None]]


class LeaseBusy(TransientError):
    """Another replica holds the owner's lease for longer than we may wait."""


class OwnerLeases:
    def __init__(self, kv: KeyValue, holder: str, *, ttl: float, poll: float = 0.05) -> None:
        self._kv = kv
        self.holder = holder
        self.ttl = ttl
        self.poll = poll

    @contextlib.asynccontextmanager
    async def hold(self, key: str, *, wait: float, keepalive: Keepalive | None = None) -> AsyncIterator[None]:
        """Hold ``key``'s lease for the body, renewing it (and calling ``keepalive``) every ttl/3."""
        revision = [await self.acquire(key, wait=wait)]
        done = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(key, revision, done, keepalive))
        try:
            yield
        finally:
            done.set()  # not cancel: a renewal in flight must finish so the release names its revision
            await beat
            await self.release(key, revision[0])

    async def _heartbeat(
        self, key: str, revision: list[int], done: asyncio.Event, keepalive: Keepalive | None
    ) -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.ttl / 3)
                return
            value = json.dumps({"holder": self.holder, "until": time.time() + self.ttl}).encode()
            try:
                revision[0] = int(await self._kv.update(key, value, last=revision[0]))
            except KeyWrongLastSequenceError:
                log.error("lost the lease on %s: another replica took it over", key)
                return
            except Exception as exc:  # NATS briefly away: keep trying while the lease lasts
                log.warning("could not renew the lease on %s: %s", key, exc)
            if keepalive is not None:
                try:
                    await keepalive()
                except Exception as exc:
                    log.warning("keepalive for %s failed: %s", key, exc)

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
