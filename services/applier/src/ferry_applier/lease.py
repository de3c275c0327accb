"""Per-owner leases in a JetStream KV bucket: one reconcile of an owner at a time across replicas.

Replicas share the durable consumers, so a desired set and a pod event of the same ModelServing
can reach two replicas at once; two concurrent rolling-update steps could then take more than
``maxUnavailable`` groups down. A lease is ``kv.create`` of the owner's key (compare-and-set);
an expired lease (a replica died holding it) is taken over with ``kv.update(last=revision)``.

While a reconcile runs, the lease is heart-beaten every ``ttl / 3`` (a compare-and-set that moves
``until`` forward), and the same beat calls ``keepalive`` (the message's ``in_progress()``), so a
reconcile slower than the TTL keeps both its exclusivity and its message. The beat is a timer, not a
task: most reconciles end long before the first beat is due.

The release is the KV delete with ``last = <our revision>`` published *without a reply subject*: the
server stores it (or rejects it when the revision moved on) without answering, so a release is one
message, not a round trip. Nothing would be done with the answer: a delete rejected because another
replica took the expired lease over is exactly the no-op it should be, and a release that never
arrives (the connection dropped) leaves a lease that expires after ``ttl``, as a replica dying
would. This replica's next ``create`` of the key goes out on the same connection after the delete,
and NATS keeps a connection's messages in order, so it finds the key free.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_OP, KeyValue

from ferry_applier.errors import TransientError

log = logging.getLogger(__name__)

LEASES_BUCKET = "ferry_applier_leases"
EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
Keepalive = Callable[[], Awaitable[None]]


class LeaseBusy(TransientError):
    """Another replica holds the owner's lease for longer than we may wait."""


class OwnerLeases:
    """The leases in ``kv``, the bucket ``bucket`` (``nc``: the connection the releases go out on)."""

    def __init__(
        self,
        nc: Client,
        kv: KeyValue,
        holder: str,
        *,
        ttl: float,
        poll: float = 0.05,
        bucket: str = LEASES_BUCKET,
    ) -> None:
        self._nc = nc
        self._kv = kv
        self._subject_prefix = f"$KV.{bucket}."
        self.holder = holder
        self.ttl = ttl
        self.poll = poll

    @contextlib.asynccontextmanager
    async def hold(self, key: str, *, wait: float, keepalive: Keepalive | None = None) -> AsyncIterator[None]:
        """Hold ``key``'s lease for the body, renewing it (and calling ``keepalive``) every ttl/3."""
        beat = _Heartbeat(self, key, await self.acquire(key, wait=wait), keepalive)
        try:
            yield
        finally:
            # not cancelled: a renewal in flight must finish so the release names its revision
            await beat.stop()
            await self.release(key, beat.revision)

    async def renew(self, key: str, revision: int) -> int:
        """Move the lease's ``until`` forward; its new revision (KeyWrongLastSequenceError: lost)."""
        value = json.dumps({"holder": self.holder, "until": time.time() + self.ttl}).encode()
        return int(await self._kv.update(key, value, last=revision))

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
        """Give the lease back, unless someone took it over after it expired (module docstring:
        published without waiting for an answer)."""
        headers = {KV_OP: KV_DEL, EXPECTED_LAST_SUBJECT_SEQUENCE: str(revision)}
        await self._nc.publish(f"{self._subject_prefix}{key}", headers=headers)


class _Heartbeat:
    """Renews a held lease every ``ttl / 3`` from a timer until stopped."""

    def __init__(self, leases: OwnerLeases, key: str, revision: int, keepalive: Keepalive | None) -> None:
        self._leases = leases
        self._key = key
        self.revision = revision
        self._keepalive = keepalive
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(leases.ttl / 3, self._due)
        self._beating: asyncio.Task[None] | None = None

    def _due(self) -> None:
        self._timer = None
        self._beating = self._loop.create_task(self._beat())

    async def _beat(self) -> None:
        try:
            self.revision = await self._leases.renew(self._key, self.revision)
        except KeyWrongLastSequenceError:
            log.error("lost the lease on %s: another replica took it over", self._key)
            return
        except Exception as exc:  # NATS briefly away: keep trying while the lease lasts
            log.warning("could not renew the lease on %s: %s", self._key, exc)
        if self._keepalive is not None:
            try:
                await self._keepalive()
            except Exception as exc:
                log.warning("keepalive for %s failed: %s", self._key, exc)
        self._timer = self._loop.call_later(self._leases.ttl / 3, self._due)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._beating is not None:
            await self._beating
            if self._timer is not None:  # the beat that just finished scheduled the next one
                self._timer.cancel()
                self._timer = None


def _expired(raw: bytes | None, now: float) -> bool:
    try:
        return float(json.loads(raw or b"{}")["until"]) < now
    except (ValueError, KeyError, TypeError):
        return True  # unreadable: nobody can be holding it meaningfully
