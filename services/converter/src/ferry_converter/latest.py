"""What FERRY_DESIRED already holds for an owner.

Read before publishing so that a redelivered older generation never overwrites a newer desired
set, and an unchanged one is not published again (a status-only change of the owner converts
to the same content).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ferry_schemas.bus import DESIRED_STREAM, MSG_ID_HEADER, DesiredSet
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredDesired:
    """The last desired set stored for the same owner (same uid)."""

    generation: int
    msg_id: str
    deleted: bool


LatestDesired = Callable[[DesiredSet], Awaitable[StoredDesired | None]]


def stored_desired(js: JetStreamContext) -> LatestDesired:
    """A ``LatestDesired`` reading the last message on the owner's desired subject."""

    async def latest(desired: DesiredSet) -> StoredDesired | None:
        try:
            raw = await js.get_last_msg(DESIRED_STREAM, desired.subject)
        except NotFoundError:
            return None
        try:
            stored = json.loads(raw.data or b"{}")
            owner = stored.get("owner") or {}
            if owner.get("uid") != desired.owner.uid:
                return None
            return StoredDesired(
                generation=int(owner.get("generation") or 0),
                msg_id=(raw.headers or {}).get(MSG_ID_HEADER, ""),
                deleted=bool(stored.get("deleted")),
            )
        except (ValueError, TypeError, AttributeError):
            log.warning("unreadable desired set on %s; publishing over it", desired.subject)
            return None

    return latest
