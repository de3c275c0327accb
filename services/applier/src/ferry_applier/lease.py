"""The previous release's per-owner lease (``ferry_applier_leases``), taken beside the owner record.

An owner is now held by its record (``generations.py``: the lease and the generation guard in one
entry, one write per reconcile). Replicas of the release before that know only this bucket and ignore
the record's holder, so while one of them may run — until the live replicas are known, and while one
lacks the ``record-lease`` membership mark — the applier takes this lease first as well, and the two
releases exclude each other here (the applier README, "Rolling upgrades").

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

from ferry_applier.generations import EXPECTED_LAST_SUBJECT_SEQUENCE, Heartbeat, LeaseBusy

log = logging.getLogger(__name__)

LEASES_BUCKET = "ferry_applier_leases"
Keepalive = Callable[[], Awaitable[None]]


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
        revision = await self.acquire(key, wait=wait)

        async def renew() -> bool:
            nonlocal revision
            try:
                revision = await self.renew(key, revision)
            except KeyWrongLastSequenceError:
                log.error("lost the lease on %s: another replica took it over", key)
                return False
            except Exception as exc:  # NATS briefly away: keep trying while the lease lasts
                log.warning("could not renew the lease on %s: %s", key, exc)
            if keepalive is not None:
                try:
                    await keepalive()
                except Exception as exc:
                    log.warning("keepalive for %s failed: %s", key, exc)
            return True

        beat = Heartbeat(self.ttl / 3, renew)
        try:
            yield
        finally:
            # not cancelled: a renewal in flight must finish so the release names its revision
            await beat.stop()
            await self.release(key, revision)

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


def _expired(raw: bytes | None, now: float) -> bool:
    try:
        return float(json.loads(raw or b"{}")["until"]) < now
    except (ValueError, KeyError, TypeError):
        return True  # unreadable: nobody can be holding it meaningfully
