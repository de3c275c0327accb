"""One decider per policy across replicas: a renewable claim in a JetStream KV bucket.

Every replica reads every policy; before a cycle a replica *claims* the policy's key: it creates
the key (compare-and-set on absence), renews its own claim (``update`` with the last revision),
or takes over a claim whose holder stopped renewing (expired ``until``). Claims spread the policies
over the replicas and survive nothing but their TTL: a replica that dies loses its policies to the
others after at most ``ttl`` seconds. Scaling state (windows, panic) is per process, as in Kthena,
so a takeover starts with fresh windows.
"""

from __future__ import annotations

import json
import logging
import time

from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

LEASES_BUCKET = "ferry_autoscaler_leases"
WRONG_LAST_SEQUENCE = 10071


def lease_key(plan_key: str) -> str:
    """``resource/ns/name`` → ``resource=ns=name`` (names may hold dots; ``=`` is a valid KV key byte)."""
    return plan_key.replace("/", "=")


class DeciderLeases:
    def __init__(self, kv: KeyValue, holder: str, ttl: float) -> None:
        self._kv = kv
        self.holder = holder
        self.ttl = ttl
        self._revisions: dict[str, int] = {}

    @property
    def held(self) -> int:
        return len(self._revisions)

    def _value(self) -> bytes:
        return json.dumps({"holder": self.holder, "until": time.time() + self.ttl}).encode()

    async def claim(self, plan_key: str) -> bool:
        """Whether this replica decides for ``plan_key`` now (claiming or renewing it)."""
        key = lease_key(plan_key)
        try:
            mine = self._revisions.get(key)
            if mine is not None:
                try:
                    self._revisions[key] = int(await self._kv.update(key, self._value(), last=mine))
                    return True
                except (KeyWrongLastSequenceError, BadRequestError):
                    del self._revisions[key]  # someone took it over: read who
            try:
                self._revisions[key] = int(await self._kv.create(key, self._value()))
                return True
            except (KeyWrongLastSequenceError, BadRequestError):
                pass
            entry = await self._kv.get(key)
            claim = json.loads(entry.value or b"{}")
            if claim.get("holder") == self.holder or float(claim.get("until") or 0) < time.time():
                self._revisions[key] = int(await self._kv.update(key, self._value(), last=entry.revision))
                return True
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            return False  # a race with another replica: it decides this cycle
        except BadRequestError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            return False
        return False

    def holds(self, plan_key: str) -> bool:
        return lease_key(plan_key) in self._revisions

    async def release(self, plan_key: str) -> None:
        await self._release(lease_key(plan_key))

    async def _release(self, key: str) -> None:
        revision = self._revisions.pop(key, None)
        if revision is None:
            return
        try:
            await self._kv.delete(key, last=revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError, BadRequestError) as exc:
            log.debug("lease %s not released: %r", key, exc)

    async def release_all(self) -> None:
        for key in list(self._revisions):
            await self._release(key)
