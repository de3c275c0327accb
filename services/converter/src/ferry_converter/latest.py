"""What FERRY_DESIRED already holds for an owner (so an old redelivery never overwrites a newer set)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from ferry_schemas.bus import DESIRED_STREAM, DesiredSet
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)

LatestGeneration = Callable[[DesiredSet], Awaitable[int | None]]
"""The owner generation of the desired set already stored for the same owner (uid), if any."""


def stored_generation(js: JetStreamContext) -> LatestGeneration:
    """A ``LatestGeneration`` reading the last message on the owner's desired subject."""

    async def latest(desired: DesiredSet) -> int | None:
        try:
            raw = await js.get_last_msg(DESIRED_STREAM, desired.subject)
        except NotFoundError:
            return None
        try:
            stored = json.loads(raw.data or b"{}")
            owner = stored.get("owner") or {}
            if owner.get("uid") != desired.owner.uid or stored.get("deleted"):
                return None
            return int(owner.get("generation") or 0)
        except (ValueError, TypeError):
            log.warning("unreadable desired set on %s; publishing over it", desired.subject)
            return None

    return latest
